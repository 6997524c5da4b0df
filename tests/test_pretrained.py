"""The Shapes model shipped in pretrained/shapes."""
from pathlib import Path

import torch
from PIL import Image
from safetensors import safe_open

from stackgan.config import apply_overrides, get_preset
from stackgan.demo import PRETRAINED_SHAPES, compare_with_pretrained
from stackgan.pipeline import StackGANPipeline
from stackgan.training import train
from conftest import TINY

CAPTIONS = ["a large green striped square at the bottom on a white background",
            "a small red circle in the top left on a black background"]


def assert_half_precision_model(folder: Path, max_bytes: int) -> None:
    """A shipped model folder: config.json and model.safetensors, under ``max_bytes`` in all, its generator
    weights float16."""
    files = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors"} <= files
    assert sum(p.stat().st_size for p in folder.iterdir()) < max_bytes
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys() if k.startswith("generator.") and "weight" in k}
    assert dtypes == {"F16"}


def test_pretrained_model_is_small_half_precision_and_two_stage():
    assert PRETRAINED_SHAPES == Path(__file__).resolve().parent.parent / "pretrained" / "shapes"
    assert_half_precision_model(PRETRAINED_SHAPES, 25 * 2**20)
    assert StackGANPipeline.load(PRETRAINED_SHAPES).stage == 2


def test_pretrained_model_generates_deterministic_images_that_follow_the_background():
    pipe = StackGANPipeline.load(PRETRAINED_SHAPES)
    a, b = pipe.generate(CAPTIONS, seed=0), pipe.generate(CAPTIONS, seed=0)
    assert a.stage2.shape == (2, 3, 256, 256) and a.stage1.shape == (2, 3, 64, 64) and a.seeds == [0, 1]
    assert torch.equal(a.stage2, b.stage2) and torch.equal(a.stage1, b.stage1)
    assert not torch.equal(pipe.generate(CAPTIONS, seed=5).stage2, a.stage2)
    corners = a.stage2[:, :, :24, :24].float().mean(dim=(1, 2, 3))  # top-left corner: background only
    # the white-background caption's corner is bright, the black one's dark (checked on trained weights)
    assert corners[0] > 180 and corners[1] < 70, corners


def test_pretrained_shapes_outline_and_size_follow_the_words():
    """The shipped Stage I draws each shape word's own outline and each size word's size (checked on the trained
    weights, four noises per sentence): a polygon's strongest outline harmonic is its symmetry order (square 4,
    triangle 3, star 5), a circle has no harmonic above 0.05, and every object's circumradius lies within 3 px
    (at 256) of the data's range for its size word."""
    from stackgan.data.shapes import ATTRIBUTES, RADIUS_RANGE, SYMMETRY
    pipe = StackGANPipeline.load(PRETRAINED_SHAPES)
    G1 = pipe.stage1_generator.eval()
    layer = G1.foreground
    captions = [f"a {size} blue {shape} in the center on a white background"
                for shape in SYMMETRY for size in ATTRIBUTES["size"]]
    n = len(captions)
    with torch.inference_mode():
        G1(pipe.noise(list(range(4 * n)), None)[0], pipe.embed(captions * 4))
        amp = layer.coef.float().view(4, n, 2, layer.radial).square().sum(2).sqrt().mean(0)  # [n, K]
        reach = layer.reach().view(4, n) * 128  # px at 256
    for i, caption in enumerate(captions):
        shape, size = caption.split()[3], caption.split()[1]
        if SYMMETRY[shape]:
            assert int(amp[i, 1:].argmax()) + 2 == SYMMETRY[shape] and amp[i, 1:].max() > 0.1, (caption, amp[i])
        else:
            assert amp[i].max() < 0.05, (caption, amp[i])
        low, high = RADIUS_RANGE[size]
        assert ((reach[:, i] > low - 3) & (reach[:, i] < high + 3)).all(), (caption, reach[:, i])


def test_demo_comparison_sheet(tiny_shapes, tmp_path):
    cfg = apply_overrides(get_preset("shapes-cpu"), TINY + ["stage1.max_steps=1"])
    train(cfg, tiny_shapes, tmp_path, 1, progress=False)
    sheet = compare_with_pretrained(tmp_path, CAPTIONS)
    assert sheet == tmp_path / "compare.png"
    width, height = Image.open(sheet).size
    assert width > 2 * 192 and height > 2 * 192  # two captions side by side, two models one above the other
    assert compare_with_pretrained(tmp_path, CAPTIONS, tmp_path / "nowhere") is None


PRETRAINED_FLOWERS = PRETRAINED_SHAPES.parent / "flowers"


def test_pretrained_flowers_is_half_precision_two_stage_and_draws_the_colour_word():
    """pretrained/flowers (the first real-photo model, trained on a lent GPU: docs/real-data.md): float16, under
    50 MB, MiniLM captions, both stages; the same seed gives the same images, and the petal colour named in the
    sentence is the colour at the image's centre (checked on the trained weights: the text reaches the image)."""
    assert_half_precision_model(PRETRAINED_FLOWERS, 50 * 2**20)
    pipe = StackGANPipeline.load(PRETRAINED_FLOWERS)
    assert pipe.stage == 2 and pipe.text_encoder == "minilm"
    words = ["red", "white", "yellow", "purple"]
    captions = [f"this flower has large {w} petals" for w in words] * 4  # four seeds of each
    out = pipe.generate(captions, seed=0)
    assert out.stage2.shape == (16, 3, 256, 256) and out.stage1.shape == (16, 3, 64, 64)
    assert torch.equal(pipe.generate(captions[:2], seed=3).stage2, pipe.generate(captions[:2], seed=3).stage2)
    r, g, b = out.stage2[:, :, 80:176, 80:176].float().mean(dim=(2, 3)).view(4, 4, 3).mean(0).T  # [4 words] each
    assert r[0] - g[0] > 100 and r[0] - b[0] > 100, (r, g, b)                    # red
    assert min(r[1], g[1], b[1]) > 140 and max(r[1], g[1], b[1]) - min(r[1], g[1], b[1]) < 40, (r, g, b)  # white
    assert r[2] > 150 and g[2] > 130 and b[2] < 80, (r, g, b)                     # yellow
    assert b[3] - g[3] > 30 and r[3] - g[3] > 30, (r, g, b)                       # purple
