"""Atomic checkpoints: everything a run needs to continue exactly where it stopped.

    path = save_checkpoint(run_dir / "checkpoints", step, model, optimizer, scheduler,
                           state={"sampler": ..., "step": step}, tokenizer=tok, keep=2)
    state = load_checkpoint(latest_checkpoint(run_dir / "checkpoints"), model, optimizer, scheduler)

A checkpoint directory `step_XXXXXX/` holds:
    model/          full fine-tuning: a Hugging Face checkpoint (config, safetensors, tokenizer),
                    loadable on its own: `trajlab eval --model .../model`
    adapter/        LoRA: the peft adapter (adapter_config.json, adapter_model.safetensors)
                    and the tokenizer; `trajlab eval --model .../adapter` merges it into
                    the base model adapter_config.json names
    optimizer.pt    AdamW state;  scheduler.pt: LR scheduler state
    rng.pt          python `random`, numpy and torch RNG states
    trainer_state.json  step, data cursor and anything else the trainer passes in `state`

Atomicity: everything is written into a hidden temporary directory next to the target,
which is renamed into place last (rename is atomic on one filesystem), so a run killed at
any instant (SIGKILL included) leaves either the whole checkpoint or none of it.
`latest_checkpoint` ignores temporary directories and anything without trainer_state.json.

Exactness: weights are stored in their own dtype and loaded back into the live model's
tensors, optimizer and scheduler states round-trip through torch.save, and RNG states are
restored, so training resumed from a checkpoint is bit-identical to a run that never
stopped (tests/test_train_resume.py).

What this module does not do: decide when to checkpoint, or rebuild a model from scratch
(the trainer builds it from the config, then loads the checkpoint into it).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trajlab.models import is_peft

_STEP_RE = re.compile(r"^step_(\d{6,})$")


def step_dir_name(step: int) -> str:
    return f"step_{step:06d}"


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_checkpoint(
    root: str | Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    state: dict[str, Any],
    tokenizer: Any = None,
    keep: int = 0,
) -> Path:
    """Write checkpoint `root/step_XXXXXX` atomically and return its path.

    keep > 0 deletes the oldest complete checkpoints beyond the newest `keep`.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    target = root / step_dir_name(step)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=root))
    try:
        weights = tmp / ("adapter" if is_peft(model) else "model")
        model.save_pretrained(weights)
        if tokenizer is not None:
            tokenizer.save_pretrained(weights)
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        if scheduler is not None:
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng_state(), tmp / "rng.pt")
        # Written last: its presence marks the directory as complete even before the rename.
        (tmp / "trainer_state.json").write_text(json.dumps({**state, "step": step}, indent=2))
        if target.exists():  # a stale copy of the same step (e.g. re-running after a resume)
            shutil.rmtree(target)
        os.rename(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if keep > 0:
        for old in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return target


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under root, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_RE.match(p.name)
        if m and (p / "trainer_state.json").is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(root: str | Path) -> Path | None:
    ckpts = list_checkpoints(root)
    return ckpts[-1] if ckpts else None


def load_weights(path: str | Path, model: torch.nn.Module) -> None:
    """Copy a checkpoint's weights (full model or LoRA adapter) into `model` in place."""
    from safetensors.torch import load_file

    path = Path(path)
    if is_peft(model):
        from peft import set_peft_model_state_dict

        f = path / "adapter" / "adapter_model.safetensors"
        if not f.is_file():
            raise FileNotFoundError(
                f"{path} has no LoRA adapter ({f} missing); was the run trained with model.lora=false?"
            )
        result = set_peft_model_state_dict(model, load_file(f))
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise ValueError(
                f"adapter in {path} does not fit this model: unexpected keys {unexpected[:5]}"
            )
        return
    files = sorted((path / "model").glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(
            f"{path} has no full model weights (model/*.safetensors); was the run trained with model.lora=true?"
        )
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        sd.update(load_file(f))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if unexpected:
        raise ValueError(
            f"checkpoint {path} does not fit this model: unexpected keys {unexpected[:5]}"
        )
    # save_pretrained drops tied weights (e.g. lm_head tied to the embeddings); anything
    # else missing means the checkpoint is from another architecture.
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded_ptrs = {params[k].data_ptr() for k in sd if k in params}
    untied = [k for k in missing if k not in params or params[k].data_ptr() not in loaded_ptrs]
    if untied:
        raise ValueError(f"checkpoint {path} lacks weights for {untied[:5]}")


def load_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and RNG states in place; return trainer_state."""
    path = Path(path)
    state = json.loads((path / "trainer_state.json").read_text())
    load_weights(path, model)
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    if scheduler is not None:
        scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    if restore_rng:
        # numpy's state is a tuple holding an ndarray: not loadable with weights_only.
        set_rng_state(torch.load(path / "rng.pt", weights_only=False))
    return state
