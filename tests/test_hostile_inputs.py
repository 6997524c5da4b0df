"""What a hostile file or a careless user can do (issue 18): named one-line errors, exit 2; no
code run from files; one process per run folder; files replaced, never written through symlinks."""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from stackgan.checkpoint import CheckpointError, load_latest, write_checkpoint
from stackgan.cli import main

needs_non_root = pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                                    reason="root ignores file permissions")


def run_cli(capsys, *argv) -> tuple[int, str]:
    """``stackgan ARGV`` in this process: exit code and the last line written to stderr."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, (err.strip().splitlines() or [""])[-1]


def test_device_flag_is_used_or_refused(tiny_model, tmp_path, capsys):
    code, line = run_cli(capsys, "generate", tiny_model, "x", "--out", tmp_path, "--device", "bogus:99")
    assert code == 2 and line == ("stackgan generate: error: --device 'bogus:99': not a device name "
                                  "(use cpu, cuda, cuda:1, mps ...)")
    if not torch.cuda.is_available():
        code, line = run_cli(capsys, "generate", tiny_model, "x", "--out", tmp_path, "--device", "cuda")
        assert code == 2 and "--device cuda: no CUDA GPU is available" in line
    assert not list(tmp_path.iterdir())  # refused before anything was drawn
    assert run_cli(capsys, "generate", tiny_model, "x", "--out", tmp_path, "--device", "cpu")[0] == 0


def _with_arg(model, name: str, value) -> dict:
    """The model folder's config.json with one Stage-I constructor argument changed."""
    meta = json.loads((model / "config.json").read_text())
    meta["generator"]["stage1"][name] = value
    return meta


def test_a_folder_or_broken_file_where_a_file_belongs_gets_one_line(tiny_model, tmp_path, capsys):
    folder = tmp_path / "folder"
    folder.mkdir()
    cases = [
        (("generate", tiny_model, "--captions-file", folder), f"{folder}: Is a directory"),
        (("train", "--stage", "1", "--data", folder, "--out", tmp_path / "r", "--config", folder, "--dry-run"),
         f"{folder}: Is a directory"),
        (("serve", tiny_model, "--examples", folder), f"{folder}: Is a directory"),
    ]
    for name, mutate, message in [
        ("empty", lambda d: (d / "model.safetensors").write_bytes(b""), "model.safetensors: not a readable safetensors"),
        ("cut", lambda d: (d / "model.safetensors").write_bytes((tiny_model / "model.safetensors").read_bytes()[:999]),
         "model.safetensors: not a readable safetensors"),
        ("noversion", lambda d: (d / "config.json").write_text('{"stage": 2}'),
         'config.json: not a StackGAN model file (its "format_version" is None, not 1 or 2'),
        ("newer", lambda d: (d / "config.json").write_text('{"format_version": 3}'),
         'config.json: format version 3 is newer than this stackgan reads (1 to 2); update stackgan'),
        ("badconfig", lambda d: (d / "config.json").write_text('{"format_version": 1, "stage": 2, "config": 5}'),
         'config.json: not a StackGAN model file of format version 1'),
        ("stage3", lambda d: (d / "config.json").write_text('{"format_version": 1, "stage": 3, "config": {}}'),
         'config.json: "stage" is 3; a StackGAN model has stage 1 or 2'),
        ("nogenerator", lambda d: (d / "config.json").write_text(
            json.dumps({**json.loads((tiny_model / "config.json").read_text()), "generator": {"stage3": {}}})),
         'config.json: not a StackGAN model file of format version 2'),
        ("badwidth", lambda d: (d / "config.json").write_text(json.dumps(_with_arg(tiny_model, "ngf", "wide"))),
         'config.json: generator argument(s) stage1.ngf of the wrong type'),
        ("oddwidth", lambda d: (d / "config.json").write_text(json.dumps(_with_arg(tiny_model, "ngf", 7))),
         'config.json: "generator" does not describe a StackGAN generator (Stage-I ngf must be even'),
    ]:
        model = shutil.copytree(tiny_model, tmp_path / name)
        mutate(model)
        cases.append((("generate", model, "x", "--out", tmp_path / "out"), f"{model}/{message}"))
    weights, images = tmp_path / "weights.pth", tmp_path / "images"
    weights.write_text("not a torch file")
    images.mkdir()
    from PIL import Image
    Image.new("RGB", (8, 8)).save(images / "a.png")
    cases.append((("evaluate", "--fake", images, "--real", images, "--inception-weights", weights),
                  f"{weights}: not Inception weights that load safely"))
    for argv, message in cases:
        code, line = run_cli(capsys, *argv)
        assert code == 2 and line.startswith(f"stackgan {argv[0]}: error: ") and message in line, (argv, line)


@needs_non_root
def test_read_only_folders_get_one_line(tiny_shapes, tmp_path, capsys):
    out = tmp_path / "readonly-run"
    out.mkdir()
    data = shutil.copytree(tiny_shapes, tmp_path / "readonly-data", ignore=shutil.ignore_patterns(".stackgan-cache"))
    for d in (out, data):
        d.chmod(0o555)
    try:
        code, line = run_cli(capsys, "train", "--stage", "1", "--data", tiny_shapes, "--out", out, "--max-steps", "1",
                             "--no-progress", "--device", "cpu")
        assert code == 2 and line.startswith(f"stackgan train: error: {out}/") and "Permission denied" in line
        code, line = run_cli(capsys, "train", "--stage", "1", "--data", data, "--out", tmp_path / "run",
                             "--max-steps", "1", "--no-progress", "--device", "cpu")
        assert code == 2 and line.startswith(f"stackgan train: error: {data}/") and "Permission denied" in line
    finally:
        for d in (out, data):
            d.chmod(0o755)


def test_disk_full_during_a_checkpoint_names_the_step_and_file(tmp_path, monkeypatch):
    write_checkpoint(tmp_path, {"step": 5, "w": torch.ones(3)}, keep=3)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*.pt")}

    def full_disk(obj, f, *args, **kwargs):  # what torch's zip writer raises on ENOSPC
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4736 vs 4622")
    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError, match=rf"could not write the step-7 checkpoint {tmp_path}/state.pt: "
                                              r"\[enforce fail.*The previous checkpoint files are unchanged"):
        write_checkpoint(tmp_path, {"step": 7, "w": torch.zeros(3)}, keep=3)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.pt")} == before  # and no temp files left
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_a_corrupt_newest_state_falls_back_to_its_own_copy_and_says_so(tmp_path):
    for step in (5, 10):
        write_checkpoint(tmp_path, {"step": step, "w": torch.full((64,), float(step))}, keep=3)
    with open(tmp_path / "state.pt", "r+b") as f:  # damaged in place, as a bad disk would
        f.truncate(100)
    said = []
    state, path = load_latest(tmp_path, on_skip=said.append)
    assert state["step"] == 10 and path == tmp_path / "checkpoints" / "step-00000010.pt"
    assert len(said) == 1 and f"{tmp_path}/state.pt: not a readable StackGAN training state" in said[0]
    assert said[0].endswith(f"resuming from {path} (step 10)")


def test_huge_n_per_caption_is_limited_and_images_are_written_as_made(tiny_model, tmp_path, capsys, monkeypatch):
    code, line = run_cli(capsys, "generate", tiny_model, "x", "--out", tmp_path, "--n-per-caption", "1000000")
    assert code == 2 and "= 1,000,000 images; at most 100,000 per command" in line
    from stackgan.pipeline import StackGANPipeline
    calls, generate = [], StackGANPipeline.generate

    def watched(self, texts=None, **kwargs):  # how many images each call draws, how many files exist before it
        calls.append((len(kwargs["embeddings"]), len(list(tmp_path.glob("*.png")))))
        return generate(self, texts, **kwargs)
    monkeypatch.setattr(StackGANPipeline, "generate", watched)
    assert run_cli(capsys, "generate", tiny_model, "a", "b", "--out", tmp_path, "--n-per-caption", "3",
                   "--batch-size", "2", "--stage", "1")[0] == 0
    assert calls == [(2, 0), (2, 2), (2, 4)] and len(list(tmp_path.glob("*.png"))) == 6


def test_a_planted_symlink_is_replaced_not_written_through(tiny_shapes, tiny_config, tmp_path):
    from stackgan.training import train
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    (tmp_path / "run" / "stage1").mkdir(parents=True)
    (tmp_path / "run" / "stage1" / "config.yaml").symlink_to(outside)
    train(tiny_config, tiny_shapes, tmp_path / "run", 1, max_steps=1, progress=False, device="cpu")
    assert outside.read_text() == "precious"
    written = tmp_path / "run" / "stage1" / "config.yaml"
    assert not written.is_symlink() and "stage1:" in written.read_text()


HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from stackgan.runlock import run_lock
    with run_lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(600)
""")


def test_one_training_process_per_run_folder(tiny_shapes, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        second = subprocess.run([sys.executable, "-m", "stackgan", "train", "--stage", "1", "--data", str(tiny_shapes),
                                 "--out", str(run), "--max-steps", "1", "--no-progress", "--device", "cpu"],
                                capture_output=True, text=True, env=env)
        assert second.returncode == 2, second.stderr
        assert second.stderr.strip().splitlines()[-1].startswith(
            f"stackgan train: error: {run} is in use by process {holder.pid} ")
        assert not (run / "stage1").exists()  # it wrote nothing
    finally:
        holder.kill()  # as kill -9: the kernel drops the lock with the process
        holder.wait()
    from stackgan.runlock import run_lock
    with run_lock(run):  # a dead holder's lock never blocks
        assert (run / ".stackgan.lock").read_text().strip() == str(os.getpid())
