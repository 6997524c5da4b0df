import json
import shutil

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from stackgan.data.shapes import ATTRIBUTES, generate_shapes
from stackgan.evaluation import checker as ck
from stackgan.utils import from_uint8

torch.set_num_threads(2)

TINY = {"steps": 3, "batch_size": 8, "progress": False, "device": "cpu"}


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    generate_shapes(out, n_train=200, n_test=40, seed=0, progress=False)
    return out


@pytest.fixture(scope="module")
def trained(shapes_dir):
    return ck.train_checker(shapes_dir, **TINY)


def test_forward_shapes_any_input_size():
    torch.manual_seed(0)
    model = ck.AttributeChecker(widths=(4, 8, 8, 8), strides=(2, 2, 2, 2), where_channels=2).eval()
    for size in (64, 128, 256):
        out = model(torch.rand(2, 3, size, size) * 2 - 1)
        assert list(out) == list(ATTRIBUTES)
        for name, values in ATTRIBUTES.items():
            assert out[name].shape == (2, len(values))


def test_resize_rule():
    x = torch.rand(1, 3, 256, 256)
    assert torch.allclose(ck.resize_to_checker(x), F.avg_pool2d(x, 2))
    y = torch.rand(1, 3, 64, 64)
    want = F.interpolate(y, size=(128, 128), mode="bilinear", align_corners=False)
    assert torch.allclose(ck.resize_to_checker(y), want)
    z = torch.rand(1, 3, 128, 128)
    assert ck.resize_to_checker(z) is z


def test_load_split(shapes_dir):
    images, records = ck._load_split(shapes_dir, "test", 64)
    assert images.shape == (40, 3, 64, 64) and images.dtype == torch.uint8
    assert len(records) == 40 and set(records[0]["attributes"]) == set(ATTRIBUTES)


def test_train_save_load_round_trip(shapes_dir, trained):
    weights = shapes_dir / "checker.safetensors"
    info = json.loads((shapes_dir / "checker.json").read_text())
    assert weights.exists() and info["fingerprint"] == ck._fingerprint(shapes_dir)
    for size in ("128", "64"):
        assert set(info["test_accuracy"][size]) == {*ATTRIBUTES, "all", "held_out_pair"}
    assert not list(shapes_dir.glob(".*.tmp"))  # atomic writes left nothing behind

    loaded = ck.load_checker(weights)
    images, _ = ck._load_split(shapes_dir, "test", 128)
    x = from_uint8(images[:8])
    with torch.no_grad():
        a, b = trained.eval()(x), loaded(x)
    for name in ATTRIBUTES:
        assert torch.equal(a[name], b[name])
    preds = ck.predict(loaded, x)
    assert all(p.dtype == torch.long and p.shape == (8,) for p in preds.values())


def test_training_is_seeded(shapes_dir, tmp_path, trained):
    again = ck.train_checker(shapes_dir, tmp_path / "again.safetensors", **TINY)
    for (k, v), w in zip(trained.state_dict().items(), again.state_dict().values()):
        assert torch.equal(v, w), k


class _FakeChecker(nn.Module):
    """Answers with fixed predictions, looked up by the index stored in pixel (0, 0)."""

    def __init__(self, preds):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))
        self.preds = preds

    def forward(self, x):
        idx = x[:, 0, 0, 0].round().long()
        return {n: F.one_hot(self.preds[n][idx], len(v)).float() for n, v in ATTRIBUTES.items()}


def test_attribute_accuracy_math():
    first = {n: v[0] for n, v in ATTRIBUTES.items()}
    attributes = [dict(first) for _ in range(4)]
    preds = {n: torch.zeros(4, dtype=torch.long) for n in ATTRIBUTES}
    preds["shape"][1] = 1  # image 1: shape wrong
    preds["color"][2] = 3  # image 2: color wrong
    preds["texture"][2] = 2  # image 2: texture wrong too
    attributes[3]["size"] = ATTRIBUTES["size"][2]  # image 3: intended size differs
    preds["size"][3] = 2  # ... and is predicted: right

    images = torch.arange(4).float().view(4, 1, 1, 1).expand(4, 3, 8, 8)
    held_out = torch.tensor([False, True, True, True])
    scores = ck.attribute_accuracy(_FakeChecker(preds), images, attributes, held_out=held_out)
    assert scores["shape"] == 0.75 and scores["color"] == 0.75 and scores["texture"] == 0.75
    assert scores["size"] == 1.0 and scores["position"] == 1.0 and scores["background"] == 1.0
    assert scores["all"] == 0.5  # images 0 and 3
    assert scores["held_out_pair"] == pytest.approx(1 / 3)  # of images 1-3 only 3 has both
    assert ck.pair_accuracy(preds, attributes) == 0.5
    assert ck.pair_accuracy(preds, attributes, torch.zeros(4, dtype=torch.bool)) != 0.5  # nan
    assert ck.score_predictions(preds, attributes) == {k: v for k, v in scores.items()
                                                       if k != "held_out_pair"}
    # attribute dicts may also hold class indices
    as_index = [{n: ATTRIBUTES[n].index(v) for n, v in a.items()} for a in attributes]
    assert ck.score_predictions(preds, as_index)["all"] == 0.5


def test_load_or_train_reuses_cache(shapes_dir, tmp_path, monkeypatch):
    data = tmp_path / "shapes"
    shutil.copytree(shapes_dir, data, ignore=shutil.ignore_patterns("checker.*"))
    first = ck.load_or_train_checker(data, **TINY)
    mtime = (data / "checker.safetensors").stat().st_mtime_ns

    calls = []
    real_train = ck.train_checker
    monkeypatch.setattr(ck, "train_checker", lambda *a, **k: calls.append(1) or real_train(*a, **k))
    second = ck.load_or_train_checker(data, **TINY)
    assert calls == [] and (data / "checker.safetensors").stat().st_mtime_ns == mtime
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        assert torch.equal(first.eval()(x)["texture"], second(x)["texture"])

    # a different train split invalidates the cache
    with open(data / "train.jsonl", "a") as f:
        f.write("\n")
    ck.load_or_train_checker(data, **TINY)
    assert calls == [1]


def test_hue_rotation_moves_colors_off_the_palette_but_keeps_grays():
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(64, 3, 4, 4)
    x[:, :, :2] = torch.tensor([1.0, -1.0, -1.0])[:, None, None]  # red object
    x[:, :, 2:] = torch.tensor([0.2, 0.2, 0.2])[:, None, None]  # gray background
    y, untouched = ck._rotate_hue(x, gen)
    assert 10 < untouched.sum() < 54  # about half the batch keeps its colors (and its color labels)
    assert torch.equal(y[untouched], x[untouched])
    assert torch.allclose(y[:, :, 2:], x[:, :, 2:], atol=1e-6)  # grays lie on the rotation axis
    moved = y[~untouched, :, 0, 0]  # [b, 3] former reds
    assert (moved - torch.tensor([1.0, -1.0, -1.0])).abs().amax(1).gt(0.05).float().mean() > 0.9
    assert len({tuple(c) for c in moved.mul(10).round().tolist()}) > 10  # many hues, not a few swaps


def test_shipped_checker_is_checked_then_adopted_or_refused(shapes_dir, trained, tmp_path, monkeypatch):
    data = tmp_path / "shapes"
    shutil.copytree(shapes_dir, data, ignore=shutil.ignore_patterns("checker.*"))
    # a "shipped" checker made for this data set (the tiny one reads the test images badly)
    shipped = tmp_path / "pkg" / "shapes_checker.safetensors"
    shipped.parent.mkdir()
    ck.save_checker(trained, shipped, {"fingerprint": ck._fingerprint(data), "steps": 3})
    monkeypatch.setattr(ck, "SHIPPED", shipped)
    calls = []
    monkeypatch.setattr(ck, "train_checker", lambda *a, **k: calls.append(1) or trained)

    # worse than SHIPPED_MIN_ACCURACY on some attribute: a new one is trained
    ck.load_or_train_checker(data, **TINY)
    assert calls == [1] and not (data / "checker.json").exists()

    # good enough: copied beside the data with the accuracy measured here, not trained
    monkeypatch.setattr(ck, "SHIPPED_MIN_ACCURACY", 0.0)
    adopted = ck.load_or_train_checker(data, **TINY)
    meta = json.loads((data / "checker.json").read_text())
    assert calls == [1] and meta["source"] == "shipped with the package" and meta["steps"] == 3
    assert meta["test_accuracy"] == ck.accuracy_on_test_split(trained, data)
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        assert torch.equal(adopted(x)["shape"], trained(x)["shape"])

    # asked to retrain, or another data set: the shipped one is not used
    ck.load_or_train_checker(data, retrain=True, **TINY)
    assert calls == [1, 1]
    (data / "checker.json").unlink()
    with open(data / "train.jsonl", "a") as f:
        f.write("\n")
    ck.load_or_train_checker(data, **TINY)
    assert calls == [1, 1, 1]


def test_shipped_checker_matches_the_default_data_set_spec():
    meta = json.loads(ck.SHIPPED.with_suffix(".json").read_text())
    assert meta["format_version"] == ck.FORMAT_VERSION
    assert min(meta["test_accuracy"]["64"][a] for a in ATTRIBUTES) > ck.SHIPPED_MIN_ACCURACY
    ck.load_checker(ck.SHIPPED)  # the weights load into today's network


def _shape_index(records):
    return torch.tensor([ATTRIBUTES["shape"].index(r["attributes"]["shape"]) for r in records])


def test_outline_judge_reads_real_shapes_and_not_a_blob(shapes_dir):
    from stackgan.data.manifest import load_images, read_manifest
    from stackgan.evaluation.outline import OutlineJudge, features
    train, test = read_manifest(shapes_dir, "train"), read_manifest(shapes_dir, "test")
    judge = OutlineJudge.fit(from_uint8(load_images(shapes_dir, "train", train, 64, progress=False)), _shape_index(train))
    real = from_uint8(load_images(shapes_dir, "test", test, 64, progress=False))
    assert (judge.predict(real) == _shape_index(test)).float().mean() >= 0.9  # (1.0 for this set; 0.95 turned)
    turned = torch.rot90(real, 1, dims=(2, 3))  # a quarter turn: the outline's numbers do not change
    assert (judge.predict(turned) == _shape_index(test)).float().mean() >= 0.9
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    disc = ((yy - 30) ** 2 + (xx - 34) ** 2 < 14 ** 2).float()  # one red disc on grey, for every caption
    blobs = torch.stack([torch.stack([disc * 0.9 - 0.1 * (1 - disc), -0.1 + 0 * disc, -0.1 + 0 * disc])] * 8)
    assert (judge.predict(blobs) == ATTRIBUTES["shape"].index("circle")).all()
    assert (features(torch.zeros(2, 3, 64, 64)) == 0).all()  # no object: no outline, no error
    with pytest.raises(ValueError, match="two shapes"):
        OutlineJudge.fit(real[:3], torch.zeros(3, dtype=torch.long))


def test_outline_judge_is_skipped_without_a_training_split(shapes_dir, tmp_path, capsys):
    from stackgan.evaluation.shapes_eval import _outline_judge
    assert _outline_judge(shapes_dir) is not None
    (tmp_path / "test.jsonl").write_text((shapes_dir / "test.jsonl").read_text())
    assert _outline_judge(tmp_path) is None
    assert "shape_outline not reported" in capsys.readouterr().out


def test_shape_reads_are_the_confusions_rows_with_none():
    from stackgan.evaluation.shapes_eval import reads_table, shape_reads
    records = [{"attributes": {"shape": s}} for s in ("circle", "circle", "triangle", "triangle", "triangle", "star")]
    idx = ATTRIBUTES["shape"].index
    # circles read right; triangles read square, none, triangle; the star read circle
    read = torch.tensor([idx("circle"), idx("circle"), idx("square"), -1, idx("triangle"), idx("circle")])
    reads = shape_reads(read, records)
    assert set(reads) == {"circle", "triangle", "star"}  # no square among the captions: no row for it
    assert reads["circle"]["circle"] == 1.0
    assert reads["triangle"]["square"] == pytest.approx(1 / 3) and reads["triangle"]["none"] == pytest.approx(1 / 3)
    assert reads["star"] == {"circle": 1.0, "square": 0.0, "triangle": 0.0, "star": 0.0, "none": 0.0}
    table = reads_table({"stage1": {"shape_reads": reads}})
    assert "| Stage 1 | triangle | 0.00 | 0.33 | 0.33 | 0.00 | 0.33 |" in table and "read none" in table
    assert reads_table({"stage1": {"shape": 0.5}}) == ""


def test_texture_reads_are_the_checkers_confusion_rows():
    from stackgan.evaluation.shapes_eval import reads_table, texture_reads
    records = [{"attributes": {"texture": t}} for t in ("striped", "striped", "striped", "striped", "solid")]
    idx = ATTRIBUTES["texture"].index
    read = torch.tensor([idx("striped"), idx("dotted"), idx("dotted"), idx("dotted"), idx("solid")])
    reads = texture_reads(read, records)
    assert set(reads) == {"striped", "solid"}  # no dotted caption: no row for it
    assert reads["striped"] == {"solid": 0.0, "striped": 0.25, "dotted": 0.75} and reads["solid"]["solid"] == 1.0
    table = reads_table({"stage2": {"texture_reads": reads}}, "texture_reads", ATTRIBUTES["texture"])
    assert "| Stage 2 | striped | 0.00 | 0.25 | 0.75 |" in table and "read dotted" in table


def test_overlap_judge_reads_real_shapes_and_calls_a_lumpy_blob_none(shapes_dir):
    """stackgan.evaluation.outline.read_shapes: every real test image overlaps its own ideal shape best
    (also mirrored); a disc reads circle; a disc with bites taken out of its rim, a four-pointed star and
    an empty image overlap no shape by 0.75 and read none (-1)."""
    from stackgan.data.manifest import load_images, read_manifest
    from stackgan.evaluation.outline import overlap_shapes, read_shapes
    test = read_manifest(shapes_dir, "test")
    real = from_uint8(load_images(shapes_dir, "test", test, 64, progress=False))
    assert torch.equal(read_shapes(real), _shape_index(test))
    assert torch.equal(read_shapes(real.flip(-1)), _shape_index(test))  # mirrored (the background's ramp runs down)
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    r, angle = ((yy - 30) ** 2 + (xx - 34) ** 2).sqrt(), torch.atan2(yy - 30, xx - 34)
    disc = (r < 14).float()
    bitten = disc * (1 - ((torch.cos(3 * angle) > 0.5) & (r > 7)).float())  # three deep bites
    four = (r < 6 + 12 * torch.cos(2 * angle).abs() ** 4).float()  # a four-pointed star
    on_grey = lambda m: torch.stack([m * 0.9 - 0.1 * (1 - m), -0.1 + 0 * m, -0.1 + 0 * m])  # noqa: E731
    images = torch.stack([on_grey(disc), on_grey(bitten), on_grey(four), on_grey(0 * disc)])
    assert read_shapes(images).tolist() == [ATTRIBUTES["shape"].index("circle"), -1, -1, -1]
    assert overlap_shapes(images[:1])[0, 0] > 0.9 and (overlap_shapes(images[3:]) == 0).all()


def test_demo_table_names_the_model_of_every_row(tmp_path):
    """The demo's closing table: one row per (model, stage), named, from each folder's eval.json; a
    folder without one is left out (a session once read the pretrained model's rows as the run's)."""
    import json

    from stackgan.demo import comparison_table
    from stackgan.evaluation.shapes_eval import COLUMNS
    run, old, none = tmp_path / "run", tmp_path / "old", tmp_path / "none"
    for path, value in ((run, 0.75), (old, 0.25)):
        path.mkdir()
        scores = {c: value for c in COLUMNS}
        (path / "eval.json").write_text(json.dumps({"stage1": scores, "stage2": {**scores, "shape": value / 2}}))
    rows = comparison_table({"this run": run, "pretrained": old, "missing": none}).splitlines()
    assert rows[0].startswith("| model | shape |") and len(rows) == 2 + 4
    assert rows[2].startswith("| this run, Stage I | 0.750 |") and rows[3].startswith("| this run, Stage II | 0.375 |")
    assert rows[4].startswith("| pretrained, Stage I | 0.250 |") and rows[5].startswith("| pretrained, Stage II | 0.125 |")