"""`trajlab train`: reinforcement learning from a YAML recipe.

    trajlab train configs/grpo.yaml optim.lr=1e-6 steps=50 out=runs/grpo
    trajlab train configs/quickstart.yaml --print-config        # the resolved config, then exit
    trajlab train steps=3 agent.tools=[python]                  # no YAML file: defaults + overrides

`train` takes one YAML file of TrainConfig fields (see trajlab/train/config.py and
docs/training.md) and any number of `key=value` overrides with dotted keys, the override
style of every trajlab command (trajlab/flags.py). Running the same command on an
existing run directory resumes it from its newest checkpoint.
`python -m trajlab.train.cli CONFIG.yaml ...` is the same as `trajlab train`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def configure(p: argparse.ArgumentParser) -> None:
    from trajlab.flags import add_overrides

    p.add_argument("config", nargs="?", help="YAML file of TrainConfig fields (configs/*.yaml)")
    add_overrides(p, "optim.lr=1e-6 rollout.group_size=8 agent.tools=[python]")
    p.add_argument("--out", help="run directory (same as out=DIR); an existing run is resumed")
    p.add_argument("--steps", type=int, help="RL steps (same as steps=N)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def main(args: argparse.Namespace) -> int:
    import yaml

    from trajlab.build import benchmark_defaults
    from trajlab.config import to_dict
    from trajlab.flags import resolve, split_config_arg, trajlab_command
    from trajlab.train.config import TrainConfig
    from trajlab.train.rl import train

    split_config_arg(args)
    flags = {k: v for k in ("out", "steps") if (v := getattr(args, k)) is not None}
    config = resolve(
        TrainConfig, args, flags=flags, defaults=benchmark_defaults("data.task", "reward.weights")
    )
    if args.print_config:
        print(yaml.safe_dump(to_dict(config), sort_keys=False))
        return 0
    if not (args.config or args.overrides or flags):
        print(plan(config))
        return 0
    result = train(config, argv=["trajlab", "train", *sys.argv[2:]])
    print(f"run written to {result['run_dir']} (metrics.jsonl, trajectories/, checkpoints/)")
    print(f"open it with: {trajlab_command()} view {result['run_dir']}")
    return 0


def plan(config: Any) -> str:
    """What `trajlab train` with nothing else would run, and how to start a run."""
    from pathlib import Path

    from trajlab.flags import trajlab_command

    r, d, a = config.rollout, config.data, config.agent
    cmd = f"{trajlab_command()} train"
    recipes = Path(__file__).resolve().parents[2] / "configs"
    lines = [
        "trajlab train runs an RL recipe; none was given, so nothing was started.",
        f"The defaults would run {config.algo.advantage.upper()} on {d.task} ({d.split} split, "
        f"{d.size} examples) from model {config.model.model!r}: {config.steps} steps of "
        f"{r.prompts_per_step} prompts x {r.group_size} samples, tools "
        f"{', '.join(a.tools) or 'none'} ({a.protocol} protocol), into runs/train-<time>.",
        "Start a run:",
    ]
    if (recipes / "quickstart.yaml").is_file():
        lines.append(f"  {cmd} configs/quickstart.yaml out=runs/quickstart   # short recipe")
        lines.append(
            f"  {cmd} configs/zero_rl_arith.yaml out=runs/zero_rl   # the measured zero-RL run"
        )
    lines += [
        f"  {cmd} out=runs/my_run          # the defaults above (any KEY=VALUE or flag starts a run)",
        f"  {cmd} --print-config           # every setting with its value, then exit",
        "Recipes and every key: docs/training.md.",
    ]
    return "\n".join(lines)


def _standalone(argv: list[str] | None = None) -> int:
    from trajlab.cli import main as trajlab_main

    return trajlab_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(_standalone())
