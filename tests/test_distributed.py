"""Data-parallel training: two real processes under torchrun on the CPU (Gloo), and the pieces."""
import os
import subprocess
import sys

import pytest
import torch

from stackgan import distributed
from stackgan.checkpoint import load_state
from stackgan.config import apply_overrides, from_dict, get_preset
from stackgan.models.build import build_discriminator, build_generator
from stackgan.models.patch import PatchCritic
from stackgan.training.data import load_train_data

from conftest import TINY, TINY_ARGS


def torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "stackgan", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def saved_digest(state: dict, stage: int) -> str:
    """The digest of the weights rank 0 saved, recomputed here from the state file."""
    cfg = from_dict(state["config"])
    G, D = build_generator(cfg.model, stage), build_discriminator(cfg.model, stage)
    G.load_state_dict(state["generator"])
    D.load_state_dict(state["discriminator"])
    critic = ""
    if "critic" in state:  # stage<N>.patch_weight's texture critic
        net = PatchCritic(cfg.model.text_dim)
        net.load_state_dict(state["critic"])
        critic = distributed.digest(net)
    return distributed.digest(G) + distributed.digest(D) + critic


def test_two_processes_train_both_stages_in_step_and_resume(tiny_shapes, tmp_path):
    common = ["--data", str(tiny_shapes), "--out", str(tmp_path / "run"), "--preset", "shapes-cpu",
              "--device", "cpu", "--no-progress", *TINY_ARGS]
    out = torchrun("train", "--stage", "1", "--max-steps", "3", *common).stdout
    assert "on 2 processes (replica weights identical)" in out
    assert out.count("stage 1: 3 steps") == 1  # rank 0 alone reports (and writes)

    s1 = load_state(tmp_path / "run" / "stage1" / "state.pt")
    assert s1["step"] == 3 and s1["world_size"] == 2 and len(s1["rng_ranks"]) == 2
    assert not torch.equal(s1["rng_ranks"][0]["rng_cpu"], s1["rng_ranks"][1]["rng_cpu"])  # own noise per rank
    first, second = s1["replica_digests"]
    assert first == second == saved_digest(s1, 1)  # both replicas hold exactly the weights saved

    torchrun("train", "--stage", "1", "--max-steps", "5", "--resume", *common)
    resumed = load_state(tmp_path / "run" / "stage1" / "state.pt")
    assert resumed["step"] == 5
    assert resumed["replica_digests"][0] == resumed["replica_digests"][1] == saved_digest(resumed, 1)
    assert resumed["replica_digests"][0] != first

    torchrun("train", "--stage", "2", "--max-steps", "2", "--set", "stage2.patch_weight=1", "--set", "stage2.patch_r1=1",
             *common)
    s2 = load_state(tmp_path / "run" / "stage2" / "state.pt")
    assert s2["step"] == 2 and s2["world_size"] == 2
    assert s2["replica_digests"][0] == s2["replica_digests"][1] == saved_digest(s2, 2)


def test_ranks_get_disjoint_shares_of_the_global_batch(tiny_shapes):
    cfg = get_preset("shapes-cpu").data
    data, _ = load_train_data(tiny_shapes, cfg, 64, progress=False)
    whole, _, _ = data.batch(0, 16)  # one process, batch 16 = the two ranks' 8 + 8
    r0, _, _ = data.batch(0, 8, rank=0, world=2)
    r1, _, _ = data.batch(0, 8, rank=1, world=2)
    assert torch.equal(torch.cat([r0, r1]), whole)
    assert torch.equal(data.batch(1, 8, 0, 2)[0], data.batch(1, 16)[0][:8])  # the next step as well
    with pytest.raises(ValueError, match="x 16 processes is larger than the data set"):
        data.batch(0, 8, rank=0, world=16)


def test_digest_changes_with_any_weight():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    before = distributed.digest(net)
    assert distributed.digest(net) == before
    with torch.no_grad():
        net[1].bias[0] += 1e-6
    assert distributed.digest(net) != before


def test_one_process_without_launcher_is_world_one(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info, device = distributed.setup("cpu")
    assert (info.rank, info.world, info.main) == (0, 1, True) and device.type == "cpu"
    assert distributed.gather(info, 5) == [5] and distributed.any_rank(info, True, device)


def test_sync_batchnorm_on_cpu_is_refused_by_name(tiny_shapes, tmp_path):
    from stackgan.training import train

    cfg = apply_overrides(get_preset("shapes-cpu"), TINY + ["sync_batchnorm=true", "stage1.max_steps=1"])
    with pytest.raises(ValueError, match="sync_batchnorm=true needs CUDA"):
        train(cfg, tiny_shapes, tmp_path / "run", 1, device="cpu", progress=False)


def test_cuda_device_choice_without_a_gpu(monkeypatch):
    """The GPU path of setup(), run on the CPU: one process takes plain "cuda"; under torchrun each
    process takes cuda:LOCAL_RANK and makes it current."""
    from torch.cuda._utils import _get_device_index

    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: chosen.append(_get_device_index(d)))  # raises on "cuda"
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info, device = distributed.setup(None)
    assert (info.world, str(device), chosen) == (1, "cuda", [])
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: 1)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 2)
    info, device = distributed.setup(None)
    assert (info.rank, info.world, info.local_rank, str(device), chosen) == (1, 2, 1, "cuda:1", [1])
    distributed.exit_process(3)  # returns: setup joined a group it did not create (exiting would end pytest with 3)
