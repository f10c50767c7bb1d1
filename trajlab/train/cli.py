"""Command lines of `trajlab train` and `trajlab sft` (wired into trajlab/cli.py).

    trajlab train configs/grpo.yaml optim.lr=1e-6 steps=50 out=runs/grpo
    trajlab train configs/quickstart.yaml --print-config        # the resolved config, then exit
    trajlab sft --data runs/x/trajectories.jsonl --model default --out runs/sft epochs=2

`train` takes one YAML file of TrainConfig fields (see trajlab/train/config.py and
docs/training.md) and any number of `key=value` overrides with dotted keys. Running the
same command on an existing run directory resumes it from its newest checkpoint.
`python -m trajlab.train.cli CONFIG.yaml ...` is the same as `trajlab train`.

Both modules expose `configure(parser)` and `main(args)`: this one for `train`, and
trajlab/train/sft.py (delegating here) for `sft`.
"""

from __future__ import annotations

import argparse
import sys


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="YAML file of TrainConfig fields (configs/*.yaml)")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted overrides, e.g. optim.lr=1e-6 rollout.group_size=8 agent.tools=[python]",
    )
    p.add_argument("--out", help="run directory (same as out=DIR); an existing run is resumed")
    p.add_argument("--steps", type=int, help="RL steps (same as steps=N)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def main(args: argparse.Namespace) -> int:
    import yaml

    from trajlab.config import to_dict
    from trajlab.train.config import load_train_config
    from trajlab.train.rl import train

    overrides = list(args.overrides or [])
    if args.config and "=" in args.config:  # no YAML file, only overrides
        overrides.insert(0, args.config)
        args.config = None
    if args.out:
        overrides.append(f"out={args.out}")
    if args.steps is not None:
        overrides.append(f"steps={args.steps}")
    config = load_train_config(args.config, overrides)
    if args.print_config:
        print(yaml.safe_dump(to_dict(config), sort_keys=False))
        return 0
    result = train(config, argv=["trajlab", "train", *sys.argv[2:]])
    print(f"run written to {result['run_dir']} (metrics.jsonl, trajectories/, checkpoints/)")
    from trajlab.cli import trajlab_command

    print(f"open it with: {trajlab_command()} view {result['run_dir']}")
    return 0


def configure_sft(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="SFTConfig overrides, e.g. optim.lr=1e-5"
    )
    p.add_argument("--config", help="YAML file of SFTConfig fields")
    p.add_argument("--data", action="append", default=[], help="trajectory JSONL (repeatable)")
    p.add_argument("--model", help="model spec (default: the default model)")
    p.add_argument("--out", help="run directory")
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--max-steps", type=int)
    p.add_argument(
        "--lora", action="store_true", help="train a LoRA adapter (merged into OUT/model)"
    )
    p.add_argument(
        "--all", action="store_true", help="also train on trajectories not scored correct"
    )


def main_sft(args: argparse.Namespace) -> int:
    from trajlab.train.config import load_sft_config
    from trajlab.train.sft import sft

    overrides = list(args.overrides or [])
    if args.data:
        overrides.append("data=[" + ",".join(f'"{d}"' for d in args.data) + "]")
    for flag, key in (
        ("model", "model.model"),
        ("out", "out"),
        ("epochs", "epochs"),
        ("lr", "optim.lr"),
        ("batch_size", "batch_size"),
        ("max_steps", "max_steps"),
    ):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    if args.lora:
        overrides.append("model.lora=true")
    if args.all:
        overrides.append("only_correct=false")
    config = load_sft_config(args.config, overrides)
    if not config.data:
        from trajlab.config import ConfigError

        raise ConfigError("sft needs trajectories: pass --data FILE.jsonl (or data=[...])")
    result = sft(config, argv=["trajlab", "sft", *sys.argv[2:]])
    print(f"model written to {result['model_dir']}; run in {result['run_dir']}")
    return 0


def _standalone(argv: list[str] | None = None) -> int:
    from trajlab.config import ConfigError

    p = argparse.ArgumentParser(prog="python -m trajlab.train.cli", description="trajlab train")
    configure(p)
    args = p.parse_args(argv)
    try:
        return main(args)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(_standalone())
