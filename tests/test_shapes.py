"""The Shapes set against its contract, docs/shapes-dataset.md."""

import json
import math
import re

import numpy as np
import pytest
from PIL import Image

from stackgan.data.shapes import (
    ATTRIBUTES, BACKGROUND_RGB, HELD_OUT_PAIRS, OBJECT_RGB, generate_shapes, make_caption,
    make_example, parse_caption, sample_attributes, sample_geometry, shade_rgb,
)
from stackgan.data.shapes_text import CAPTION_TEMPLATES, compose_caption

SPLIT_INDEX = {"train": 0, "test": 1}
NOISE_TOL = 20  # > 6 sigma of the noise (std 3) plus rounding
TEMPLATE_WORDS = set("a an the there is shown in at on of can be seen this image shows picture "
                     "drawing you see against front over corner side and".split())
# size class -> circumradius range, and shape -> area / R^2 and perimeter / R
RADIUS = {"small": (20, 26), "medium": (36, 44), "large": (54, 62)}
STAR_EDGE = math.sqrt(1 + 0.4**2 - 2 * 0.4 * math.cos(math.pi / 5))
AREA = {"circle": math.pi, "square": 2.0, "triangle": 3 * math.sqrt(3) / 4,
        "star": 5 * 0.4 * math.sin(math.pi / 5)}
PERIMETER = {"circle": 2 * math.pi, "square": 4 * math.sqrt(2), "triangle": 3 * math.sqrt(3),
             "star": 10 * STAR_EDGE}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    return generate_shapes(tmp_path_factory.mktemp("shapes") / "a", n_train=20, n_test=10,
                           seed=0, workers=1, progress=False)


def read_records(root, split):
    return [json.loads(line) for line in (root / f"{split}.jsonl").read_text().splitlines()]


def expected_background(name):
    """[256, 1, 3]: the background color times the ramp, box-averaged from the 1024 rows."""
    rows = 4 * np.arange(256) + 1.5
    ramp = 1.06 - 0.12 * rows / 1023
    return ramp[:, None, None] * np.asarray(BACKGROUND_RGB[name], dtype=float)


def example(split, i, seed=0):
    """(image, record, geometry) of image i, the geometry re-drawn from the same generator."""
    image, record = make_example(seed, split, i)
    rng = np.random.default_rng((seed, SPLIT_INDEX[split], i))
    attrs = sample_attributes(rng, split)
    assert attrs == record["attributes"]
    return image, record, sample_geometry(attrs, rng)


# --- files, determinism ---------------------------------------------------------------------

def test_files_and_records(small_set):
    for split, n in (("train", 20), ("test", 10)):
        records = read_records(small_set, split)
        assert len(records) == n
        for i, rec in enumerate(records):
            keys = ["image", "captions", "full_caption", "attributes"]
            assert list(rec) == keys + (["held_out"] if split == "test" else [])
            assert rec["image"] == f"images/{split}/{i:05d}.png"
            assert list(rec["attributes"]) == list(ATTRIBUTES)
            assert len(rec["captions"]) == 5
            with Image.open(small_set / rec["image"]) as im:
                assert im.mode == "RGB" and im.size == (256, 256)
    params = json.loads((small_set / "shapes.json").read_text())
    assert (params["n_train"], params["n_test"], params["seed"]) == (20, 10, 0)


def test_same_arguments_give_identical_files_for_any_worker_count(small_set, tmp_path):
    again = generate_shapes(tmp_path / "b", n_train=20, n_test=10, seed=0, workers=2,
                            progress=False)
    for name in ("train.jsonl", "test.jsonl", "shapes.json"):
        assert (again / name).read_bytes() == (small_set / name).read_bytes()
    for path in sorted((small_set / "images").rglob("*.png")):
        assert (again / path.relative_to(small_set)).read_bytes() == path.read_bytes()


def test_image_does_not_depend_on_set_size(small_set, tmp_path):
    other = generate_shapes(tmp_path / "c", n_train=7, n_test=3, seed=0, workers=1,
                            progress=False)
    for split, n in (("train", 7), ("test", 3)):
        lines = (other / f"{split}.jsonl").read_text().splitlines()
        assert lines == (small_set / f"{split}.jsonl").read_text().splitlines()[:n]
        for i in range(n):
            rel = f"images/{split}/{i:05d}.png"
            assert (other / rel).read_bytes() == (small_set / rel).read_bytes()


def test_another_seed_gives_another_set():
    assert not np.array_equal(make_example(0, "train", 3)[0], make_example(1, "train", 3)[0])


def test_existing_set_is_reused_and_other_parameters_refused(tmp_path, capsys):
    root = generate_shapes(tmp_path / "d", n_train=3, n_test=2, progress=False, workers=1)
    stamp = (root / "train.jsonl").stat().st_mtime_ns
    capsys.readouterr()
    assert generate_shapes(root, n_train=3, n_test=2, progress=False) == root
    assert "reusing" in capsys.readouterr().out
    assert (root / "train.jsonl").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="--out"):
        generate_shapes(root, n_train=4, n_test=2, progress=False)


# --- rendering -------------------------------------------------------------------------------

def test_palette_and_ramp():
    seen_solid = 0
    for i in range(40):
        image, rec, g = example("train", i)
        attrs, img = rec["attributes"], image.astype(float)
        bg = expected_background(attrs["background"])  # [256, 1, 3]
        for y, x in ((0, 0), (0, 252), (252, 0), (252, 252)):  # 4x4 corner patches
            patch = img[y:y + 4, x:x + 4].mean(axis=(0, 1))
            assert np.abs(patch - bg[y:y + 4].mean(axis=(0, 1))).max() < 3
        assert img[:8].mean() > img[-8:].mean()  # the ramp: top brighter than bottom
        if attrs["texture"] == "solid":
            seen_solid += 1
            cx, cy = int(g.cx), int(g.cy)
            centre = img[cy - 1:cy + 2, cx - 1:cx + 2].mean(axis=(0, 1))
            assert np.abs(centre - OBJECT_RGB[attrs["color"]]).max() < 4
        else:  # some pixels of the object are in its shade
            shade = np.asarray(shade_rgb(attrs["color"]))
            assert (np.abs(img - shade).max(axis=-1) < 10).sum() > 10
    assert seen_solid > 0


def test_geometry():
    cell = {"left": 80, "right": 176, "top": 80, "bottom": 176}
    for i in range(60):
        image, rec, _ = example("test", i)
        attrs = rec["attributes"]
        diff = np.abs(image - expected_background(attrs["background"])).max(axis=-1)
        mask = diff > NOISE_TOL  # [256, 256] object pixels (mostly covered ones)
        # nothing but background within the outer 8 pixels
        assert not mask[:8].any() and not mask[-8:].any()
        assert not mask[:, :8].any() and not mask[:, -8:].any()
        # centroid within +-8 px of the position's cell
        ys, xs = np.nonzero(mask)
        words = attrs["position"].split()
        want_x = next((cell[w] for w in words if w in ("left", "right")), 128)
        want_y = next((cell[w] for w in words if w in ("top", "bottom")), 128)
        assert abs(xs.mean() - want_x) <= 8 and abs(ys.mean() - want_y) <= 8, attrs
        # the area fits the size class (a ring of one perimeter of partly covered pixels)
        lo, hi = RADIUS[attrs["size"]]
        k, p = AREA[attrs["shape"]], PERIMETER[attrs["shape"]]
        assert k * lo**2 - p * lo <= mask.sum() <= k * hi**2 + p * hi, attrs


def test_shade_is_rounded_half_up():
    assert shade_rgb("red") == (97, 18, 18)  # 96.75, 18.0, 18.0
    assert shade_rgb("green") == (23, 77, 32)  # 22.5, 76.5, 31.5: ties go up


def test_size_classes_do_not_overlap_in_area():
    for shape in AREA:
        k, p = AREA[shape], PERIMETER[shape]
        ranges = [(k * lo**2 - p * lo, k * hi**2 + p * hi) for lo, hi in RADIUS.values()]
        assert ranges[0][1] < ranges[1][0] and ranges[1][1] < ranges[2][0]


# --- splits ----------------------------------------------------------------------------------

def test_held_out_pairs_never_in_train_and_flagged_in_test(small_set):
    train = {(a["shape"], a["color"]) for a in
             (sample_attributes(np.random.default_rng((0, 0, i)), "train") for i in range(2000))}
    assert not train & HELD_OUT_PAIRS
    assert len(train) == 4 * 8 - 4  # every other pair occurs
    test = [sample_attributes(np.random.default_rng((0, 1, i)), "test") for i in range(2000)]
    assert HELD_OUT_PAIRS <= {(a["shape"], a["color"]) for a in test}
    for rec in read_records(small_set, "test"):
        attrs = rec["attributes"]
        assert rec["held_out"] == ((attrs["shape"], attrs["color"]) in HELD_OUT_PAIRS)
    with pytest.raises(ValueError):
        sample_attributes(np.random.default_rng(0), "val")


# --- captions --------------------------------------------------------------------------------

def caption_words():
    from stackgan.data.shapes_text import WORDS, BACKDROP_NOUNS
    words = set(TEMPLATE_WORDS) | set(BACKDROP_NOUNS)
    for table in WORDS.values():
        for phrases in table.values():
            for phrase in phrases:
                words |= set(phrase.split())
    return words


def check_caption(caption, attrs, full=False):
    assert caption == caption.lower() and caption == caption.strip()
    assert not caption.endswith((".", ",")) and "  " not in caption and ",," not in caption
    assert set(re.findall(r"[\w-]+", caption)) <= caption_words(), caption
    named = parse_caption(caption)
    assert {"shape", "color"} <= set(named), caption
    assert all(attrs[k] == v for k, v in named.items()), (caption, named, attrs)
    if full:
        assert named == attrs, caption
    return named


def test_captions_of_the_set(small_set):
    for split in ("train", "test"):
        for rec in read_records(small_set, split):
            for caption in rec["captions"]:
                check_caption(caption, rec["attributes"])
            check_caption(rec["full_caption"], rec["attributes"], full=True)


def test_caption_rates_and_templates():
    rng = np.random.default_rng(123)
    counts = {name: 0 for name in ("size", "texture", "position", "background")}
    templates = set()
    n = 2000
    for _ in range(n):
        attrs = sample_attributes(rng, "test")
        template, caption = compose_caption(attrs, rng)
        templates.add(template)
        for name in check_caption(caption, attrs):
            if name in counts:
                counts[name] += 1
        check_caption(make_caption(attrs, rng, full=True), attrs, full=True)
    assert len(CAPTION_TEMPLATES) >= 10 and len(templates) >= 8
    for name, count in counts.items():
        assert 0.70 < count / n < 0.80, (name, count / n)


@pytest.mark.parametrize("caption, expected", [
    ("a small red striped circle in the top left on a black background",
     {"size": "small", "color": "red", "texture": "striped", "shape": "circle",
      "position": "top left", "background": "black"}),
    ("there is a red circle with stripes at the upper left, against a black backdrop",
     {"color": "red", "shape": "circle", "texture": "striped", "position": "top left",
      "background": "black"}),
    ("on a black background, a tiny striped red disc sits in the top left corner",
     {"background": "black", "size": "small", "texture": "striped", "color": "red",
      "shape": "circle", "position": "top left"}),
    ("a medium-sized blue star at the top center", {"size": "medium", "color": "blue",
                                                   "shape": "star", "position": "top"}),
    ("a big pink square with dots at the lower right over a white backdrop",
     {"size": "large", "color": "pink", "shape": "square", "texture": "dotted",
      "position": "bottom right", "background": "white"}),
    ("an orange triangle on the right side", {"color": "orange", "shape": "triangle",
                                              "position": "right"}),
    ("a plain green disc in the middle", {"texture": "solid", "color": "green",
                                          "shape": "circle", "position": "center"}),
])
def test_parse_caption(caption, expected):
    assert parse_caption(caption) == expected


def test_parse_caption_refuses_contradictions():
    with pytest.raises(ValueError):
        parse_caption("a red circle and a blue square")


def test_fixed_rotation_changes_only_the_rotation(tmp_path):
    from stackgan.data import shapes

    for i in range(3):
        turned, record = shapes.make_example(0, "train", i)
        upright, same = shapes.make_example(0, "train", i, rotate=False)
        assert same == record and not np.array_equal(turned, upright)
        rng = np.random.default_rng((0, 0, i))
        attrs = shapes.sample_attributes(rng, "train")
        assert shapes.sample_geometry(attrs, rng, rotate=False).theta == 0.0
    out = shapes.generate_shapes(tmp_path / "s", n_train=4, n_test=2, workers=1, progress=False, fixed_rotation=True)
    assert json.loads((out / "shapes.json").read_text())["fixed_rotation"] is True
    with pytest.raises(FileExistsError):  # the standard set is not the same set
        shapes.generate_shapes(out, n_train=4, n_test=2, workers=1, progress=False)
