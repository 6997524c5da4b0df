import json

import numpy as np
import pytest
import torch
from PIL import Image

from stackgan.data.manifest import DataError, load_images, read_manifest
from stackgan.text import get_encoder
from stackgan.text.cache import caption_embeddings


def _write(tmp_path, lines, images=True):
    if images:
        (tmp_path / "img").mkdir(exist_ok=True)
        Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).save(tmp_path / "img" / "a.png")
        Image.fromarray(np.full((32, 32), 50, np.uint8), mode="L").save(tmp_path / "img" / "b.png")
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path


GOOD = [json.dumps({"image": "img/a.png", "captions": ["a gray thing", "another"]}),
        json.dumps({"image": "img/b.png", "captions": ["a dark square"], "attributes": {"shape": "square"}})]


def test_generic_manifest_loads_any_image(tmp_path):
    d = _write(tmp_path, GOOD)
    recs = read_manifest(d, "train")
    imgs = load_images(d, "train", recs, 16, progress=False)
    assert imgs.shape == (2, 3, 16, 16) and imgs.dtype.is_floating_point is False
    assert int(imgs[0].float().mean()) == 200 and int(imgs[1].float().mean()) == 50  # grayscale -> RGB
    cache = list((d / ".stackgan-cache").glob("images-train-16.npy"))
    assert cache and np.array_equal(load_images(d, "train", recs, 16, progress=False).numpy(), imgs.numpy())
    # a part of the split (a judge reads the first images) is cached beside the whole split's file, not over it
    whole = cache[0].read_bytes()
    first = load_images(d, "train", recs[:1], 16, progress=False)
    assert first.shape == (1, 3, 16, 16) and cache[0].read_bytes() == whole
    assert len(list((d / ".stackgan-cache").glob("images-train-16-*.npy"))) == 1


@pytest.mark.parametrize("line, message", [
    ("{not json", "line 2: not valid JSON"),
    (json.dumps({"captions": ["x"]}), "line 2: field 'image'"),
    (json.dumps({"image": "img/a.png", "captions": []}), "line 2: field 'captions'"),
    (json.dumps({"image": "img/a.png", "captions": ["  "]}), "line 2: field 'captions' holds an empty caption"),
    (json.dumps([1, 2]), "line 2: expected a JSON object"),
])
def test_bad_manifest_lines_are_named(tmp_path, line, message):
    d = _write(tmp_path, [GOOD[0], line])
    with pytest.raises(DataError, match=message):
        read_manifest(d, "train")


def test_missing_and_broken_images_are_named(tmp_path):
    d = _write(tmp_path, [json.dumps({"image": "img/missing.png", "captions": ["x"]})])
    with pytest.raises(DataError, match="missing.png: image file not found"):
        load_images(d, "train", read_manifest(d, "train"), 16, progress=False)
    (d / "img" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (d / "train.jsonl").write_text(json.dumps({"image": "img/bad.png", "captions": ["x"]}) + "\n")
    with pytest.raises(DataError, match="bad.png: not a readable image"):
        load_images(d, "train", read_manifest(d, "train"), 16, progress=False)


def test_missing_manifest_and_non_utf8(tmp_path):
    with pytest.raises(DataError, match="no such manifest"):
        read_manifest(tmp_path, "train")
    (tmp_path / "train.jsonl").write_bytes(b'{"image": "a.png", "captions": ["caf\xe9"]}\n')
    with pytest.raises(DataError, match="not UTF-8"):
        read_manifest(tmp_path, "train")


def test_caption_embeddings_are_cached_and_refreshed(tmp_path):
    enc = get_encoder("minilm")
    caps = [["a red circle", "a blue square"], ["a green star"]]
    emb, counts = caption_embeddings(tmp_path, "train", caps, enc, progress=False)
    assert emb.shape == (2, 2, enc.dim) and counts.tolist() == [2, 1]
    assert abs(emb[0, 0].norm().item() - 1.0) < 1e-4
    direct = enc.encode(["a green star"])
    assert (emb[1, 0] - direct[0]).abs().max() < 1e-5
    cache = next(tmp_path.glob(".stackgan-cache/text-train-*.safetensors"))
    stamp = cache.stat().st_mtime_ns
    caption_embeddings(tmp_path, "train", caps, enc, progress=False)
    assert cache.stat().st_mtime_ns == stamp  # reused
    caps[1][0] = "a yellow star"
    emb2, _ = caption_embeddings(tmp_path, "train", caps, enc, progress=False)
    assert not np.allclose(emb2[1, 0].numpy(), emb[1, 0].numpy())  # captions changed: recomputed


def test_an_encoder_trained_again_into_its_folder_has_the_captions_encoded_again(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from stackgan.text import encoders
    from stackgan.text.char_cnn_rnn import ALPHABET, FORMAT_VERSION, CharCnnRnn, CharCnnRnnEncoder

    folder = tmp_path / "enc"
    folder.mkdir()
    name, caps = f"char-cnn-rnn:{folder}", [["a red circle", "a blue star"]]

    def train_into_folder(seed):  # what `stackgan text-encoder train` leaves there, with random weights
        torch.manual_seed(seed)
        save_file({k: v.contiguous() for k, v in CharCnnRnn(8).state_dict().items()}, str(folder / "model.safetensors"))
        (folder / "config.json").write_text(json.dumps({"format_version": FORMAT_VERSION, "alphabet": ALPHABET,
                                                        "embed_dim": 8}))
        monkeypatch.setattr(encoders, "_CACHE", {})  # a new process

    train_into_folder(0)
    first, _ = caption_embeddings(tmp_path / "data", "train", caps, name, progress=False)
    train_into_folder(1)
    again, _ = caption_embeddings(tmp_path / "data", "train", caps, name, progress=False)
    assert not torch.allclose(first, again)
    assert torch.allclose(again[0], CharCnnRnnEncoder(folder).encode(caps[0]))  # the new weights' vectors
