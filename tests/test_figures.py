"""`stackgan viz`: every sheet from a tiny checkpoint, with the expected size and layout."""
import pytest
from PIL import Image

from conftest import TINY
from stackgan.cli import main
from stackgan.config import apply_overrides, get_preset
from stackgan.training import train

PAD, LABEL_W, TEXT_H = 4, 70, 14 * 4 + 6  # stackgan.viz.caption_sheet's layout


def sheet_size(columns, rows, cell, labels=True):
    return (LABEL_W * labels + columns * (cell + PAD) + PAD, rows * (cell + PAD) + TEXT_H + PAD)


@pytest.fixture(scope="module")
def run(tiny_shapes, tmp_path_factory):
    out = tmp_path_factory.mktemp("viz") / "run"
    cfg = apply_overrides(get_preset("shapes-cpu"), TINY + ["stage1.max_steps=3", "stage2.max_steps=2"])
    train(cfg, tiny_shapes, out, 1, progress=False)
    train(cfg, tiny_shapes, out, 2, progress=False)
    return out


CAPS = ["a large red circle on a white background", "a small blue star in the top left"]


@pytest.mark.parametrize("kind,extra,size", [
    ("ca", ["--n", "3"], sheet_size(2, 3, 256)),  # sentences across, CA draws down, Stage II cells
    ("z", ["--n", "2", "--stage", "1"], sheet_size(2, 2, 128)),  # Stage I cells
    ("stages", [], sheet_size(2, 2, 256)),  # Stage I above Stage II
])
def test_caption_sheets(run, tmp_path, kind, extra, size):
    out = tmp_path / f"{kind}.png"
    assert main(["viz", kind, str(run), *CAPS, "--out", str(out), *extra]) == 0
    with Image.open(out) as im:
        assert im.size == size


def test_interpolation_and_nearest_and_curves(run, tiny_shapes, tmp_path):
    assert main(["viz", "interp", str(run), *CAPS, "--steps", "4", "--stage", "1", "--out", str(tmp_path / "i.png")]) == 0
    with Image.open(tmp_path / "i.png") as im:
        assert im.size == sheet_size(4, 1, 128, labels=False)  # one row of 4 steps
    assert main(["viz", "nearest", str(run), CAPS[0], "--data", str(tiny_shapes), "--n", "2",
                 "--out", str(tmp_path / "n.png")]) == 0
    with Image.open(tmp_path / "n.png") as im:
        assert im.size == sheet_size(1, 3, 128)  # the generated image above its 2 nearest
    assert main(["viz", "curves", str(run), "--out", str(tmp_path / "c.png")]) == 0
    with Image.open(tmp_path / "c.png") as im:
        assert im.size == (1400, 450)  # one panel per stage
    assert main(["viz", "interp", str(run), CAPS[0], "--out", str(tmp_path / "x.png")]) == 2  # needs two
    assert main(["viz", "nearest", str(run), CAPS[0], "--out", str(tmp_path / "x.png")]) == 2  # needs --data
