#!/usr/bin/env bash
# The flowers GPU lease, in two calls (each carries one pack from pack.py; see its docstring):
#   bash experiments/gpu_flowers/run.sh images    # carry .gpu/img1: the first part of the photos
#   bash experiments/gpu_flowers/run.sh train     # carry .gpu/img2 .gpu/emb: the rest, the captions,
#                                                 #   both stages, export
# Settings (environment): WORK (default /tmp/fl), DEVICE (cuda), M1 / M2 (minutes of Stage I / II),
# NGF1 NDF1 NGF2 NDF2 (widths), B1 B2 (batch sizes), PRECISION (bf16), EXTRA (more train options),
# OUT (what comes back).
set -euo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PY:-python3}
WORK=${WORK:-/tmp/fl}
OUT=${OUT:-$WORK/out}
mkdir -p "$OUT"
case "$1" in
images)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
    $PY -c "import torch, PIL; from PIL import features; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'PIL', PIL.__version__, 'webp', features.check('webp'))"
    mkdir -p "$WORK/src" && cp -r .gpu/img1/. "$WORK/src"
    ls "$WORK/src/images" | wc -l
    ;;
train)
    mkdir -p "$WORK/src" && cp -r .gpu/img2/. "$WORK/src"
    $PY experiments/gpu_flowers/pack.py unpack-images --pack "$WORK/src" --out "$WORK/data"
    $PY experiments/gpu_flowers/pack.py unpack-text --pack .gpu/emb --data "$WORK/data"
    common=(--data "$WORK/data" --out "$WORK/run" --preset fast-fusion-contrast --device "${DEVICE:-cuda}"
            --set data.augment=crop_flip --set precision="${PRECISION:-bf16}" --max-steps 0 --no-progress
            --set model.ngf1="${NGF1:-64}" --set model.ndf1="${NDF1:-64}"
            --set model.ngf2="${NGF2:-64}" --set model.ndf2="${NDF2:-64}" ${EXTRA:-})
    $PY -m stackgan train --stage 1 "${common[@]}" --batch-size "${B1:-64}" --minutes "${M1:-3}" \
        --set stage1.sample_every=1000 --set stage1.checkpoint_every=2000 2>&1 | tee "$OUT/train.log"
    $PY -m stackgan train --stage 2 "${common[@]}" --batch-size "${B2:-32}" --minutes "${M2:-3.5}" \
        --set stage2.sample_every=500 --set stage2.checkpoint_every=1000 2>&1 | tee -a "$OUT/train.log"
    $PY -m stackgan export "$WORK/run" --out "$WORK/model" --half
    ls -la "$WORK/model"
    # files come back at most 16 MiB each: cut the weights into pieces (cat them together again)
    (cd "$WORK/model" && tar cf - . | split -b 15m - "$OUT/model.tar.part-")
    for s in 1 2; do
        last=$(ls "$WORK/run/stage$s/samples/"*.png | sort | tail -1)
        cp "$last" "$OUT/stage$s-$(basename "$last")"
    done
    tar cf "$OUT/logs.tar" -C "$WORK/run" stage1/tb stage2/tb stage1/config.yaml stage2/config.yaml
    ls -la "$OUT"
    ;;
*)
    echo "usage: $0 images|train" >&2; exit 2 ;;
esac
