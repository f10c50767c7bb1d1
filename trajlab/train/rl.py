"""The RL trainer: one loop, read top to bottom.

    trajlab train configs/grpo.yaml optim.lr=1e-6 steps=50 out=runs/grpo
    python -c "from trajlab.train.rl import train; from trajlab.train.config import load_train_config; train(load_train_config('configs/quickstart.yaml'))"

Each step of `train()`:

  1. rollout   draw prompts_per_step prompts from the data cursor and sample group_size
               trajectories each with the agent loop (tools run; their tokens get loss mask 0).
               The engine is seeded by (seed, step, round), so a step's rollouts are a
               function of the seed, the step and the weights: resumed runs replay exactly.
  2. reward    reward functions (weighted sum) -> ThinkPrune hard length limit -> soft length
               penalty -> DAPO overlong penalty; components are kept for the logs.
  3. filter    group filters (zero variance, pass-rate band, too few untruncated samples) pick
               which prompt groups are trained on; while too few survive, another round of
               prompts is rolled out (DAPO dynamic sampling), up to filters.max_rounds; when the
               budget is spent we train on what we have and log the shortfall.
  4. logprobs  the trainer recomputes logprobs on the stored token ids (never re-tokenised)
               with trajlab.models.token_logprobs: the "old" policy of the PPO ratio, the frozen
               reference (only when KL is on) and per-token entropy; KL may be folded into the
               reward here.
  5. advantage per-trajectory advantages over whole groups, then trajectory filters (void turns,
               truncation) zero the loss of single trajectories; they still counted in their
               group's statistics (SimpleTIR).
  6. loss      for `epochs` x `mini_batches` optimizer steps: PPO-clip policy loss (token or
               sequence ratio, clip-higher, dual-clip), truncated importance weights against the
               engine's sampling logprobs, KL and entropy terms; gradients accumulate over
               micro-batches, are clipped, AdamW steps, the schedule advances.
  7. log       metrics.jsonl row, progress line, TensorBoard, alarms, trajectories with their
               per-token overlays (docs/run_directory.md); periodic held-out evaluation.
  8. checkpoint atomically (checkpoint.py); an existing run directory is resumed from its
               newest checkpoint, and the files written after it are cut back first.

Departures (each also in docs/training.md):
  * DAPO stops gathering at exactly the target number of groups; we train on every valid group
    of the last round (the batch may be slightly larger than prompts_per_step).
  * With a single update per batch (epochs = mini_batches = 1) the "old" logprobs are the
    current ones, detached in the loss pass (ratio 1, as in verl), which saves a forward pass.
  * The rollout engine shares the policy's module, so it always samples from the current
    weights; with bf16 autocast only the trainer's forward passes are autocast.

What this loop does not do: distributed training, a critic (GAE/PPO with value model), or
token-level (process) rewards.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import random
import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trajlab.agent.loop import AgentLoop
from trajlab.algos.advantages import get_advantage_fn, group_ids_from_keys
from trajlab.algos.filters import (
    FilterResult,
    combine,
    dynamic_sampling_filter,
    overlong_filter,
    overlong_penalty,
    pass_rate_filter,
    void_turn_filter,
)
from trajlab.algos.length import length_limited_reward, soft_length_penalty, thinkprune_limit
from trajlab.algos.losses import (
    PolicyLossConfig,
    fold_kl_into_rewards,
    kl_penalty,
    logprob_mismatch,
    policy_loss,
)
from trajlab.config import ConfigError, to_dict
from trajlab.engines.base import Engine, SamplingParams
from trajlab.memory import peak_rss, release_memory, trim_heap
from trajlab.models import (
    autocast_context,
    token_logprobs,
    token_logprobs_and_entropy,
)
from trajlab.progress import RolloutProgress
from trajlab.rewards.scorer import Scorer
from trajlab.rundir import failure_recorded, start_or_resume, update_run_json
from trajlab.threads import ThreadGovernor
from trajlab.train.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    step_dir_name,
)
from trajlab.train.config import TrainConfig
from trajlab.train.metrics import (
    TensorBoardLogger,
    eval_text,
    progress_line,
    rollout_metrics,
    training_summary,
    weighted_stats,
    write_plots,
)
from trajlab.train.policy import adamw, load_trainable
from trajlab.types import Example, RewardBreakdown, Trajectory, write_jsonl

# Filter reasons (trajlab.algos.filters) -> the overlay's `filtered` values (docs/run_directory.md).
OVERLAY_REASON = {
    "void_turn": "void_turn",
    "zero_variance": "zero_variance",
    "too_hard": "difficulty",
    "too_easy": "difficulty",
    "overlong": "overlong",
    "overlong_group": "overlong",
}
TRUNCATED = ("length", "context_overflow")
# Keys that may differ between a run and its resumption (everything else must match).
RESUMABLE_KEYS = ("out", "steps", "threads", "log", "eval")


# ---------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------


def train(
    config: TrainConfig,
    *,
    examples: list[Example] | None = None,
    eval_examples: list[Example] | None = None,
    engine: Engine | None = None,
    tools: dict[str, Any] | None = None,
    stop_after: int | None = None,
    argv: list[str] | None = None,
) -> dict[str, Any]:
    """Run (or resume) RL training; return the last metrics row plus `run_dir`.

    examples / eval_examples / engine / tools replace what the config would load (tests).
    stop_after ends the run after that step as if it had been killed right after its
    checkpoint (tests of exact resumption).
    """
    run = setup(config, examples, eval_examples, engine, tools, argv)
    cfg = run.config
    last: dict[str, Any] = {}
    status = None  # an exception leaves the status failure_recorded wrote
    try:
        with failure_recorded(run.out):
            if run.start_step == 0 and cfg.eval.every > 0 and cfg.eval.at_start:
                last = log_row(run, {"step": 0, **evaluate_policy(run, 0)}, step=0)
            status = "interrupted"
            for step in range(run.start_step + 1, cfg.steps + 1):
                last = log_row(run, rl_step(run, step), step)
                if step % cfg.log.checkpoint_every == 0 or step in (cfg.steps, stop_after):
                    save(run, step)
                if stop_after is not None and step >= stop_after:
                    break
            else:
                status = "done"
    except BaseException:
        status = None
        raise
    finally:
        finish(run, status)
    return {**last, "run_dir": str(run.out)}


@dataclass
class StepBatch:
    """What one step rolled out and what of it is trained on."""

    trajs: list[Trajectory]  # every trajectory of the step, in rollout order
    exs: list[Example]  # the example of each
    group_res: FilterResult | None  # the group filters over all of them (None: none on)
    rounds: int  # over-sampling rounds spent
    batch: list[int] = field(default_factory=list)  # indices into trajs that are trained on
    rows: list[Row] = field(default_factory=list)  # one per index in batch
    advantages: torch.Tensor = field(default_factory=lambda: torch.zeros(0))  # [len(batch)]
    traj_res: FilterResult | None = None  # the trajectory filters over the batch


def rl_step(run: Run, step: int) -> dict[str, Any]:
    """One RL step, steps 1-7 of the module docstring; returns its metrics row."""
    cfg = run.config
    run.threads.adjust()
    t_step = time.perf_counter()
    timings: dict[str, float] = defaultdict(float)
    memory: dict[str, float] = {}  # peak resident GiB of this process per phase

    # 1-3. rollout, reward and group filters, with over-sampling rounds
    with peak_rss(memory, "rollout"):
        sb = StepBatch(*collect_batch(run, step, timings))
    keep = sb.group_res.keep if sb.group_res is not None else [True] * len(sb.trajs)
    sb.batch = [i for i in range(len(sb.trajs)) if keep[i]]
    # 4-5. logprobs, advantages, trajectory filters
    # Hand the rollout's KV caches back before activations grow, and the engine's bf16
    # decode copy (rebuilt from the updated weights at the next rollout) with them.
    if (release_copy := getattr(run.engine, "release_decode_copy", None)) is not None:
        release_copy()
    release_memory()
    advantages_of(run, sb, timings)
    # 6. loss and optimizer steps
    t0 = time.perf_counter()
    with peak_rss(memory, "update"):  # the logprob pass before it is part of no phase
        update = update_policy(run, step, sb.rows, sb.advantages)
    timings["update"] += time.perf_counter() - t0
    # 7. log: overlays, trajectories, metrics row, evaluation
    t0 = time.perf_counter()
    annotate(sb, step)
    if cfg.log.save_trajectories:
        write_jsonl(run.out / "trajectories" / f"{step_dir_name(step)}.jsonl", sb.trajs)
    timings["save"] += time.perf_counter() - t0
    row = step_metrics(run, step, sb, update)
    if cfg.eval.every > 0 and (
        step % cfg.eval.every == 0 or (step == cfg.steps and cfg.eval.at_end)
    ):
        t0 = time.perf_counter()
        row.update(evaluate_policy(run, step))
        timings["eval"] += time.perf_counter() - t0
    timings["step"] = time.perf_counter() - t_step
    row.update({f"time/{k}": v for k, v in timings.items()})
    row.update({f"memory/{k}_peak_gib": v for k, v in memory.items()})
    row["machine/load_avg_1m"] = os.getloadavg()[0]  # timings mean little without it
    row["tokens_per_s"] = row.get("generated_tokens", 0.0) / max(timings["rollout"], 1e-9)
    return row


def advantages_of(run: Run, sb: StepBatch, timings: dict[str, float]) -> None:
    """Steps 4-5: logprobs of the trained trajectories (old policy, reference, entropy),
    advantages over whole groups, then trajectory filters, which zero a row's loss mask
    but leave the group statistics unchanged."""
    cfg = run.config
    t0 = time.perf_counter()
    sb.rows = [make_row(sb.trajs[i]) for i in sb.batch]
    compute_logprobs(run, sb.rows)
    rewards = torch.tensor([sb.trajs[i].reward.total for i in sb.batch], dtype=torch.float32)
    if run.kl_in_reward:
        rewards = fold_kl(run, sb.rows, rewards)  # [N]
    timings["logprobs"] += time.perf_counter() - t0
    counts = torch.tensor([float(r.loss_mask.sum()) for r in sb.rows])  # [N]
    groups = group_ids_from_keys([sb.trajs[i].group_id for i in sb.batch])
    adv_fn = get_advantage_fn(cfg.algo.advantage)
    sb.advantages = (
        adv_fn(rewards, groups, counts, eps=cfg.algo.adv_eps) if sb.rows else torch.zeros(0)
    )  # [N]
    sb.traj_res = trajectory_filters(cfg, [sb.trajs[i] for i in sb.batch])
    for r, kept in zip(sb.rows, sb.traj_res.keep.tolist()):
        if not kept:
            r.loss_mask = torch.zeros_like(r.loss_mask)


# ---------------------------------------------------------------------------------------
# 1-3. rollout, reward, group filters
# ---------------------------------------------------------------------------------------


def collect_batch(
    run: Run, step: int, timings: dict[str, float]
) -> tuple[list[Trajectory], list[Example], FilterResult | None, int]:
    """Roll out rounds of prompts until the group filters keep prompts_per_step groups or
    filters.max_rounds is spent. Returns every trajectory, its example, the group filter
    result over all of them (None when no group filter is on) and the number of rounds."""
    cfg = run.config
    trajs: list[Trajectory] = []
    exs: list[Example] = []
    res: FilterResult | None = None
    group_filtering = (
        cfg.filters.zero_variance
        or cfg.filters.difficulty
        or (cfg.filters.overlong == "filter" and cfg.filters.overlong_min_group > 0)
    )
    rounds = cfg.filters.max_rounds if group_filtering else 1
    for rnd in range(rounds):
        t0 = time.perf_counter()
        prompts = run.sampler.next(cfg.rollout.prompts_per_step)
        jobs = [(ex, i) for ex in prompts for i in range(cfg.rollout.group_size)]
        keys = [
            f"s{step}-r{rnd}-p{k}-{ex.id}"
            for k, ex in enumerate(prompts)
            for _ in range(cfg.rollout.group_size)
        ]
        run.loop.sampling = rollout_sampling(cfg, step, rnd)
        run.model.eval()
        progress = RolloutProgress(
            len(jobs),
            desc=f"step {step} rollout" + (f" (round {rnd + 1})" if rnd else ""),
            tokens_per_episode=cfg.agent.max_new_tokens,
            enabled=cfg.log.progress,
        )
        try:
            new = run.loop.run(jobs, group_ids=keys, progress=progress)
        finally:
            progress.close()
        timings["rollout"] += time.perf_counter() - t0

        t0 = time.perf_counter()
        score(run, step, new, [ex for ex, _ in jobs])
        trajs += new
        exs += [ex for ex, _ in jobs]
        timings["reward"] += time.perf_counter() - t0
        if not group_filtering:
            return trajs, exs, None, 1
        res = group_filters(cfg, trajs)
        if len(res.kept_groups or []) >= cfg.rollout.prompts_per_step:
            return trajs, exs, res, rnd + 1
    return trajs, exs, res, rounds


def rollout_sampling(cfg: TrainConfig, step: int, rnd: int) -> SamplingParams:
    """Sampling params seeded by (seed, step, round): a step's rollouts replay exactly on resume."""
    r = cfg.rollout
    seed = (cfg.seed * 1_000_003 + step * 7_919 + rnd * 104_729) % (2**31 - 1)
    return SamplingParams(
        temperature=r.temperature,
        top_p=r.top_p,
        top_k=r.top_k,
        max_new_tokens=cfg.agent.max_new_tokens_per_turn,
        seed=seed,
    )


def score(run: Run, step: int, trajs: list[Trajectory], exs: list[Example]) -> None:
    """Score with the run's Scorer (reward, prediction, metadata['correct'], exactly as
    `trajlab eval` does), then shape the reward for training: ThinkPrune limit, soft length
    penalty, DAPO overlong penalty. Shaping never changes what counts as correct."""
    cfg = run.config
    base: list[RewardBreakdown] = [run.scorer(ex, t) for ex, t in zip(exs, trajs)]
    totals = torch.tensor([b.total for b in base], dtype=torch.float64)  # [N]
    shaped = totals.clone()  # [N]
    extra: dict[str, torch.Tensor] = {}
    model_tokens = torch.tensor([t.num_model_tokens for t in trajs], dtype=torch.float64)  # [N]
    if cfg.length.limits:  # ThinkPrune (arXiv 2504.01296): over the limit scores over_limit_reward
        limit = thinkprune_limit(step - 1, cfg.length.limits, cfg.length.starts)
        shaped = length_limited_reward(shaped, model_tokens, limit, cfg.length.over_limit_reward)
        extra["over_length_limit"] = (model_tokens > limit).to(torch.float64)
    if cfg.length.soft_budget > 0:
        extra["length_penalty"] = soft_length_penalty(
            model_tokens, cfg.length.soft_budget, cfg.length.soft_coef, cfg.length.soft_cap
        )
        shaped = shaped + extra["length_penalty"]
    if cfg.filters.overlong == "penalty":  # DAPO soft overlong punishment
        lengths = torch.tensor([len(t.response_token_ids) for t in trajs], dtype=torch.float64)
        extra["overlong_penalty"] = overlong_penalty(
            lengths,
            cfg.agent.max_new_tokens,
            cfg.filters.overlong_buffer,
            cfg.filters.overlong_factor,
        )
        shaped = shaped + extra["overlong_penalty"]
    if not extra:
        return
    for k, (t, b) in enumerate(zip(trajs, base)):
        comps = dict(b.components)
        comps.update({name: float(v[k]) for name, v in extra.items()})
        t.reward = RewardBreakdown(total=float(shaped[k]), components=comps)


def group_filters(cfg: TrainConfig, trajs: list[Trajectory]) -> FilterResult:
    """Which prompt groups are trained on: whole groups go, so kept groups' stats are intact."""
    gids = group_ids_from_keys([t.group_id for t in trajs])  # [N]
    rewards = torch.tensor([t.reward.total for t in trajs], dtype=torch.float64)  # [N]
    results = []
    if cfg.filters.zero_variance:
        results.append(dynamic_sampling_filter(rewards, gids, None, cfg.filters.min_std))
    if cfg.filters.difficulty:
        success = torch.tensor([t.metadata["correct"] for t in trajs], dtype=torch.float64)
        results.append(
            pass_rate_filter(
                success, gids, cfg.filters.pass_rate_low, cfg.filters.pass_rate_high, None
            )
        )
    if cfg.filters.overlong == "filter" and cfg.filters.overlong_min_group > 0:
        trunc = [t.stop_reason in TRUNCATED for t in trajs]
        r = overlong_filter(trunc, gids, cfg.filters.overlong_min_group)
        # Only the group part here; single truncated trajectories are masked after advantages.
        results.append(FilterResult({"overlong_group": r.reasons["overlong_group"]}, len(trajs)))
    res = combine(*results)
    keep = res.keep
    res.kept_groups = sorted({int(g) for g, k in zip(gids.tolist(), keep.tolist()) if k})
    res.shortfall = max(cfg.rollout.prompts_per_step - len(res.kept_groups), 0)
    return res


# ---------------------------------------------------------------------------------------
# 4. logprobs; 5. trajectory filters
# ---------------------------------------------------------------------------------------


@dataclass
class Row:
    """One trained trajectory as tensors, all [T] and aligned with its token ids."""

    ids: torch.Tensor
    loss_mask: torch.Tensor
    sampling_logprobs: torch.Tensor  # engine logprobs, 0 where none
    prompt_len: int
    old_logprobs: torch.Tensor | None = None  # trainer logprobs before the update
    ref_logprobs: torch.Tensor | None = None
    entropy: torch.Tensor | None = None


def make_row(t: Trajectory) -> Row:
    samp = [x if x is not None else 0.0 for x in t.sampling_logprobs()]
    return Row(
        ids=torch.tensor(t.token_ids, dtype=torch.long),
        loss_mask=torch.tensor(t.loss_mask, dtype=torch.float32),
        sampling_logprobs=torch.tensor(samp, dtype=torch.float32),
        prompt_len=t.prompt_length,
    )


def collate(rows: Sequence[Row], pad_id: int) -> dict[str, torch.Tensor | int]:
    """Right-pad rows into [B, T] tensors."""
    T = max(len(r.ids) for r in rows)
    B = len(rows)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    attn = torch.zeros(B, T, dtype=torch.long)
    out: dict[str, Any] = {"ids": ids, "attn": attn}
    for name in ("loss_mask", "sampling_logprobs", "old_logprobs", "ref_logprobs"):
        if all(getattr(r, name) is not None for r in rows):
            out[name] = torch.zeros(B, T, dtype=torch.float32)
    for b, r in enumerate(rows):
        n = len(r.ids)
        ids[b, :n] = r.ids
        attn[b, :n] = 1
        for name in ("loss_mask", "sampling_logprobs", "old_logprobs", "ref_logprobs"):
            if name in out:
                out[name][b, :n] = getattr(r, name)
    out["start"] = min(r.prompt_len for r in rows)  # no logprob is needed before any prompt ends
    return out


def micro_batches(rows: Sequence[Row], size: int) -> Iterator[list[Row]]:
    for idx in micro_batches_idx(rows, size):
        yield [rows[i] for i in idx]


def micro_batches_idx(rows: Sequence[Row], size: int) -> Iterator[list[int]]:
    """Index chunks after a stable sort by prompt, then length: a group's rows land in the
    same micro-batch, so their shared prompt is computed once (models._hidden_states),
    and rows of similar length sit together, so little compute goes to padding."""
    order = sorted(
        range(len(rows)),
        key=lambda i: (rows[i].ids[: rows[i].prompt_len].tolist(), len(rows[i].ids)),
    )
    for s in range(0, len(order), size):
        yield order[s : s + size]


@torch.no_grad()
def compute_logprobs(run: Run, rows: list[Row]) -> None:
    """Fill old logprobs and entropy (when they cannot come from the loss pass) and the
    reference logprobs, before any update."""
    cfg = run.config
    # On policy, the single loss pass yields the pre-update logprobs and entropy itself.
    need_old = not run.on_policy or run.kl_in_reward
    need_ent = need_old and cfg.log.entropy and cfg.algo.entropy_coef == 0
    if not rows or not (need_old or run.uses_reference):
        return
    run.model.eval()
    T = cfg.rollout.temperature
    for mb in micro_batches(rows, cfg.algo.micro_batch_size):
        b = collate(mb, run.pad_id)
        old = ent = None
        with run.autocast():
            if need_ent:
                old, ent = token_logprobs_and_entropy(
                    run.model, b["ids"], b["attn"], T, start=b["start"]
                )
            elif need_old:
                old = token_logprobs(run.model, b["ids"], b["attn"], T, start=b["start"])
            ref = reference_logprobs(run, b) if run.uses_reference else None
        for k, r in enumerate(mb):
            n = len(r.ids)
            if old is not None:
                r.old_logprobs = old[k, :n].float()
            if ent is not None:
                r.entropy = ent[k, :n].float()
            if ref is not None:
                r.ref_logprobs = ref[k, :n].float()


def reference_logprobs(run: Run, b: dict[str, Any]) -> torch.Tensor:
    """Logprobs under the frozen reference: the base weights (LoRA disabled) or a loaded copy."""
    T = run.config.rollout.temperature
    if run.ref_model is None:  # LoRA: the reference is the policy with its adapter switched off
        with run.model.disable_adapter():
            return token_logprobs(run.model, b["ids"], b["attn"], T, start=b["start"])
    return token_logprobs(run.ref_model, b["ids"], b["attn"], T, start=b["start"])


def fold_kl(run: Run, rows: list[Row], rewards: torch.Tensor) -> torch.Tensor:
    """KL in the reward: r_i - beta * sum_t kl_t (verl's apply_kl_penalty for outcome rewards)."""
    out = rewards.clone()
    for k, r in enumerate(rows):
        lm = r.loss_mask[None]  # [1, T]
        kl = kl_penalty(
            r.old_logprobs[None], r.ref_logprobs[None], lm, run.config.algo.kl
        )  # [1, T]
        out[k] = fold_kl_into_rewards(rewards[k : k + 1], kl, lm, run.config.algo.kl_coef)[0]
    return out


def trajectory_filters(cfg: TrainConfig, trajs: list[Trajectory]) -> FilterResult:
    """Void-turn (SimpleTIR) and overlong (DAPO) filters on single trajectories."""
    results = [FilterResult({}, len(trajs))]
    if cfg.filters.void_turn:
        results.append(void_turn_filter([t.metadata.get("void_turns", 0) > 0 for t in trajs]))
    if cfg.filters.overlong == "filter":
        results.append(overlong_filter([t.stop_reason in TRUNCATED for t in trajs]))
    return combine(*results)


# ---------------------------------------------------------------------------------------
# 6. loss and optimizer steps
# ---------------------------------------------------------------------------------------


def update_policy(
    run: Run, step: int, rows: list[Row], advantages: torch.Tensor
) -> dict[str, float]:
    """epochs x mini_batches optimizer steps over the batch; returns averaged statistics.

    Rows that cannot move the weights are not forwarded: with no KL term in the loss and
    no entropy bonus, a row whose advantage is 0 (a zero-variance group) contributes
    exactly 0 to the gradient, so only the loss divisor counts it (the result is the
    same update). A mini-batch with nothing left takes no optimizer step at all: AdamW's
    momentum would otherwise still move the weights on a batch with nothing to learn."""
    cfg = run.config
    run.model.train()
    stats: list[tuple[float, dict[str, float]]] = []
    grad_norms: list[float] = []
    trained_tokens = 0.0
    forwarded = 0
    n = len(rows)
    only_policy_term = not (
        (run.uses_reference and cfg.algo.kl_in == "loss") or cfg.algo.entropy_coef != 0
    )
    for epoch in range(cfg.algo.epochs):
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step * 101 + epoch)
        perm = torch.randperm(n, generator=g).tolist() if n else []
        for part in np.array_split(np.array(perm, dtype=np.int64), cfg.algo.mini_batches):
            idx = part.tolist()
            mb = [rows[i] for i in idx]
            denom = loss_denominator(cfg, mb)
            live = rows_with_signal(mb, advantages[idx], only_policy_term)
            if denom is None or not live:
                continue  # nothing trainable in this mini-batch: no step
            run.optimizer.zero_grad(set_to_none=True)
            live_adv = advantages[[idx[k] for k in live]]  # [live]
            tokens, rows_in = accumulate_gradients(
                run, [mb[k] for k in live], live_adv, denom, stats
            )
            trained_tokens += tokens
            forwarded += rows_in
            max_norm = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf")
            norm = torch.nn.utils.clip_grad_norm_(run.trainable, max_norm)
            grad_norms.append(float(norm))
            run.optimizer.step()
            run.scheduler.step()
    # The gradients are spent: free them (and the activations' heap pages) before the next
    # rollout, whose KV cache would otherwise sit on top of them (the demo's peak).
    run.optimizer.zero_grad(set_to_none=True)
    release_memory()
    out = weighted_stats(stats)
    out["grad_norm"] = sum(grad_norms) / len(grad_norms) if grad_norms else 0.0
    out["optimizer_steps"] = float(len(grad_norms))
    out["trained_tokens"] = trained_tokens
    out["update/forwarded_rows"] = float(forwarded)
    out["update/skipped"] = float(not grad_norms)
    out["lr"] = run.scheduler.get_last_lr()[0]
    out.update(mismatch_metrics(rows))
    return out


def accumulate_gradients(
    run: Run, rows: list[Row], advantages: torch.Tensor, denom: float, stats: list
) -> tuple[float, int]:
    """Forward and backward every micro-batch of one mini-batch (the gradients add up);
    appends (tokens, loss stats) per micro-batch to `stats`; returns (tokens, rows)."""
    tokens, forwarded = 0.0, 0
    for micro_idx in micro_batches_idx(rows, run.config.algo.micro_batch_size):
        micro = [rows[i] for i in micro_idx]
        out, lp = micro_loss(run, micro, advantages[micro_idx], denom)  # advantages: [B]
        out.loss.backward()
        trim_heap()  # this micro-batch's activations are freed: their pages go back
        w = float(sum(r.loss_mask.sum() for r in micro))
        stats.append((w, out.stats))
        tokens += w
        forwarded += len(micro)
        if run.on_policy:  # ratio-1 pass: these are the pre-update logprobs
            for k, r in enumerate(micro):
                r.old_logprobs = lp[k, : len(r.ids)].detach().float()
    return tokens, forwarded


def rows_with_signal(
    rows: Sequence[Row], advantages: torch.Tensor, only_policy_term: bool
) -> list[int]:
    """Indices of rows that can change the weights: trained tokens, and a non-zero
    advantage unless a KL or entropy term gives every row a gradient."""
    return [
        k
        for k, r in enumerate(rows)
        if float(r.loss_mask.sum()) > 0 and not (only_policy_term and float(advantages[k]) == 0.0)
    ]


def mismatch_metrics(rows: Sequence[Row]) -> dict[str, float]:
    """Sampler vs trainer logprobs of the sampled tokens, over rows the trainer scored
    before its update (trajlab.algos.losses.logprob_mismatch), token-weighted."""
    parts = []
    for r in rows:
        if r.old_logprobs is None:
            continue
        m = logprob_mismatch(r.old_logprobs[None], r.sampling_logprobs[None], r.loss_mask[None])
        if m["tokens"]:
            parts.append((m.pop("tokens"), m))
    return {f"mismatch/{k}": v for k, v in weighted_stats(parts).items()}


def loss_denominator(cfg: TrainConfig, rows: Sequence[Row]) -> float | None:
    """The whole mini-batch's divisor, so micro-batch losses add up to the mini-batch loss."""
    tokens = [float(r.loss_mask.sum()) for r in rows]
    if sum(tokens) == 0:
        return None
    if cfg.algo.loss_agg == "token-mean":
        return sum(tokens)
    if cfg.algo.loss_agg == "seq-mean-token-mean":
        return float(sum(t > 0 for t in tokens))
    return float(len(rows))  # seq-mean-token-sum-norm: all rows (Dr. GRPO's constant)


def micro_loss(run: Run, micro: list[Row], adv: torch.Tensor, denom: float):
    """Forward one micro-batch with gradients and return (PolicyLossOutput, logprobs [B, T]).

    Entropy comes out of the same forward pass: in the loss when entropy_coef != 0, else
    detached for the logs (on-policy runs only; otherwise compute_logprobs logged it)."""
    cfg = run.config
    b = collate(micro, run.pad_id)
    T = cfg.rollout.temperature
    bonus = cfg.algo.entropy_coef != 0
    want_ent = bonus or (cfg.log.entropy and micro[0].entropy is None)
    with run.autocast():
        if want_ent:
            lp, ent = token_logprobs_and_entropy(
                run.model, b["ids"], b["attn"], T, start=b["start"], entropy_grad=bonus
            )  # [B, T], [B, T]
        else:
            lp, ent = token_logprobs(run.model, b["ids"], b["attn"], T, start=b["start"]), None
    old = b["old_logprobs"] if "old_logprobs" in b else lp.detach()  # [B, T]
    out = policy_loss(
        lp,
        old,
        adv,
        b["loss_mask"],
        run.loss_cfg,
        sampling_logprobs=b["sampling_logprobs"],
        ref_logprobs=b.get("ref_logprobs"),
        entropy=ent if bonus else None,
        denominator=denom,
    )
    if ent is not None:
        for k, r in enumerate(micro):
            r.entropy = ent[k, : len(r.ids)].detach().float()
    return out, lp


# ---------------------------------------------------------------------------------------
# 7. log
# ---------------------------------------------------------------------------------------


def _reason(reasons: dict[str, torch.Tensor], i: int) -> str | None:
    for name, flags in reasons.items():
        if bool(flags[i]):
            return OVERLAY_REASON.get(name, name)
    return None


def annotate(sb: StepBatch, step: int) -> None:
    """Per-token overlays in metadata['train'], aligned with the response tokens."""
    for i, t in enumerate(sb.trajs):
        reason = _reason(sb.group_res.reasons, i) if sb.group_res is not None else None
        t.metadata["train"] = {"step": step, "filtered": reason}
    for k, (i, r) in enumerate(zip(sb.batch, sb.rows)):
        p = r.prompt_len
        overlay = sb.trajs[i].metadata["train"]
        overlay["filtered"] = _reason(sb.traj_res.reasons, k)
        a = float(sb.advantages[k])
        overlay["advantages"] = [round(a, 6) if m else 0.0 for m in r.loss_mask[p:].tolist()]
        # Rows that could not move the weights were not forwarded (update_policy), so they
        # have no trainer logprobs or entropy.
        overlay["forwarded"] = r.old_logprobs is not None
        if r.old_logprobs is not None:
            overlay["trainer_logprobs"] = [round(x, 6) for x in r.old_logprobs[p:].tolist()]
        if r.entropy is not None:
            overlay["entropy"] = [round(x, 5) for x in r.entropy[p:].tolist()]


def step_metrics(run: Run, step: int, sb: StepBatch, update: dict[str, float]) -> dict[str, Any]:
    trajs, rows, group_res, traj_res = sb.trajs, sb.rows, sb.group_res, sb.traj_res
    cfg = run.config
    row: dict[str, Any] = {"step": step}
    row.update(
        rollout_metrics(trajs, [t.metadata["correct"] for t in trajs], [t.group_id for t in trajs])
    )
    row["groups/zero_variance"] = zero_variance_share(trajs)
    n = max(len(trajs), 1)
    reasons: dict[str, float] = defaultdict(float)
    if group_res is not None:
        for name, flags in group_res.reasons.items():
            reasons[name] += float(flags.sum()) / n
    for name, flags in traj_res.reasons.items():
        reasons[name] += float(flags.sum()) / n
    row.update({f"filtered/{k}": v for k, v in sorted(reasons.items())})
    row["train_trajectories"] = float(len(sb.batch) - int((~traj_res.keep).sum()))
    if group_res is not None:
        row["dynamic_sampling/rounds"] = float(sb.rounds)
        row["dynamic_sampling/groups_kept"] = float(len(group_res.kept_groups or []))
        row["dynamic_sampling/shortfall"] = float(group_res.shortfall)
    if cfg.length.limits:
        row["length/limit"] = float(
            thinkprune_limit(step - 1, cfg.length.limits, cfg.length.starts)
        )
    row["generated_tokens"] = float(sum(t.num_model_tokens for t in trajs))
    renamed = {"clip_frac": "clip_fraction", "kl_loss": "kl_loss"}
    for k, v in update.items():
        row[renamed.get(k, k)] = v
    ents = [e for t in trajs if "entropy" in t.metadata["train"] for e in _masked(t, "entropy")]
    if ents:
        row["entropy"] = sum(ents) / len(ents)
    if run.uses_reference and rows:
        row["kl"] = batch_kl(rows)
    return row


def zero_variance_share(trajs: Sequence[Trajectory]) -> float:
    """Fraction of prompt groups whose samples all got the same reward (no GRPO signal)."""
    by_group: dict[str, set[float]] = defaultdict(set)
    for t in trajs:
        by_group[t.group_id].add(round(t.reward.total, 9))
    return sum(len(v) == 1 for v in by_group.values()) / len(by_group) if by_group else 0.0


def _masked(t: Trajectory, key: str) -> list[float]:
    vals = t.metadata["train"][key]
    return [v for v, m in zip(vals, t.response_loss_mask) if m]


@torch.no_grad()
def batch_kl(rows: list[Row]) -> float:
    """Mean k3 estimate of KL(policy before the update || reference) over trained tokens."""
    num = den = 0.0
    for r in rows:
        if r.old_logprobs is None or r.ref_logprobs is None:
            continue
        lm = r.loss_mask[None]  # [1, T]
        num += float(kl_penalty(r.old_logprobs[None], r.ref_logprobs[None], lm, "k3").sum())
        den += float(lm.sum())
    return num / den if den else 0.0


def log_row(run: Run, row: dict[str, Any], step: int) -> dict[str, Any]:
    row = {"step": step, "time": time.time(), **{k: v for k, v in row.items() if k != "step"}}
    with open(run.out / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(row, allow_nan=False, default=float) + "\n")
    run.rows.append(row)
    if run.tb is not None:
        run.tb.log(row)
    if run.config.log.progress and step > 0:
        print(progress_line(row, step, run.config.steps), flush=True)
    elif run.config.log.progress and "eval/accuracy" in row:
        print(f"step 0 | {eval_text(row)}", flush=True)
    if run.config.log.alarms:
        print_alarms(run)
    return row


def print_alarms(run: Run) -> None:
    """Print trajlab.viewer.alarms warnings when they start firing (skipped if absent)."""
    try:
        from trajlab.viewer.alarms import check_alarms
    except ImportError:
        return
    for alarm in check_alarms(run.rows):
        if alarm.name not in run.alarms_seen:
            print(f"ALARM {alarm}", file=sys.stderr, flush=True)
            run.alarms_seen.add(alarm.name)


def eval_config(cfg: TrainConfig, out: Path, n: int) -> Any:
    """The EvalConfig of the periodic held-out evaluation: what `trajlab eval` would run.

    Written to eval/step_N/config.json, so `trajlab eval --config that.json --model
    CHECKPOINT/model` reruns the same evaluation on a saved checkpoint (same scorer,
    engine, tools and examples; test_train_eval_parity.py checks the records match)."""
    from trajlab.eval.harness import EvalConfig

    weights = dict(cfg.reward.weights)
    (first, w), *rest = weights.items()
    single = not rest and w == 1.0
    return EvalConfig(
        model=cfg.model.model,
        task=cfg.data.eval_task or cfg.data.task,
        split=cfg.data.eval_split,
        task_seed=cfg.data.seed,
        data_dir=cfg.data.data_dir,
        task_options=eval_task_options(cfg.data),
        limit=n,
        n=1,
        reward=first,
        reward_weights={} if single else weights,
        correct=cfg.reward.correct,
        temperature=cfg.eval.temperature,
        seed=cfg.seed,
        dtype=cfg.model.dtype,
        decode_dtype=cfg.model.dtype
        if cfg.eval.decode_dtype == "float32"
        else cfg.eval.decode_dtype,
        batch_size=cfg.eval.batch_size,
        threads=cfg.threads,
        out=str(out),
        progress=False,
        prompt="" if cfg.data.prompt == "protocol" else cfg.data.prompt,
        agent=cfg.agent,
        tools=cfg.tools,
    )


def evaluate_policy(run: Run, step: int) -> dict[str, float]:
    """Held-out evaluation through the harness, written to eval/step_XXXXXX/.

    The engine is the harness's own (load_engine) over the policy's weights, not the
    rollout engine: no bf16 decode copy, the evaluation batch size, greedy by default."""
    from trajlab.eval.harness import evaluate, load_engine

    cfg = run.config
    run.model.eval()
    ecfg = eval_config(cfg, run.out / "eval" / step_dir_name(step), len(run.eval_examples))
    engine = (
        load_engine(ecfg, run.model, run.tokenizer)
        if cfg.rollout.engine == "hf" and run.own_engine
        else run.engine  # scripted (fake) or injected engines evaluate as they roll out
    )
    m = evaluate(ecfg, engine=engine, tools=run.tools, examples=run.eval_examples, argv=run.argv)
    keys = (
        "accuracy",
        "tool_call_rate",
        "tool_error_rate",
        "response_tokens_mean",
        "answered_rate",
        "reward_mean",
        "em",
        "f1",
        "cover_em",
        "retrieval_recall",
    )
    out = {f"eval/{k}": float(m[k]) for k in keys if isinstance(m.get(k), (int, float))}
    for k in ("accuracy", "tool_call_rate", "answered_rate"):  # 95 % intervals over examples
        if isinstance(m.get(f"{k}_ci"), list):
            out[f"eval/{k}_ci_low"], out[f"eval/{k}_ci_high"] = map(float, m[f"{k}_ci"])
    return out


# ---------------------------------------------------------------------------------------
# Plumbing: setup, resume, checkpoint, finish
# ---------------------------------------------------------------------------------------


class PromptSampler:
    """Epochs over the examples in a seeded shuffled order; its state is the data cursor."""

    def __init__(self, examples: list[Example], seed: int | str) -> None:
        if not examples:
            raise ValueError("no training examples: check data.task, data.split and data.size")
        self.examples, self.seed, self.epoch, self.pos = examples, seed, 0, 0
        self._order = self._shuffled(0)

    def _shuffled(self, epoch: int) -> list[int]:
        order = list(range(len(self.examples)))
        random.Random(f"trajlab-sampler/{self.seed}/{epoch}").shuffle(order)
        return order

    def next(self, k: int) -> list[Example]:
        out = []
        for _ in range(k):
            if self.pos >= len(self._order):
                self.epoch, self.pos = self.epoch + 1, 0
                self._order = self._shuffled(self.epoch)
            out.append(self.examples[self._order[self.pos]])
            self.pos += 1
        return out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._order = self._shuffled(self.epoch)


@dataclass
class Run:
    """Everything the loop touches, built once by setup()."""

    config: TrainConfig
    out: Path
    model: torch.nn.Module
    tokenizer: Any
    engine: Engine
    own_engine: bool
    loop: AgentLoop
    tools: dict[str, Any]
    own_tools: bool
    sampler: PromptSampler
    eval_examples: list[Example]
    scorer: Scorer
    optimizer: torch.optim.Optimizer
    scheduler: Any
    trainable: list[torch.nn.Parameter]
    loss_cfg: PolicyLossConfig
    ref_model: torch.nn.Module | None = None
    pad_id: int = 0
    start_step: int = 0
    argv: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    tb: TensorBoardLogger | None = None
    alarms_seen: set[str] = field(default_factory=set)
    threads: ThreadGovernor = field(default_factory=ThreadGovernor)

    @property
    def on_policy(self) -> bool:
        return self.config.algo.epochs == 1 and self.config.algo.mini_batches == 1

    @property
    def uses_reference(self) -> bool:
        return self.config.algo.kl != "none"

    @property
    def kl_in_reward(self) -> bool:
        return self.uses_reference and self.config.algo.kl_in == "reward"

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast_context(self.config.optim.autocast)


def setup(
    cfg: TrainConfig,
    examples: list[Example] | None,
    eval_examples: list[Example] | None,
    engine: Engine | None,
    tools: dict[str, Any] | None,
    argv: list[str] | None,
) -> Run:
    """Build everything the loop touches, in order: seeds, run directory, policy (and the
    reference when KL is on), optimizer, engine and tools (trajlab.build), data, scorer;
    then resume from the newest checkpoint."""
    from trajlab.build import build_scorer

    out = Path(cfg.out or f"runs/train-{_dt.datetime.now():%Y%m%d-%H%M%S}")
    seed_everything(cfg)
    scorer = build_scorer(
        cfg.reward.weights, correct=cfg.reward.correct, retrieval="search" in cfg.agent.tools
    )
    check_inputs(cfg, engine, tools)
    examples, eval_examples = run_examples(cfg, examples, eval_examples)
    prepare_run_dir(out, cfg, argv)
    with failure_recorded(out):
        model, tok, ref_model = load_models(cfg)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer, scheduler = make_optimizer(cfg, trainable)
        own_engine, own_tools = engine is None, tools is None
        engine, tools, loop = rollout_loop(cfg, model, tok, engine, tools)
        run = Run(
            config=cfg,
            out=out,
            model=model,
            tokenizer=tok,
            engine=engine,
            own_engine=own_engine,
            loop=loop,
            tools=tools,
            own_tools=own_tools,
            sampler=PromptSampler(examples, f"{cfg.data.seed}/{cfg.seed}"),
            eval_examples=eval_examples,
            scorer=scorer,
            optimizer=optimizer,
            scheduler=scheduler,
            trainable=trainable,
            loss_cfg=PolicyLossConfig.from_algo(cfg.algo, cfg.agent.max_new_tokens),
            ref_model=ref_model,
            pad_id=tok.pad_token_id if tok.pad_token_id is not None else 0,
            argv=list(argv if argv is not None else sys.argv),
            threads=ThreadGovernor(cfg.threads),
        )
        resume(run)
    if cfg.log.tensorboard:
        run.tb = TensorBoardLogger(out / "tb")
    return run


def check_inputs(cfg: TrainConfig, engine: Engine | None, tools: dict[str, Any] | None) -> None:
    """What can fail without a model fails here, before the run directory is written: the
    tool names and protocol, the policy's files, the prompt template."""
    from trajlab.build import check_tools, prompt_builder
    from trajlab.models import check_model_spec

    if tools is None:
        check_tools(cfg.agent.tools, cfg.agent.protocol, cfg.tool_plugins, cfg.tools)
    check_model_spec(cfg.model.model, "model.model")
    prompt_builder(cfg.data.prompt)


def rollout_loop(
    cfg: TrainConfig,
    model: torch.nn.Module,
    tok: Any,
    engine: Engine | None,
    tools: dict[str, Any] | None,
) -> tuple[Engine, dict[str, Any], AgentLoop]:
    """The rollout engine over the policy, the tools and the agent loop (trajlab.build);
    a given engine or tool set is used as it is."""
    from trajlab.build import build_engine, build_tools, prompt_builder

    r = cfg.rollout
    if engine is None:
        engine = build_engine(
            r.engine,
            model,
            tok,
            max_batch_size=r.max_batch_size,
            decode_dtype=r.decode_dtype,
            fake_responses=r.fake_responses,
        )
    if tools is None:
        tools = build_tools(cfg.agent.tools, cfg.agent, cfg.tools, tok, cfg.tool_plugins)
    loop = AgentLoop(
        engine,
        tools,
        cfg.agent,
        sampling=rollout_sampling(cfg, 1, 0),
        prompt_builder=prompt_builder(cfg.data.prompt),
    )
    return engine, tools, loop


def run_examples(
    cfg: TrainConfig, examples: list[Example] | None, eval_examples: list[Example] | None
) -> tuple[list[Example], list[Example]]:
    """The training pool and the held-out examples (given ones are used as they are)."""
    d = cfg.data
    if examples is None:
        examples = load_examples(d.task, d.split, d.size, d.seed, d.data_dir, **d.options)
    if eval_examples is None and cfg.eval.every > 0:
        eval_examples = load_examples(
            d.eval_task or d.task, d.eval_split, d.eval_size, d.seed, d.data_dir,
            **eval_task_options(d),
        )  # fmt: skip
    return examples, eval_examples or []


def seed_everything(cfg: TrainConfig) -> None:
    random.seed(cfg.seed)
    np.random.seed(cfg.seed % (2**32))
    torch.manual_seed(cfg.seed)


def load_models(cfg: TrainConfig) -> tuple[torch.nn.Module, Any, torch.nn.Module | None]:
    """The policy (with a LoRA adapter when asked), its tokenizer, and the frozen reference
    when KL is on and no adapter can be switched off to recover it."""
    from trajlab.models import load_model

    model, tok = load_trainable(cfg.model)
    ref_model = None
    if cfg.algo.kl != "none" and not cfg.model.lora:
        ref_model = load_model(cfg.model.model, dtype=cfg.model.dtype)  # frozen, only with KL
        ref_model.requires_grad_(False)
    return model, tok, ref_model


def make_optimizer(cfg: TrainConfig, trainable: list[torch.nn.Parameter]) -> tuple[Any, Any]:
    return adamw(trainable, cfg.optim, cfg.steps * cfg.algo.epochs * cfg.algo.mini_batches)


def eval_task_options(d: Any) -> dict[str, Any]:
    """Task options of the held-out split: an hf: task's field mapping when it is the training
    task; a generator's options are the training distribution's and are not carried over."""
    same_hf = d.task.startswith("hf:") and (d.eval_task or d.task) == d.task
    return dict(d.options) if same_hf else {}


def load_examples(
    task: str, split: str, size: int, seed: int, data_dir: str = "", **options: Any
) -> list[Example]:
    """Examples of a built-in task, benchmark or file, through trajlab.tasks.load_task."""
    from trajlab.tasks import load_task

    try:
        return load_task(
            task, split=split, n=size or None, seed=seed, data_dir=data_dir or None, **options
        )
    except TypeError as e:  # an option the generator does not take
        raise ConfigError(f"data.options: {e}") from None


def prepare_run_dir(out: Path, cfg: TrainConfig, argv: list[str] | None) -> None:
    """Create run.json and config.yaml, or check that an existing run has the same config."""
    start_or_resume(out, "train", to_dict(cfg), "config.yaml", RESUMABLE_KEYS, argv)
    (out / "trajectories").mkdir(parents=True, exist_ok=True)


def resume(run: Run) -> None:
    """Continue from the newest checkpoint; cut back whatever was written after it."""
    out = run.out
    ckpt = latest_checkpoint(out / "checkpoints")
    step = 0
    if ckpt is not None:
        state = load_checkpoint(ckpt, run.model, run.optimizer, run.scheduler)
        run.sampler.load_state_dict(state["sampler"])
        step = int(state["step"])
        run.start_step = step
        print(f"resuming {out} from {ckpt.name} (step {step})", file=sys.stderr, flush=True)
    # Files from steps after the checkpoint (a run killed mid-step) would be duplicated.
    metrics = out / "metrics.jsonl"
    if metrics.exists():
        rows = []
        for line in metrics.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line
            if ckpt is not None and row.get("step", 0) <= step:
                rows.append(row)
        metrics.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        run.rows = rows
    for folder in (out / "trajectories", out / "eval"):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            name = p.name.split(".")[0]
            if not name.startswith("step_"):
                continue
            if ckpt is None or int(name[5:]) > step:
                shutil.rmtree(p) if p.is_dir() else p.unlink()


def save(run: Run, step: int) -> None:
    save_checkpoint(
        run.out / "checkpoints",
        step,
        run.model,
        run.optimizer,
        run.scheduler,
        state={"sampler": run.sampler.state_dict()},
        tokenizer=run.tokenizer,
        keep=run.config.log.keep_checkpoints,
    )


def finish(run: Run, status: str | None) -> None:
    """Summary, plots and tools closed; run.json gets `status` (None: an exception is on its
    way and failure_recorded has written the reason)."""
    if run.rows:
        (run.out / "summary.md").write_text(training_summary(run.rows, run.config, status))
    if run.config.log.plots and run.rows:
        try:
            write_plots(run.out / "metrics.png", run.rows)
        except Exception as e:  # a plot must never lose a finished run
            print(f"warning: could not write metrics.png: {e!r}", file=sys.stderr)
    if run.tb is not None:
        run.tb.close()
    if run.own_tools:
        for t in run.tools.values():
            t.close()
    if status is not None:
        update_run_json(run.out, status=status)
