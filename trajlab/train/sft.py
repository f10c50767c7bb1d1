"""Supervised fine-tuning on trajectories, with the ledger's loss masks: `trajlab sft`.

    trajlab sft --data runs/x/trajectories.jsonl --model default --out runs/sft --epochs 2 --lr 1e-5
    python -c "from trajlab.train.sft import sft; ..."      # sft(SFTConfig(...), trajectories=[...])

Loss: masked negative log-likelihood of the stored token ids,
    L = - sum_{i,t} m_{i,t} log p(y_{i,t} | y_{i,<t}) / sum_{i,t} m_{i,t}
with m = Trajectory.loss_mask: 1 on model tokens, 0 on prompt, template and tool tokens, so
the model learns to write calls and answers but never to predict the interpreter's output
(as SimpleDeepSearcher's SFT labels result segments -100, and R1-Searcher++'s masked NLL).
Logprobs come from trajlab.models.token_logprobs on the ids as stored: nothing is
re-tokenised, so SFT trains on exactly the tokens an RL run (or the demo's builder) wrote.

Used for cold starts: teach a small model the protocol's call format before RL (the demo
does this on programmatically built trajectories). The result is written as a Hugging Face
model directory (or a LoRA adapter) under OUT/model, loadable by `trajlab train` and
`trajlab eval`, plus metrics.jsonl and checkpoints as in a training run.

What it does not do: pack several trajectories into one sequence, or weight tokens.
"""

from __future__ import annotations

import datetime as _dt
import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from trajlab.config import ConfigError, to_dict
from trajlab.models import autocast_context, token_logprobs
from trajlab.rundir import failure_recorded, start_or_resume, update_run_json
from trajlab.threads import ThreadGovernor
from trajlab.train.checkpoint import save_checkpoint
from trajlab.train.config import SFTConfig
from trajlab.train.policy import adamw, load_trainable
from trajlab.types import Trajectory, read_jsonl


def is_correct(t: Trajectory) -> bool:
    if "correct" in t.metadata:
        return bool(t.metadata["correct"])
    return t.reward is not None and t.reward.total > 0


def load_sft_data(cfg: SFTConfig) -> list[Trajectory]:
    trajs: list[Trajectory] = []
    for path in cfg.data:
        if not Path(path).is_file():
            raise ConfigError(f"sft data file {path} does not exist")
        trajs += read_jsonl(path)
    return trajs


def select(cfg: SFTConfig, trajs: list[Trajectory]) -> tuple[list[Trajectory], dict[str, int]]:
    """Keep correct (if asked), short-enough trajectories that have trained tokens."""
    kept, dropped = [], {"incorrect": 0, "too_long": 0, "no_model_tokens": 0}
    for t in trajs:
        if cfg.only_correct and not is_correct(t):
            dropped["incorrect"] += 1
        elif len(t.token_ids) > cfg.max_length:
            dropped["too_long"] += 1
        elif not any(t.loss_mask):
            dropped["no_model_tokens"] += 1
        else:
            kept.append(t)
    return kept, dropped


def sft_loss(model: torch.nn.Module, trajs: list[Trajectory], pad_id: int, denominator: float):
    """Masked NLL summed over a micro-batch and divided by the whole batch's trained tokens."""
    T = max(len(t.token_ids) for t in trajs)
    ids = torch.full((len(trajs), T), pad_id, dtype=torch.long)  # [B, T]
    attn = torch.zeros(len(trajs), T, dtype=torch.long)  # [B, T]
    mask = torch.zeros(len(trajs), T, dtype=torch.float32)  # [B, T]
    for b, t in enumerate(trajs):
        n = len(t.token_ids)
        ids[b, :n] = torch.tensor(t.token_ids)
        attn[b, :n] = 1
        mask[b, :n] = torch.tensor(t.loss_mask, dtype=torch.float32)
    start = min(t.prompt_length for t in trajs)
    lp = token_logprobs(model, ids, attn, start=start)  # [B, T]
    # torch.where, not lp * mask: a masked position contributes exactly 0 and gets 0 gradient.
    nll = -torch.where(mask.bool(), lp, torch.zeros((), dtype=lp.dtype)).sum() / denominator
    return nll, lp


def sft(
    cfg: SFTConfig, trajectories: list[Trajectory] | None = None, argv: list[str] | None = None
) -> dict[str, Any]:
    """Fine-tune cfg.model on the trajectories; return final metrics plus `run_dir`/`model_dir`."""
    out = Path(cfg.out or f"runs/sft-{_dt.datetime.now():%Y%m%d-%H%M%S}")
    torch.manual_seed(cfg.seed)
    data, dropped = _training_data(cfg, trajectories)
    check_tokenizer(data, cfg.model.model)
    start_or_resume(out, "sft", to_dict(cfg), "config.json", (), argv, can_resume=False)
    with failure_recorded(out):
        return _fine_tune(cfg, data, dropped, out)


def _fine_tune(
    cfg: SFTConfig, data: list[Trajectory], dropped: dict[str, int], out: Path
) -> dict[str, Any]:
    t_start = time.perf_counter()
    model, tok = load_trainable(cfg.model)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    steps_per_epoch = (len(data) + cfg.batch_size - 1) // cfg.batch_size
    total = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    optimizer, scheduler = adamw(params, cfg.optim, total)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    if cfg.progress:
        print(f"sft: {len(data)} trajectories ({dropped}), {total} steps -> {out}", flush=True)

    last: dict[str, Any] = {}
    metrics_path = out / "metrics.jsonl"
    metrics_path.write_text("")
    threads = ThreadGovernor(cfg.threads)
    for step, (epoch, batch) in enumerate(_batches(cfg, data, total), start=1):
        threads.adjust()
        last = {"step": step, "time": time.time(), "epoch": epoch}
        last |= sft_step(model, params, optimizer, scheduler, batch, pad_id, cfg)
        with open(metrics_path, "a") as f:
            f.write(json.dumps(last) + "\n")
        if cfg.progress:
            print(
                f"sft step {step}/{total} | epoch {epoch} | loss {last['loss']:.4f} | "
                f"gnorm {last['grad_norm']:.2f} | lr {last['lr']:.2e} | {last['time/step']:.1f}s | "
                f"{last['tokens_per_s']:.0f} tok/s",
                flush=True,
            )
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total:
            state = {"epoch": epoch}
            save_checkpoint(
                out / "checkpoints", step, model, optimizer, scheduler, state, tok, keep=1
            )
    model_dir = _save_model(model, tok, cfg, out)
    update_run_json(out, status="done", wall_time_s=time.perf_counter() - t_start)
    return {**last, "run_dir": str(out), "model_dir": str(model_dir), "num_trajectories": len(data)}


def check_tokenizer(trajs: list[Trajectory], spec: str) -> None:
    """Refuse trajectories whose token ids were not written by `spec`'s tokenizer: SFT
    trains on stored ids, which under another tokenizer mean other text. Trajectories
    carry the writer's fingerprint (metadata.tokenizer); older ones without it are checked
    by decoding their model segments, which must give back the stored text."""
    from trajlab.models import check_model_spec, load_tokenizer, tokenizer_fingerprint

    check_model_spec(spec, "model.model")
    tok = load_tokenizer(spec)
    mine, size = tokenizer_fingerprint(tok), len(tok)
    fix = (
        f"Fine-tune the model the trajectories came from, or write new ones with this model "
        f"(trajlab eval --model {spec} ...)."
    )
    for t in trajs:
        theirs = t.metadata.get("tokenizer")
        if theirs and theirs != mine:
            raise ConfigError(
                f"trajectory {t.example_id!r} was tokenized by another tokenizer (fingerprint "
                f"{theirs}; model.model {spec!r} has {mine}). {fix}"
            )
        if max(t.token_ids, default=0) >= size:
            raise ConfigError(
                f"trajectory {t.example_id!r} has token id {max(t.token_ids)}, beyond the "
                f"{size} tokens of model.model {spec!r}'s tokenizer. {fix}"
            )
    unmarked = [s for t in trajs if not t.metadata.get("tokenizer") for s in t.segments]
    checked = [s for s in unmarked if s.source == "model" and s.text.strip()][:16]
    if checked and all(tok.decode(s.token_ids) != s.text for s in checked):
        raise ConfigError(
            f"the trajectories' token ids do not decode to their text under model.model "
            f"{spec!r}'s tokenizer (checked {len(checked)} model segments): they were written "
            f"by another tokenizer. {fix}"
        )


def _training_data(
    cfg: SFTConfig, trajectories: list[Trajectory] | None
) -> tuple[list[Trajectory], dict[str, int]]:
    trajs = trajectories if trajectories is not None else load_sft_data(cfg)
    data, dropped = select(cfg, trajs)
    if not data:
        hints = []
        if dropped["incorrect"]:
            hints.append(
                f"{dropped['incorrect']} were not scored correct: pass --all to train on "
                "them too, or sample more answers per question (trajlab eval -n 8 "
                "--temperature 0.8) so that some are right"
            )
        if dropped["too_long"]:
            hints.append(f"{dropped['too_long']} were longer than max_length={cfg.max_length}")
        if dropped["no_model_tokens"]:
            hints.append(f"{dropped['no_model_tokens']} had no model tokens to train on")
        raise ConfigError(
            f"no trajectories left to train on ({len(trajs)} read): "
            + "; ".join(hints or ["the files hold none"])
        )
    return data, dropped


def _batches(
    cfg: SFTConfig, data: list[Trajectory], total: int
) -> Iterator[tuple[int, list[Trajectory]]]:
    """(epoch, batch) for `total` steps: each epoch a seeded shuffle, each batch sorted by
    length so that its micro-batches carry little padding."""
    step = 0
    for epoch in range(cfg.epochs):
        order = list(range(len(data)))
        random.Random(f"trajlab-sft/{cfg.seed}/{epoch}").shuffle(order)
        for s in range(0, len(order), cfg.batch_size):
            if step >= total:
                return
            step += 1
            batch = [data[i] for i in order[s : s + cfg.batch_size]]
            yield epoch, sorted(batch, key=lambda t: len(t.token_ids))


def sft_step(
    model: torch.nn.Module,
    params: list[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    batch: list[Trajectory],
    pad_id: int,
    cfg: SFTConfig,
) -> dict[str, float]:
    """One optimizer step over `batch` in micro-batches; the loss is normalised by the whole
    batch's trained tokens, so the micro-batch size does not change the gradient."""
    t0 = time.perf_counter()
    o = cfg.optim
    tokens = float(sum(sum(t.loss_mask) for t in batch))
    optimizer.zero_grad(set_to_none=True)
    loss_sum = 0.0
    for m in range(0, len(batch), cfg.micro_batch_size):
        with autocast_context(o.autocast):
            loss, _ = sft_loss(model, batch[m : m + cfg.micro_batch_size], pad_id, tokens)
        loss.backward()
        loss_sum += float(loss.detach())
    max_norm = o.grad_clip if o.grad_clip > 0 else float("inf")
    norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    optimizer.step()
    scheduler.step()
    dt = time.perf_counter() - t0
    return {
        "loss": loss_sum,
        "grad_norm": norm,
        "lr": scheduler.get_last_lr()[0],
        "trained_tokens": tokens,
        "time/step": dt,
        "tokens_per_s": sum(len(t.token_ids) for t in batch) / dt,
    }


def _save_model(model: torch.nn.Module, tok: Any, cfg: SFTConfig, out: Path) -> Path:
    """OUT/model as a plain Hugging Face model (a LoRA adapter is merged in first), which
    `trajlab train` and `trajlab eval` load like any other."""
    model_dir = out / "model"
    if cfg.model.lora:
        model = model.merge_and_unload()
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    return model_dir
