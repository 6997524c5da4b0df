"""Every kind of bad input gets a clear answer: crafted checkpoints, odd images, odd text, and
property-based tests of the manifest, caption-file and configuration parsers."""
import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from stackgan.checkpoint import CheckpointError, load_latest, load_state
from stackgan.config import ConfigError, Config, apply_overrides, from_dict
from stackgan.data.manifest import DataError, load_image, read_manifest
from stackgan.data.readers import read_caption_file

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


class Payload:
    """Pickles as a call of os.system: what a crafted checkpoint carries."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_crafted_checkpoint_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "run" / "stage1" / "state.pt"
    evil.parent.mkdir(parents=True)
    torch.save({"format_version": 1, "generator": Payload(marker)}, evil)
    with pytest.raises(CheckpointError, match="state.pt: not a readable StackGAN training state"):
        load_state(evil)
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        load_latest(evil.parent)
    done = subprocess.run([sys.executable, "-m", "stackgan", "generate", str(evil), "a red circle",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode == 2 and "not a readable StackGAN training state" in done.stderr
    assert not marker.exists()  # nothing ran, in this process or the CLI's


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels (and holds almost none)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")


def test_odd_images_are_converted_or_refused_by_name(tmp_path):
    gray16 = (np.full((32, 32), 40000)).astype(np.uint16)  # 40000 / 65535 of white
    Image.fromarray(gray16).save(tmp_path / "gray16.png")
    assert abs(int(load_image(tmp_path / "gray16.png", 16).mean()) - 40000 // 256) <= 1  # scaled, not clipped to 255

    Image.new("CMYK", (20, 30), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")  # red in CMYK
    red = load_image(tmp_path / "cmyk.jpg", 16)
    assert red.shape == (3, 16, 16) and red[0].mean() > 200 and red[1].mean() < 60

    pal = Image.new("P", (16, 16), 0)
    pal.putpalette([0, 0, 255] + [0, 0, 0] * 255)
    pal.info["transparency"] = 0  # palette entry 0 (blue) is transparent: white after compositing
    pal.save(tmp_path / "palette.png", transparency=0)
    assert load_image(tmp_path / "palette.png", 16).min() == 255

    Image.new("L", (16, 16), 77).save(tmp_path / "gray.png")
    assert (load_image(tmp_path / "gray.png", 8) == 77).all()

    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "big.png").write_bytes(png_header_only(10000, 10000))  # over PIL's warning limit: refused here
    (tmp_path / "bomb.png").write_bytes(png_header_only(40000, 40000))  # over twice that: PIL refuses it itself
    (tmp_path / "noise.jpg").write_bytes(os.urandom(2000))
    good = (tmp_path / "gray.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(good[:len(good) // 2])
    for name, message in (("empty.png", "not a readable image"), ("noise.jpg", "not a readable image"),
                          ("cut.png", "not a readable image"),
                          ("big.png", "10000 x 10000 pixels is over the limit of 89,478,485"),
                          ("bomb.png", "not a readable image .*decompression bomb")):
        with pytest.raises(DataError, match=message) as info:
            load_image(tmp_path / name, 16)
        assert str(info.value).startswith(str(tmp_path / name))


def test_odd_sentences_never_crash_and_long_ones_warn():
    from stackgan.pipeline import StackGANPipeline
    from stackgan.demo import PRETRAINED_SHAPES

    pipe = StackGANPipeline.load(PRETRAINED_SHAPES)
    odd = ["", "   \t ", "🐦 a bird ‮ reversed", "zero\u200bwidth\x00nul", "漢字 と かな", "a" * 3, "ñ" * 40]
    out = pipe.generate(odd, seed=0, stage=1)
    assert out.stage1.shape == (len(odd), 3, 64, 64) and out.stage2 is None
    with pytest.warns(UserWarning, match="1 caption\\(s\\) longer than the text encoder's 256 tokens were cut"):
        long = pipe.generate(["a red circle " * 400], seed=0, stage=1)
    assert long.stage1.shape == (1, 3, 64, 64)


def test_generate_cli_refuses_empty_and_non_utf8_caption_input(tmp_path):
    from stackgan.demo import PRETRAINED_SHAPES

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "stackgan", "generate", str(PRETRAINED_SHAPES), *args,
                               "--out", str(tmp_path / "out")], capture_output=True, text=True)
    done = cli("   ", "")
    assert done.returncode == 2 and "no captions given" in done.stderr
    (tmp_path / "caps.txt").write_bytes(b"a red circle\n\xff\xfe bad bytes\n")
    done = cli("--captions-file", str(tmp_path / "caps.txt"))
    assert done.returncode == 2 and "caps.txt: not UTF-8" in done.stderr


# --- property-based: the parsers answer any input with a result or their own named error ------

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=4), max_leaves=10)
records = st.fixed_dictionaries({}, optional={
    "image": st.text(max_size=12) | json_values, "captions": st.lists(st.text(max_size=20), max_size=3) | json_values,
    "bbox": st.lists(st.integers(-5, 50) | st.floats(-5, 50), max_size=5) | json_values,
    "attributes": json_values})


@PROPERTY
@given(lines=st.lists(records.map(json.dumps) | st.text(max_size=40), min_size=0, max_size=5))
def test_manifest_parser_property(tmp_path_factory, lines):
    d = tmp_path_factory.mktemp("m")
    (d / "train.jsonl").write_text("\n".join(lines), encoding="utf-8")
    try:
        recs = read_manifest(d, "train")
    except DataError as e:
        assert str(d / "train.jsonl") in str(e)
        return
    assert recs and all(isinstance(r["image"], str) and r["image"] and r["captions"] for r in recs)
    assert all(isinstance(c, str) and c.strip() for r in recs for c in r["captions"])


@PROPERTY
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_caption_file_parser_property(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("c") / "caps.txt"
    path.write_bytes(raw)
    try:
        caps = read_caption_file(path)
    except DataError as e:
        assert str(path) in str(e)
        return
    assert caps and all(isinstance(c, str) and c == " ".join(c.split()) and c for c in caps)


config_keys = st.sampled_from(["seed", "precision", "model.ngf1", "model.ca_variant", "stage1.batch_size",
                               "stage2.lr_g", "stage1.ema_decay", "data.matcher_widths", "data.augment",
                               "stage1.keep_checkpoints", "nope", "model.nope", "stage1", "model..x", ""])


@PROPERTY
@given(items=st.lists(st.tuples(config_keys, st.text(max_size=12) | st.integers(-100, 300).map(str)
                                | st.sampled_from(["true", "[1, 2]", "[]", "-1", "1e-4", "bf16", "{a: 1}"])),
                      max_size=4))
def test_config_override_parser_property(items):
    try:
        cfg = apply_overrides(Config(), [f"{k}={v}" for k, v in items])
    except ConfigError as e:
        assert str(e)
        return
    assert isinstance(cfg, Config) and cfg.stage1.batch_size >= 2 and cfg.model.ngf1 % 2 == 0


@PROPERTY
@given(data=st.dictionaries(st.sampled_from(["model", "stage1", "seed", "data", "junk"]), json_values, max_size=3))
def test_config_dict_parser_property(data):
    try:
        from_dict(data)
    except ConfigError as e:
        assert str(e)
