"""The paper's char-CNN-RNN text encoder: shapes, loss, training, embedding and use in training."""
import json
import shutil

import numpy as np
import pytest
import torch

from conftest import TINY
from stackgan.config import apply_overrides, get_preset
from stackgan.text.cache import embed_data
from stackgan.text.char_cnn_rnn import (ALPHABET, MAX_CHARS, CharCnnRnn, joint_embedding_loss, one_hot,
                                        train_char_cnn_rnn)


def test_one_hot_and_the_paper_sizes():
    x = one_hot(["Ab é", "z" * 300])
    assert x.shape == (2, len(ALPHABET), MAX_CHARS)
    assert x[0, ALPHABET.index("a"), 0] == 1 and x[0, ALPHABET.index("b"), 1] == 1  # lower-cased
    assert x[0, :, 2].sum() == 1 and x[0, :, 3].sum() == 0  # space is in the alphabet, é is not
    assert x[1].sum() == MAX_CHARS  # cut to 201
    net = CharCnnRnn(embed_dim=64)
    assert net.cnn(x).shape == (2, 256, 8)  # "about 8 time steps of 256 features"
    assert net(x).shape == (2, 64)


def test_joint_embedding_loss_counts_only_other_classes():
    img = torch.eye(4) * 3
    assert joint_embedding_loss(img, img).item() == 0  # own pairs beat the others by more than the margin
    txt = img.clone()
    txt[1] = torch.tensor([4.0, 3.0, 0.0, 0.0])  # text 1 scores higher with image 0 than image 0's own text
    assert joint_embedding_loss(img, txt).item() == pytest.approx((4 + 4) / 12)  # both directions, 12 pairs
    # images 0 and 1 share a class: that is not a violation
    assert joint_embedding_loss(img, txt, torch.tensor([7, 7, 8, 9])).item() == 0


def test_train_embed_and_use_for_training_and_new_sentences(tiny_shapes, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_shapes, data)
    enc = train_char_cnn_rnn(data, tmp_path / "enc", steps=40, batch_size=16, embed_dim=32, progress=False)
    meta = json.loads((enc / "config.json").read_text())
    assert meta["steps"] == 40 and meta["embed_dim"] == 32
    assert meta["loss_end"] < 0.5 * meta["loss_start"], meta  # the joint embedding is being learned
    written = embed_data(enc, data)
    train = np.load(written[0])
    assert train.shape == (64, 5, 32) and train.dtype == np.float32
    with pytest.raises(FileExistsError, match="--overwrite"):
        embed_data(enc, data)
    from stackgan.text import get_encoder
    vec = get_encoder(f"char-cnn-rnn:{enc}").encode(["a red circle", "a blue star"])
    assert vec.shape == (2, 32) and not torch.allclose(vec[0], vec[1])
    from stackgan.training import train
    from stackgan.pipeline import StackGANPipeline
    cfg = apply_overrides(get_preset("shapes-cpu"), TINY + [f"data.text_encoder=char-cnn-rnn:{enc}",
                                                            "stage1.max_steps=2"])
    train(cfg, data, tmp_path / "run", 1, progress=False)
    pipe = StackGANPipeline.load(tmp_path / "run")
    assert pipe.generate(["a big green square on a black background"]).stage1.shape == (1, 3, 64, 64)
    pre = apply_overrides(cfg, ["data.text_encoder=precomputed"])  # the embed output as precomputed input
    train(pre, data, tmp_path / "run2", 1, progress=False)
