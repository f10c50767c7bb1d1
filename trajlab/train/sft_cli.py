"""`trajlab sft`: supervised fine-tuning on trajectories (trajlab/train/sft.py).

    trajlab sft --data runs/x/trajectories.jsonl --model default --out runs/sft epochs=2
    trajlab sft --config my_sft.yaml optim.lr=1e-5 --lora

Settings come from an optional YAML file of SFTConfig fields (`--config`), then the flags
below, then `key=value` overrides with dotted keys (trajlab/flags.py).
"""

from __future__ import annotations

import argparse
import sys

# flag -> SFTConfig key it sets
_FLAGS = {
    "model": "model.model",
    "out": "out",
    "epochs": "epochs",
    "lr": "optim.lr",
    "batch_size": "batch_size",
    "max_steps": "max_steps",
}


def configure(p: argparse.ArgumentParser) -> None:
    from trajlab.flags import add_overrides

    add_overrides(p, "optim.lr=1e-5 max_length=1024")
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


def _flag_values(args: argparse.Namespace) -> dict:
    from trajlab.flags import set_key

    given = {key: getattr(args, flag) for flag, key in _FLAGS.items()}
    given["data"] = list(args.data) or None
    given["model.lora"] = True if args.lora else None
    given["only_correct"] = False if args.all else None
    out: dict = {}
    for key, value in given.items():
        if value is not None:
            set_key(out, key, value)
    return out


def main(args: argparse.Namespace) -> int:
    from trajlab.config import ConfigError
    from trajlab.flags import resolve
    from trajlab.train.config import SFTConfig
    from trajlab.train.sft import sft

    config = resolve(SFTConfig, args, flags=_flag_values(args))
    if not config.data:
        raise ConfigError("sft needs trajectories: pass --data FILE.jsonl (or data=[...])")
    result = sft(config, argv=["trajlab", "sft", *sys.argv[2:]])
    print(f"model written to {result['model_dir']}; run in {result['run_dir']}")
    return 0
