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
    from trajlab.config import field_help
    from trajlab.flags import add_overrides, with_default
    from trajlab.train.config import SFTConfig

    sft, defaults = field_help(SFTConfig), SFTConfig()
    add_overrides(p, "optim.lr=1e-5 max_length=1024")
    p.add_argument("--config", help="YAML file of SFTConfig fields; flags override it")
    p.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="FILE",
        help="trajectories JSONL, e.g. a run's trajectories.jsonl (repeatable; required)",
    )
    p.add_argument(
        "--model",
        help="model to fine-tune: 'default', a HF model directory or a .gguf file "
        "(default: default)",
    )
    p.add_argument("--out", help=with_default(sft["out"], ""))
    for name, tp, text, default in (
        ("epochs", int, sft["epochs"], 1),
        ("lr", float, "peak learning rate of AdamW", defaults.optim.lr),
        ("batch_size", int, sft["batch_size"], defaults.batch_size),
        ("max_steps", int, sft["max_steps"], 0),
    ):
        p.add_argument("--" + name.replace("_", "-"), type=tp, help=with_default(text, default))
    p.add_argument(
        "--lora",
        action="store_true",
        help="train a LoRA adapter, merged into OUT/model (default: off)",
    )
    p.add_argument(
        "--all",
        action="store_true",
        help="also train on trajectories not scored correct (default: only correct ones)",
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
