"""Exact resume: real training processes killed with SIGKILL (mid-step and mid-checkpoint-write),
then resumed, end with the same bits as an uninterrupted run; full disks and signals."""
import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from stackgan.checkpoint import CheckpointError, load_state, write_checkpoint

from conftest import TINY_ARGS

STEPS = {1: 60, 2: 24}  # long enough that a kill after the second checkpoint lands mid-run
EVERY = {1: 4, 2: 3}


def command(data, run, stage: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "stackgan", "train", "--stage", str(stage), "--data", str(data), "--out", str(run),
            "--preset", "shapes-cpu", "--device", "cpu", "--no-progress", "--seed", "3", "--deterministic",
            "--checkpoint-every", str(EVERY[stage]), "--max-steps", str(STEPS[stage]), *TINY_ARGS, *extra]


ENV = {**os.environ, "OMP_NUM_THREADS": "2"}


def run(cmd: list[str], ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    assert done.returncode in ok, done.stderr[-3000:]
    return done


def same_state(a: dict, b: dict) -> None:
    """Every tensor of two training states equal bit for bit (weights, EMA, optimizers, scalers)."""
    for key in ("generator", "discriminator", "opt_g", "opt_d", "text_norm", "rng_cpu"):
        flat_a, flat_b = torch.utils._pytree.tree_flatten(a[key])[0], torch.utils._pytree.tree_flatten(b[key])[0]
        assert len(flat_a) == len(flat_b)
        for x, y in zip(flat_a, flat_b):
            assert torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y, key
    assert a["step"] == b["step"]


@pytest.fixture(scope="module")
def straight1(tiny_shapes, tmp_path_factory):
    """Stage I trained straight through: what the killed and resumed Stage-I runs must end equal to,
    and the Stage I that the Stage-II runs start from."""
    straight = tmp_path_factory.mktemp("straight1")
    run(command(tiny_shapes, straight, 1))
    return straight


@pytest.mark.parametrize("stage", [1, 2])
def test_sigkill_mid_step_then_resume_is_bit_identical(stage, tiny_shapes, straight1, tmp_path):
    straight, killed = (straight1 if stage == 1 else tmp_path / "straight"), tmp_path / "killed"
    if stage == 2:
        for d in (straight, killed):
            shutil.copytree(straight1 / "stage1", d / "stage1")
        run(command(tiny_shapes, straight, stage))

    proc = subprocess.Popen(command(tiny_shapes, killed, stage), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=ENV)
    second = killed / f"stage{stage}" / "checkpoints" / f"step-{2 * EVERY[stage]:08d}.pt"
    deadline = time.monotonic() + 300
    while not second.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(random.uniform(0.0, 0.3))
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # killed before it finished
    at_kill = load_state(killed / f"stage{stage}" / "state.pt")["step"]
    assert 2 * EVERY[stage] <= at_kill < STEPS[stage]

    run(command(tiny_shapes, killed, stage, "--resume"))
    same_state(load_state(killed / f"stage{stage}" / "state.pt"), load_state(straight / f"stage{stage}" / "state.pt"))


def test_sigkill_mid_checkpoint_write_leaves_the_previous_one(tiny_shapes, straight1, tmp_path):
    """The process dies (SIGKILL) half-way through writing its second checkpoint."""
    killed = tmp_path / "killed"
    dying = ("import os, signal, sys, torch\n"
             "import stackgan.checkpoint as c\n"
             "calls = []\n"
             "def save(obj, f):\n"
             "    calls.append(1)\n"
             "    if len(calls) < 2:\n"
             "        return torch.save(obj, f)\n"
             "    with open(f, 'wb') as out:\n"
             "        out.write(b'PK' + b'x' * 5000)\n"
             "        out.flush()\n"
             "    os.kill(os.getpid(), signal.SIGKILL)\n"
             "c.torch = type('T', (), {'save': staticmethod(save), 'load': staticmethod(torch.load)})\n"
             "from stackgan.cli import main\n"
             "sys.exit(main(sys.argv[1:]))\n")
    cmd = command(tiny_shapes, killed, 1)
    assert run([sys.executable, "-c", dying, *cmd[3:]], ok=(-signal.SIGKILL,))
    stage = killed / "stage1"
    assert list(stage.glob(".state.pt.*.tmp"))  # the half-written file, never renamed into place
    assert load_state(stage / "state.pt")["step"] == EVERY[1]  # the first checkpoint, whole

    resumed = run(command(tiny_shapes, killed, 1, "--resume"))
    assert not list(stage.glob(".state.pt.*.tmp"))
    same_state(load_state(stage / "state.pt"), load_state(straight1 / "stage1" / "state.pt"))
    assert "error" not in resumed.stderr.lower()


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    state = {"step": 4, "config": {}, "w": torch.arange(3.0)}
    write_checkpoint(tmp_path, state, keep=3)
    before = (tmp_path / "state.pt").read_bytes()

    def full(obj, f):
        with open(f, "wb") as out:
            out.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("stackgan.checkpoint.torch.save", full)
    with pytest.raises(CheckpointError, match="step-8 checkpoint .*No space left on device.*previous checkpoint"):
        write_checkpoint(tmp_path, {**state, "step": 8}, keep=3)
    assert (tmp_path / "state.pt").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints", "state.pt"]  # no temp file left
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000004.pt"]


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    for step in range(1, 6):
        write_checkpoint(tmp_path, {"step": step, "w": torch.full((2,), float(step))}, keep=2)
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert kept == ["step-00000004.pt", "step-00000005.pt"]
    assert torch.equal(torch.load(tmp_path / "checkpoints" / kept[0])["w"], torch.full((2,), 4.0))
    newest = tmp_path / "checkpoints" / kept[1]  # a copy of state.pt, not a link: damage to one spares the other
    assert not os.path.samefile(tmp_path / "state.pt", newest)
    assert newest.read_bytes() == (tmp_path / "state.pt").read_bytes()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_write_a_checkpoint_and_exit_cleanly(sig, tiny_shapes, tmp_path):
    cmd = command(tiny_shapes, tmp_path, 1)
    cmd[cmd.index("--max-steps") + 1] = "100000"
    cmd[cmd.index("--checkpoint-every") + 1] = "100000"  # so any checkpoint is the one the signal wrote
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    samples = tmp_path / "stage1" / "tb"
    deadline = time.monotonic() + 300
    while not samples.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-2000:]
    assert f"stopped by {signal.Signals(sig).name} at step" in err and "Traceback" not in err
    state = load_state(tmp_path / "stage1" / "state.pt")
    assert 0 < state["step"] < 100000


def test_resume_says_its_set_is_ignored_and_a_branch_takes_it(tiny_shapes, straight1, tmp_path):
    """--resume keeps the run's saved configuration and says so when --set was given; experiments/branch_state.py
    writes a new run from a checkpoint with the setting changed (same step and weights), which then resumes."""
    run_dir = tmp_path / "run"
    shutil.copytree(straight1 / "stage1", run_dir / "stage1")
    done = run(command(tiny_shapes, run_dir, 1, "--resume", "--set", "stage1.lr_g=0.00001"))
    assert "--set stage1.lr_g=0.00001 changes nothing" in done.stdout
    assert load_state(run_dir / "stage1" / "state.pt")["config"]["stage1"]["lr_g"] != 0.00001
    branch = tmp_path / "branch"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run([sys.executable, os.path.join(root, "experiments", "branch_state.py"), str(straight1 / "stage1" / "state.pt"),
         str(branch), "--set", "stage1.lr_g=0.00001"])
    a, b = load_state(straight1 / "stage1" / "state.pt"), load_state(branch / "stage1" / "state.pt")
    assert b["config"]["stage1"]["lr_g"] == 0.00001 and b["step"] == a["step"]
    assert all(torch.equal(a["generator"][k], b["generator"][k]) for k in a["generator"])
    with pytest.raises(AssertionError, match="exists"):  # never over an existing run
        run([sys.executable, os.path.join(root, "experiments", "branch_state.py"),
             str(straight1 / "stage1" / "state.pt"), str(branch)])
    resumed = run(command(tiny_shapes, branch, 1, "--resume", "--max-steps", str(STEPS[1] + 2)))
    assert load_state(branch / "stage1" / "state.pt")["step"] == STEPS[1] + 2
