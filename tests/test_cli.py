import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

TINY_SET = ["--set", "model.ngf1=8", "--set", "model.ndf1=8", "--set", "model.ngf2=8", "--set", "model.ndf2=8",
            "--set", "model.res_blocks=1", "--set", "stage1.log_every=1", "--set", "stage2.log_every=1",
            "--set", "data.matcher_steps=5"]


def stackgan(*args, check=True, cwd=None):
    proc = subprocess.run([sys.executable, "-m", "stackgan", *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=cwd)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_help_shows_examples():
    for cmd in ("train", "generate", "evaluate", "export", "demo"):
        out = stackgan(cmd, "--help").stdout
        assert "examples:" in out and f"stackgan {cmd}" in out


def test_bad_override_is_named():
    proc = stackgan("train", "--stage", "1", "--data", "x", "--out", "y", "--dry-run",
                    "--set", "stage1.batch_size=-4", check=False)
    assert proc.returncode == 2 and "stage1.batch_size" in proc.stderr
    proc = stackgan("train", "--stage", "1", "--data", "x", "--out", "y", "--dry-run",
                    "--set", "model.wdith=3", check=False)
    assert proc.returncode == 2 and "wdith" in proc.stderr and "ngf1" in proc.stderr


@pytest.fixture(scope="module")
def cli_run(tiny_shapes, tmp_path_factory):
    """Both stages trained through the command line (3 and 2 steps), shared by the tests below."""
    run = tmp_path_factory.mktemp("cli") / "run"
    stackgan("train", "--stage", "1", "--data", tiny_shapes, "--out", run, "--max-steps", 3, "--batch-size", 8,
             "--no-progress", *TINY_SET)
    stackgan("train", "--stage", "2", "--data", tiny_shapes, "--out", run, "--max-steps", 2, "--batch-size", 4,
             "--no-progress", *TINY_SET)
    return run


def in_process(*args, capsys) -> str:
    """``stackgan ARGS`` run by this process's ``cli.main`` (no new interpreter to start); its stdout."""
    from stackgan.cli import main

    capsys.readouterr()
    assert main([str(a) for a in args]) == 0, capsys.readouterr().err[-3000:]
    return capsys.readouterr().out


def test_train_both_stages_and_generate(cli_run, tiny_shapes, tmp_path, capsys, monkeypatch):
    run = cli_run
    proc = stackgan("train", "--stage", "2", "--data", tiny_shapes, "--out", tmp_path / "other",
                    "--max-steps", 1, check=False)
    assert proc.returncode == 2 and "Stage I" in proc.stderr
    captions = tmp_path / "captions.txt"
    captions.write_text("a red circle\n\n  a large green striped square at the bottom on a white background \n")
    out = tmp_path / "out"
    stackgan("generate", run, "--captions-file", captions, "--out", out, "--seed", 3, "--sheet", tmp_path / "s.png")
    files = sorted(p.name for p in out.iterdir())
    assert files == ["00000.png", "00001.png"]
    assert Image.open(out / "00001.png").size == (256, 256)
    assert Image.open(tmp_path / "s.png").size[0] > 512
    # same seed, one caption alone: the same image as in the two-caption run
    in_process("generate", run, "a large green striped square at the bottom on a white background",
               "--out", tmp_path / "one", "--seed", 4, capsys=capsys)
    assert (tmp_path / "one" / "00000.png").read_bytes() == (out / "00001.png").read_bytes()
    in_process("generate", run, "a red circle", "--stage", "1", "--n-per-caption", 3, "--out", tmp_path / "s1",
               capsys=capsys)
    assert len(list((tmp_path / "s1").iterdir())) == 3
    assert Image.open(tmp_path / "s1" / "00002.png").size == (64, 64)

    # export with float16 weights: half the file, the same pictures to within a few levels
    full, half = tmp_path / "full", tmp_path / "half"
    in_process("export", run, "--out", full, capsys=capsys)
    assert "float16" in in_process("export", run, "--out", half, "--half", capsys=capsys)
    size = lambda d: (d / "model.safetensors").stat().st_size  # noqa: E731
    assert size(half) < 0.6 * size(full)
    monkeypatch.chdir(tmp_path)
    in_process("generate", half, "a large green striped square at the bottom on a white background", "--seed", 4,
               capsys=capsys)  # --out defaults to ./out
    a = np.asarray(Image.open(tmp_path / "out" / "00000.png"), dtype=np.int16)
    b = np.asarray(Image.open(tmp_path / "one" / "00000.png"), dtype=np.int16)
    assert np.abs(a - b).mean() < 2.0


def test_evaluate_reports_both_stages(cli_run, tiny_shapes):
    import json

    from stackgan.evaluation.checker import train_checker

    run = cli_run
    train_checker(tiny_shapes, steps=3, batch_size=8, progress=False, device="cpu")  # cached for evaluate
    out = stackgan("evaluate", run, "--data", tiny_shapes, "--num-samples", 8, "--device", "cpu").stdout
    assert "Stage 1" in out and "Stage 2" in out
    report = json.loads((run / "eval.json").read_text())
    assert report["num_samples"] == 8
    for stage in ("stage1", "stage2"):
        assert set(report[stage]) >= {"shape", "color", "size", "texture", "position", "background", "all"}
        assert all(0.0 <= report[stage][k] <= 1.0 for k in ("shape", "color", "all", "shape_outline"))
        assert 0.0 <= report[stage]["shape_overlap"] <= 1.0
        reads = report[stage]["shape_reads"]  # each caption word's reads sum to 1
        assert all(sum(row.values()) == pytest.approx(1.0) for row in reads.values())
        textures = report[stage]["texture_reads"]  # the checker's reads per texture word, also summing to 1
        assert set(textures) <= {"solid", "striped", "dotted"} and textures
        assert all(sum(row.values()) == pytest.approx(1.0) for row in textures.values())
    assert report["outline_on_real_images"] >= 0.75  # the outline judge, fitted on the 64 train images
    assert report["overlap_on_real_images"] == 1.0  # the overlap judge fits nothing
    assert "| Stage 2 |" in (run / "eval.md").read_text() and "shape_outline" in (run / "eval.md").read_text()
    assert "caption says" in (run / "eval.md").read_text() and "shape_overlap" in (run / "eval.md").read_text()
    assert "What the checker reads for each texture word" in (run / "eval.md").read_text()


def test_captions_are_read_one_way_for_every_command(tmp_path):
    from stackgan.errors import DataError
    from stackgan.text.captions import gather_captions, read_captions_file
    path = tmp_path / "caps.txt"
    path.write_text("a red  circle\n\n   \n\ta blue\tstar  \r\nlast line")
    assert read_captions_file(path) == ["a red circle", "a blue star", "last line"]
    assert gather_captions(["  a big  square", "", " "], path) == ["a big square", "a red circle", "a blue star",
                                                                   "last line"]
    path.write_bytes(b"\xff\xfe bad")
    with pytest.raises(DataError, match="not UTF-8 text"):
        read_captions_file(path)


def test_evaluate_chooses_metrics_and_tables_checkpoints_side_by_side(tiny_shapes):
    from stackgan.errors import UsageError
    from stackgan.evaluation.metrics import (checkpoint_metrics, folder_metrics, parse_metrics,
                                             side_by_side_markdown)
    assert parse_metrics(None) is None and parse_metrics("fid, kid") == ["fid", "kid"]
    with pytest.raises(UsageError, match=r"--metrics: unknown \['fidd'\]"):
        parse_metrics("fid,fidd")
    assert checkpoint_metrics(None, tiny_shapes) == ["attributes"]  # Shapes data
    assert checkpoint_metrics(["fid"], tiny_shapes) == ["attributes", "fid"]
    assert checkpoint_metrics(["dcheck"], tiny_shapes) == ["dcheck"]
    assert folder_metrics(None) == ["fid", "kid"]
    with pytest.raises(UsageError, match="fid, kid and is only"):
        folder_metrics(["rprec"])
    table = side_by_side_markdown({"a": {"stage1": {"fid": 12.345678, "kid": 0.5}},
                                   "b": {"stage1": {"fid": 3.0}, "stage2": {"is": 2.0}}})
    assert table.splitlines() == ["| checkpoint | stage | fid | is | kid |", "|---|---|---|---|---|",
                                  "| a | stage1 | 12.35 |  | 0.5 |", "| b | stage1 | 3 |  |  |",
                                  "| b | stage2 |  | 2 |  |"]
