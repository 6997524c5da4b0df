"""Start a new run from another run's training state or checkpoint with some settings changed: the branch
continues with the same step, weights, optimizers and random state, so that it and the run it left differ
in the changed settings alone from that step on (one variable at a time; ``--resume`` itself keeps a run's own
configuration and ignores ``--set``).

    python experiments/branch_state.py runs/exp/F05t/stage1/checkpoints/step-00006000.pt runs/exp/F05p \\
        --set stage1.outline_phase=true
    stackgan train --stage 1 --data data/shapes --out runs/exp/F05p --resume --max-steps 9000 --minutes 0
"""
from __future__ import annotations

import argparse
from pathlib import Path

from stackgan.checkpoint import load_state, save_state, stage_dir
from stackgan.config import apply_overrides, from_dict, to_dict


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("state", type=Path, help="a training state or checkpoint (RUN/stage<N>/state.pt or checkpoints/*.pt)")
    p.add_argument("out", type=Path, help="the new run folder (its stage<N>/state.pt is written; must not exist)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting to change, as `stackgan train --set` takes it (repeatable)")
    args = p.parse_args()
    state = load_state(args.state)
    out = stage_dir(args.out, int(state["stage"])) / "state.pt"
    if out.exists():
        raise SystemExit(f"{out} exists: choose another run folder (nothing was written)")
    cfg = apply_overrides(from_dict(state["config"]), args.overrides)  # checked as `train --set` checks them
    state["config"] = to_dict(cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_state(out, state)
    print(f"wrote {out} (step {state['step']}; changed: {', '.join(args.overrides) or 'nothing'})")


if __name__ == "__main__":
    main()
