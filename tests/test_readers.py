"""Data-set readers, `data info`, `data prepare`, the restricted unpickler and bad input."""
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import pytest
from PIL import Image

from release_fixtures import COLORS, write_birds, write_coco, write_flowers, write_folder
from stackgan.data.manifest import DataError, load_images, read_manifest
from stackgan.data.prepare import prepare_dataset
from stackgan.data.readers import detect_layout, open_dataset
from stackgan.data.safe_pickle import UnsafePickleError, load_pickle

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not here")


def dominant(img: np.ndarray) -> tuple:
    """Median color of a uint8 [3, H, W] image."""
    return tuple(int(v) for v in np.median(img.reshape(3, -1), axis=1))


def near(a, b, tol=30):
    return all(abs(x - y) <= tol for x, y in zip(a, b))


# --- the real files in ../shared/data ------------------------------------------------------------

@needs_shared
def test_real_birds_release_split_and_python2_pickles():
    ds = open_dataset(SHARED / "birds")
    assert ds.layout == "birds"
    train, test = ds.records("train"), ds.records("test")
    assert (len(train), len(test)) == (8855, 2933)
    assert len({r.label for r in train}) == 150 and len({r.label for r in test}) == 50
    assert not {r.label for r in train} & {r.label for r in test}
    first = train[0]
    assert first.key == "002.Laysan_Albatross/Laysan_Albatross_0002_1027" and first.label == 2
    assert len(first.captions) == 10 and all(c.strip() for c in first.captions)
    assert first.image.name == "Laysan_Albatross_0002_1027.jpg" and first.bbox is not None
    assert all(r.bbox is not None for r in train + test)
    assert ds.class_names[2] == "002.Laysan_Albatross"


@needs_shared
def test_real_data_info_reports_the_issue_numbers():
    out = subprocess.run([sys.executable, "-m", "stackgan", "data", "info", str(SHARED / "flowers")],
                         capture_output=True, text=True, check=True).stdout
    assert "8,189 images, 81,890 captions" in out
    assert "train: 6,715 images" in out and "82 classes" in out and "20 classes" in out
    assert "problems: none found" in out
    out = subprocess.run([sys.executable, "-m", "stackgan", "data", "info", str(SHARED / "birds")],
                         capture_output=True, text=True, check=True).stdout
    assert "train: 8,855 images" in out and "test: 2,933 images" in out
    assert "8,855 of 8,855 image files missing" in out  # the photos are not in ../shared


@needs_shared
def test_real_flowers_class_split():
    ds = open_dataset(SHARED / "flowers")
    train, test = ds.records("train"), ds.records("test")
    assert len(train) + len(test) == 8189
    assert {r.label for r in test} == set(range(5, 101, 5))
    assert all(r.label % 5 for r in train)
    r = test[0]  # the caption file and the photo are the same image
    assert r.image.stem == Path(r.key).name and r.image.is_file()


# --- the restricted unpickler ----------------------------------------------------------------------

def test_crafted_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "filenames.pickle"
    evil.write_bytes(f"cos\nsystem\n(S'touch {marker}'\ntR.".encode())
    with pytest.raises(UnsafePickleError, match=r"filenames\.pickle.*os\.system"):
        load_pickle(evil)
    assert not marker.exists()
    # a pickle made with the standard library that calls a function is refused too
    evil.write_bytes(pickle.dumps(__import__("functools").partial(print, "hi")))
    with pytest.raises(UnsafePickleError, match="functools.partial"):
        load_pickle(evil)
    # and inside a release layout, open_dataset stops with the file's name
    write_birds(tmp_path / "birds")
    (tmp_path / "birds" / "test" / "class_info.pickle").write_bytes(f"cos\nsystem\n(S'touch {marker}'\ntR.".encode())
    with pytest.raises(UnsafePickleError, match=r"test/class_info\.pickle"):
        open_dataset(tmp_path / "birds")
    assert not marker.exists()


def test_restricted_unpickler_reads_what_releases_hold(tmp_path):
    arr = np.random.default_rng(0).standard_normal((3, 10, 8)).astype(np.float32)
    for protocol in (2, 4):
        (tmp_path / "e.pickle").write_bytes(pickle.dumps({"emb": arr, "names": ["a", "b"], "n": 3}, protocol=protocol))
        back = load_pickle(tmp_path / "e.pickle")
        assert np.array_equal(back["emb"], arr) and back["names"] == ["a", "b"]
    (tmp_path / "t.pickle").write_bytes(pickle.dumps([1, 2])[:-3])
    with pytest.raises(DataError, match="t.pickle: not a readable pickle"):
        load_pickle(tmp_path / "t.pickle")


# --- tiny fixtures in each layout --------------------------------------------------------------------

def test_birds_fixture_prepares_with_crop_labels_and_embeddings_in_order(tmp_path):
    truth = write_birds(tmp_path / "birds")
    assert detect_layout(tmp_path / "birds") == "birds"
    info = open_dataset(tmp_path / "birds").summary()
    assert "embeddings: char-CNN-RNN-embeddings.pickle (4, 10, 16) float32" in info
    assert "train: 4 images, 40 captions, 10 per image, 2 classes" in info
    summary = prepare_dataset(tmp_path / "birds", tmp_path / "out", sizes=(16, 32), progress=False)
    assert summary["splits"] == {"train": 4, "test": 2} and summary["skipped"] == []
    recs = read_manifest(tmp_path / "out", "train")
    imgs = load_images(tmp_path / "out", "train", recs, 16, progress=False)  # the prepared cache
    assert imgs.shape == (4, 3, 16, 16)
    for rec, img in zip(recs, imgs.numpy()):
        color = truth[rec["key"]]
        assert color in rec["captions"][0] and len(rec["captions"]) == 10
        # the crop is centred on the bird's box (a plain centre crop of the photo would show gray there)
        assert near(tuple(int(v) for v in img[:, 8, 8]), COLORS[color]), (rec["key"], img[:, 8, 8])
        assert near(tuple(int(v) for v in img[:, 0, 0]), (128, 128, 128))  # with some background around it
        assert rec["label"] in (1, 2) and len(rec["bbox"]) == 4
    emb = np.load(tmp_path / "out" / "embeddings-train.npy")
    assert emb.shape == (4, 10, 16) and np.allclose(emb[:, 0, 0], [0, 1, 2, 3])


def test_flowers_fixture_without_pickles_uses_the_class_split(tmp_path):
    truth = write_flowers(tmp_path / "flowers")
    ds = open_dataset(tmp_path / "flowers")
    assert ds.layout == "flowers"
    assert {r.label for r in ds.records("test")} == {5, 10}
    assert {r.label for r in ds.records("train")} == {1, 2}
    for r in ds.records("train") + ds.records("test"):
        assert truth[r.image.stem] == r.label


def test_coco_and_folder_fixtures(tmp_path):
    write_coco(tmp_path / "coco")
    ds = open_dataset(tmp_path / "coco")
    assert ds.layout == "coco" and len(ds.records("train")) == 3 and len(ds.records("test")) == 2
    assert ds.records("train")[0].captions[0] == "A red thing 0."  # white space collapsed
    write_folder(tmp_path / "folder")
    ds = open_dataset(tmp_path / "folder")
    assert ds.layout == "folder" and [r.image.stem for r in ds.records("train")] == ["blue", "green", "red"]
    assert ds.records("test")[0].captions == ["a yellow square", "something yellow"]
    summary = prepare_dataset(tmp_path / "folder", tmp_path / "out", sizes=(8,), progress=False)
    assert summary["splits"] == {"train": 3, "test": 1}
    recs = read_manifest(tmp_path / "out", "train")
    for rec, img in zip(recs, load_images(tmp_path / "out", "train", recs, 8, progress=False).numpy()):
        assert near(dominant(img), COLORS[Path(rec["image"]).stem])


# --- bad input -------------------------------------------------------------------------------------

def test_bad_caption_files_are_named(tmp_path):
    write_folder(tmp_path / "d", split_folders=False)
    cap = tmp_path / "d" / "green.txt"
    cap.write_bytes(b"a green square\n\xff\xfe broken\n")
    with pytest.raises(DataError, match=r"green\.txt, line 2: not UTF-8"):
        open_dataset(tmp_path / "d")
    cap.write_text("a green square\n\nanother\n")
    with pytest.raises(DataError, match=r"green\.txt, line 2: empty caption"):
        open_dataset(tmp_path / "d")
    cap.unlink()
    with pytest.raises(DataError, match=r"green\.txt: caption file not found"):
        open_dataset(tmp_path / "d")
    ds = open_dataset(tmp_path / "d", skip_bad=True)  # skipped and counted, the rest aligned
    assert [r.image.stem for r in ds.records("train")] == ["blue", "red", "yellow"]
    assert len(ds.skipped) == 1 and "green.txt" in ds.skipped[0]


def test_release_with_too_few_captions_or_disagreeing_counts(tmp_path):
    write_birds(tmp_path / "b")
    key_file = next((tmp_path / "b" / "text_c10").rglob("*.txt"))
    key_file.write_text("only\nthree\nlines\n")
    with pytest.raises(DataError, match=rf"{key_file.name}: 3 caption line\(s\), expected at least 10"):
        open_dataset(tmp_path / "b")
    shutil.rmtree(tmp_path / "b")
    write_birds(tmp_path / "b")
    from release_fixtures import py2_int64_list
    (tmp_path / "b" / "train" / "class_info.pickle").write_bytes(py2_int64_list([1, 2, 1]))
    with pytest.raises(DataError, match=r"class_info\.pickle: 3 class ids but .*filenames\.pickle has 4"):
        open_dataset(tmp_path / "b")


def test_bad_images_stop_prepare_or_are_skipped_and_old_output_survives(tmp_path):
    write_folder(tmp_path / "d", split_folders=False)
    out = tmp_path / "out"
    prepare_dataset(tmp_path / "d", out, sizes=(8,), progress=False)
    before = {p.name: p.read_bytes() for p in [out / "train.jsonl", *sorted((out / ".stackgan-cache").iterdir())]}
    # modes that are converted, not refused: grayscale, CMYK, RGBA (transparent -> white)
    Image.new("L", (20, 20), 90).save(tmp_path / "d" / "blue.png")
    Image.new("RGBA", (20, 20), (255, 0, 0, 0)).save(tmp_path / "d" / "red.png")
    Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(tmp_path / "d" / "yellow.jpg")
    (tmp_path / "d" / "yellow.png").unlink()
    (tmp_path / "d" / "green.png").write_bytes((tmp_path / "d" / "green.png").read_bytes()[:60])  # truncated
    assert "green.png: not a readable image" in open_dataset(tmp_path / "d").summary(check_images=True)
    with pytest.raises(DataError, match=r"green\.png: not a readable image"):
        prepare_dataset(tmp_path / "d", out, sizes=(8,), progress=False)
    after = {p.name: p.read_bytes() for p in [out / "train.jsonl", *sorted((out / ".stackgan-cache").iterdir())]}
    assert after == before  # the failed run replaced nothing
    summary = prepare_dataset(tmp_path / "d", out, sizes=(8,), skip_bad=True, progress=False)
    assert summary["splits"] == {"train": 3} and len(summary["skipped"]) == 1 and "green.png" in summary["skipped"][0]
    recs = read_manifest(out, "train")
    got = {Path(r["image"]).stem: dominant(img) for r, img in
           zip(recs, load_images(out, "train", recs, 8, progress=False).numpy())}
    assert got["blue"] == (90, 90, 90) and got["red"] == (255, 255, 255)
    assert near(got["yellow"], (255, 0, 0), tol=40)  # CMYK (0, 255, 255, 0) is red
    (tmp_path / "d" / "red.png").unlink()
    with pytest.raises(DataError, match=r"red\.png: image file not found"):
        from stackgan.data.manifest import load_image
        load_image(tmp_path / "d" / "red.png", 8)


def test_data_prepare_cli_then_train_reads_the_prepared_cache(tmp_path):
    truth = write_birds(tmp_path / "birds", n_train=8, n_test=2, embeddings=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "stackgan", "data", "prepare", str(tmp_path / "birds"), "--out",
                          str(tmp_path / "prep"), "--sizes", "76"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "8 train, 2 test images (birds layout)" in out.stdout
    cache = tmp_path / "prep" / ".stackgan-cache" / "images-train-76.npy"
    mtime = cache.stat().st_mtime_ns
    from stackgan.config import apply_overrides, get_preset
    from stackgan.training.data import load_train_data
    cfg = apply_overrides(get_preset("shapes-cpu"), ["data.augment=crop_flip"]).data
    data, _ = load_train_data(tmp_path / "prep", cfg, 64, progress=False)
    assert cache.stat().st_mtime_ns == mtime  # read, not decoded again
    real, text, wrong = data.batch(0, 4)
    assert real.shape == (4, 3, 64, 64) and text.shape[0] == 4
    assert json.loads((tmp_path / "prep" / "prepared.json").read_text())["splits"] == {"train": 8, "test": 2}
    assert len(truth) == 10


def test_precomputed_embeddings_train_and_refuse_new_sentences(tmp_path):
    write_birds(tmp_path / "birds", n_train=8, n_test=2)
    prepare_dataset(tmp_path / "birds", tmp_path / "prep", sizes=(64, 256), progress=False)
    from stackgan.config import apply_overrides, get_preset
    from stackgan.pipeline import StackGANPipeline
    from stackgan.training import train
    from conftest import TINY
    cfg = apply_overrides(get_preset("shapes-cpu"), TINY + ["data.text_encoder=precomputed", "stage1.max_steps=2",
                                                            "stage1.batch_size=4"])
    train(cfg, tmp_path / "prep", tmp_path / "run", 1, progress=False)
    pipe = StackGANPipeline.load(tmp_path / "run")
    assert pipe.generator_args["stage1"]["text_dim"] == 16  # the fixture's embedding width
    emb = pipe.text_norm(torch.from_numpy(np.load(tmp_path / "prep" / "embeddings-test.npy"))[:, 0])
    out = pipe.generate(embeddings=emb)
    assert out.stage1.shape == (2, 3, 64, 64)
    with pytest.raises(RuntimeError, match="cannot embed new sentences.*minilm"):
        pipe.generate(["a red bird"])
    r = subprocess.run([sys.executable, "-m", "stackgan", "generate", str(tmp_path / "run"), "a red bird",
                        "--out", str(tmp_path / "g")], capture_output=True, text=True)
    assert r.returncode == 2 and "cannot embed new sentences" in r.stderr
    (tmp_path / "prep" / "embeddings-train.npy").write_bytes(b"junk")
    with pytest.raises(DataError, match=r"embeddings-train\.npy: not a readable"):
        train(cfg, tmp_path / "prep", tmp_path / "run2", 1, progress=False)
