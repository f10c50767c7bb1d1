"""The trainable policy and its optimizer, shared by `trajlab train` and `trajlab sft`.

    model, tok = load_trainable(cfg.model)                 # LoRA and checkpointing as asked
    optimizer, scheduler = adamw(params, cfg.optim, total_updates)

What it does not do: load a frozen reference model (the RL trainer does, when KL is on).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from trajlab.train.config import ModelConfig, OptimConfig


def load_trainable(m: ModelConfig) -> tuple[torch.nn.Module, Any]:
    """(model, tokenizer) of `m.model`, with a LoRA adapter when `m.lora` and gradient
    checkpointing when asked (generation keeps its KV cache)."""
    from trajlab.build import load_policy
    from trajlab.models import enable_checkpointing

    model, tok = load_policy(m.model, m.dtype)
    if m.gradient_checkpointing:
        enable_checkpointing(model)
        model.config.use_cache = True
    if m.lora:
        from peft import LoraConfig, get_peft_model

        lcfg = LoraConfig(
            r=m.lora_r,
            lora_alpha=m.lora_alpha,
            lora_dropout=m.lora_dropout,
            target_modules=list(m.lora_targets),
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lcfg)
    return model, tok


def adamw(
    params: list[torch.nn.Parameter], o: OptimConfig, total_updates: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with the learning-rate schedule of `o` over `total_updates` optimizer steps."""
    # foreach=False: the multi-tensor kernel builds temporaries the size of all parameters
    # at once (+0.2 GiB peak for the 135M model, for no measurable speed on CPU).
    optimizer = torch.optim.AdamW(
        params,
        lr=o.lr,
        betas=(o.beta1, o.beta2),
        eps=o.eps,
        weight_decay=o.weight_decay,
        foreach=False,
    )
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(o, total_updates))


def lr_lambda(o: OptimConfig, total: int) -> Callable[[int], float]:
    """Linear warmup to 1, then constant, linear or cosine decay to min_lr_ratio."""

    def f(s: int) -> float:
        if o.warmup_steps > 0 and s < o.warmup_steps:
            return (s + 1) / o.warmup_steps
        if o.schedule == "constant":
            return 1.0
        span = max(total - o.warmup_steps, 1)
        frac = min(max(s - o.warmup_steps, 0) / span, 1.0)
        shape = 1.0 - frac if o.schedule == "linear" else 0.5 * (1 + math.cos(math.pi * frac))
        return o.min_lr_ratio + (1.0 - o.min_lr_ratio) * shape

    return f
