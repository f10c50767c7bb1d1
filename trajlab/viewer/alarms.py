"""Alarms: early signs that a run is going wrong, computed from metrics.jsonl rows.

Usage (the trainer prints these; the viewer shows them on the runs page):

    from trajlab.viewer.alarms import check_alarms
    for alarm in check_alarms(rows):        # rows: the dicts of metrics.jsonl, in step order
        print(alarm)

Each alarm is a small pure function `(rows, config) -> Alarm | None` registered in
`ALARMS`. Every rule compares a *recent* window of steps with an *early* window (or
the best window so far), using window means so that one noisy step does not fire.
Thresholds live in `AlarmConfig`; every field is documented where it is declared.

The rules (docs/viewer.md has the table):
- tool_call_rate_collapse: the tool-call rate fell far below its best level. RL on
  tool use commonly collapses to "never call the tool" (SimpleTIR, ToRL report it).
- format_up_accuracy_down: the format reward rises while accuracy falls, the
  classic reward-hacking signature.
- train_eval_divergence: training reward/accuracy improves but held-out evaluation
  does not follow (overfitting or hacking a train-only reward).
- response_length_explosion: mean response length grew by a large factor.
- truncated_or_errored: a large fraction of recent trajectories ended truncated
  (length, context overflow) or errored.
- entropy_collapse: per-token entropy fell to a small fraction of its early level.
- logprob_mismatch: the trainer's logprobs of the sampled tokens disagree with the
  sampler's (k3 KL above a threshold): a numerics or sampling-settings bug.
- no_learning_signal: every prompt group had zero reward variance for several steps.

Metric names follow docs/run_directory.md. Evaluation values are read from keys
prefixed `eval/` (the viewer merges periodic `eval/step_N/metrics.json` into the rows
when the trainer does not log them itself). Keys that a run does not log simply mean
the corresponding rule stays silent.

What this module does not do: read files, plot, or decide to stop a run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Row = dict[str, Any]


@dataclass
class AlarmConfig:
    """Thresholds for every alarm. Defaults are deliberately conservative."""

    window: int = 5  # steps averaged for the "early", "recent" and rolling windows
    min_steps: int = 6  # no history rule fires with fewer rows than this

    # tool_call_rate_collapse
    tool_rate_keys: tuple[str, ...] = ("tool_call_rate", "tools/call_rate")
    tool_rate_min_peak: float = 0.2  # only a rate that once reached this can collapse
    tool_rate_drop: float = 0.5  # fires when recent <= peak * (1 - drop)

    # format_up_accuracy_down
    format_keys: tuple[str, ...] = ("reward/format/mean", "format_reward", "reward/format")
    accuracy_keys: tuple[str, ...] = (
        "accuracy",
        "reward/correct/mean",
        "reward/accuracy/mean",
        "reward/correctness/mean",
    )
    format_rise: float = 0.1  # absolute rise of the format reward, early -> recent
    accuracy_fall: float = 0.05  # absolute fall of accuracy, early -> recent

    # train_eval_divergence: (train key, eval key) pairs, first pair present wins
    train_eval_pairs: tuple[tuple[str, str], ...] = (
        ("accuracy", "eval/accuracy"),
        ("reward/total/mean", "eval/reward/total/mean"),
        ("reward/mean", "eval/reward/mean"),
    )
    divergence_gap: float = 0.15  # (train gain) - (eval gain) between first and last eval

    # response_length_explosion
    length_keys: tuple[str, ...] = ("response_length/mean", "response_length")
    length_factor: float = 2.0  # recent mean >= factor * early mean ...
    length_min_increase: float = 64.0  # ... and grew by at least this many tokens

    # truncated_or_errored: fractions of trajectories per step (summed within each group)
    truncated_keys: tuple[str, ...] = (
        "stop_reason/length",
        "stop_reason/context_overflow",
        "filtered/overlong",
    )
    errored_keys: tuple[str, ...] = ("stop_reason/error", "stop_reason/tool_error")
    truncated_max: float = 0.3  # fires when the recent truncated fraction reaches this
    errored_max: float = 0.2  # fires when the recent errored fraction reaches this

    # entropy_collapse: the policy's token entropy fell to a small part of its start
    entropy_keys: tuple[str, ...] = ("entropy",)
    entropy_collapse_frac: float = 0.2  # fires when recent <= early * frac ...
    entropy_floor: float = 0.05  # ... or when the recent mean is below this (nats)

    # logprob_mismatch: the trainer scores sampled tokens differently from the sampler
    mismatch_key: str = "mismatch/kl_k3"
    mismatch_max: float = 0.05  # k3 KL(sampler || trainer) per token, recent-window mean

    # no_learning_signal: every prompt group had one reward for several steps in a row
    zero_variance_key: str = "groups/zero_variance"
    zero_variance_steps: int = 3  # consecutive steps with all groups at zero variance


@dataclass
class Alarm:
    """One alarm: which rule, how bad, at which step, and the numbers behind it."""

    name: str
    severity: str  # "warning" | "critical"
    step: int | None  # the last step of the window that triggered it
    message: str
    evidence: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        at = f" (step {self.step})" if self.step is not None else ""
        return f"[{self.severity.upper()}] {self.name}{at}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "severity": self.severity,
            "step": self.step,
            "message": self.message,
            "evidence": dict(self.evidence),
        }


# -- helpers ---------------------------------------------------------------


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def series(rows: Sequence[Row], key: str) -> list[tuple[int, float]]:
    """(step, value) for every row that has a finite number under `key`."""
    out = []
    for i, r in enumerate(rows):
        v = _num(r.get(key))
        if v is not None:
            step = r.get("step")
            out.append((int(step) if isinstance(step, (int, float)) else i, v))
    return out


def _first_key(rows: Sequence[Row], keys: Sequence[str]) -> str | None:
    for k in keys:
        if any(_num(r.get(k)) is not None for r in rows):
            return k
    return None


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def _early_recent(pts: list[tuple[int, float]], window: int) -> tuple[float, float, int]:
    """Means of the first and last `w` points, w = min(window, len // 2); and the last step."""
    w = max(1, min(window, len(pts) // 2))
    vals = [v for _, v in pts]
    return _mean(vals[:w]), _mean(vals[-w:]), pts[-1][0]


def _summed_fraction(rows: Sequence[Row], keys: Sequence[str]) -> list[tuple[int, float]]:
    """Per row, the sum of whichever of `keys` it has (rows with none are skipped)."""
    out = []
    for i, r in enumerate(rows):
        vals = [_num(r.get(k)) for k in keys]
        vals = [v for v in vals if v is not None]
        if vals:
            step = r.get("step")
            out.append((int(step) if isinstance(step, (int, float)) else i, sum(vals)))
    return out


# -- the rules ---------------------------------------------------------------


def tool_call_rate_collapse(rows: Sequence[Row], cfg: AlarmConfig) -> Alarm | None:
    key = _first_key(rows, cfg.tool_rate_keys)
    pts = series(rows, key) if key else []
    if len(pts) < max(cfg.min_steps, cfg.window + 1):
        return None
    vals = [v for _, v in pts]
    w = cfg.window
    rolling = [_mean(vals[i - w + 1 : i + 1]) for i in range(w - 1, len(vals))]
    peak, recent = max(rolling), rolling[-1]
    if peak >= cfg.tool_rate_min_peak and recent <= peak * (1 - cfg.tool_rate_drop):
        return Alarm(
            "tool_call_rate_collapse",
            "critical" if recent <= peak * 0.1 else "warning",
            pts[-1][0],
            f"{key} fell from a peak of {peak:.3f} to {recent:.3f} "
            f"({w}-step means); the policy is abandoning the tool",
            {"peak": peak, "recent": recent},
        )
    return None


def format_up_accuracy_down(rows: Sequence[Row], cfg: AlarmConfig) -> Alarm | None:
    fkey, akey = _first_key(rows, cfg.format_keys), _first_key(rows, cfg.accuracy_keys)
    if not fkey or not akey:
        return None
    fpts, apts = series(rows, fkey), series(rows, akey)
    if min(len(fpts), len(apts)) < cfg.min_steps:
        return None
    f0, f1, step = _early_recent(fpts, cfg.window)
    a0, a1, _ = _early_recent(apts, cfg.window)
    if f1 - f0 >= cfg.format_rise and a0 - a1 >= cfg.accuracy_fall:
        return Alarm(
            "format_up_accuracy_down",
            "critical",
            step,
            f"{fkey} rose {f0:.3f} -> {f1:.3f} while {akey} fell {a0:.3f} -> {a1:.3f}: "
            "likely reward hacking on the format reward",
            {"format_early": f0, "format_recent": f1, "accuracy_early": a0, "accuracy_recent": a1},
        )
    return None


def train_eval_divergence(rows: Sequence[Row], cfg: AlarmConfig) -> Alarm | None:
    for tkey, ekey in cfg.train_eval_pairs:
        epts = series(rows, ekey)
        tpts = series(rows, tkey)
        if len(epts) < 2 or len(tpts) < 2:
            continue

        # The train value at an eval step is the mean of the `window` train points up to it.
        def train_at(step: int, tpts: list[tuple[int, float]] = tpts) -> float | None:
            before = [v for s, v in tpts if s <= step][-cfg.window :]
            return _mean(before) if before else None

        t_first, t_last = train_at(epts[0][0]), train_at(epts[-1][0])
        if t_first is None or t_last is None:
            continue
        e_first, e_last = epts[0][1], epts[-1][1]
        gap = (t_last - t_first) - (e_last - e_first)
        if gap >= cfg.divergence_gap:
            return Alarm(
                "train_eval_divergence",
                "warning",
                epts[-1][0],
                f"{tkey} changed {t_first:.3f} -> {t_last:.3f} but {ekey} changed "
                f"{e_first:.3f} -> {e_last:.3f} (gap {gap:.3f}): training gains do not transfer",
                {
                    "train_first": t_first,
                    "train_last": t_last,
                    "eval_first": e_first,
                    "eval_last": e_last,
                },
            )
        return None  # the first pair present decides
    return None


def response_length_explosion(rows: Sequence[Row], cfg: AlarmConfig) -> Alarm | None:
    key = _first_key(rows, cfg.length_keys)
    pts = series(rows, key) if key else []
    if len(pts) < cfg.min_steps:
        return None
    l0, l1, step = _early_recent(pts, cfg.window)
    if l0 > 0 and l1 >= cfg.length_factor * l0 and l1 - l0 >= cfg.length_min_increase:
        return Alarm(
            "response_length_explosion",
            "warning",
            step,
            f"{key} grew {l0:.0f} -> {l1:.0f} tokens ({l1 / l0:.1f}x)",
            {"early": l0, "recent": l1},
        )
    return None


def truncated_or_errored(rows: Sequence[Row], cfg: AlarmConfig) -> Alarm | None:
    # Needs only the recent window, so it also works on a single eval metrics row.
    parts = []
    evidence = {}
    for label, keys, limit in (
        ("truncated", cfg.truncated_keys, cfg.truncated_max),
        ("errored", cfg.errored_keys, cfg.errored_max),
    ):
        pts = _summed_fraction(rows, keys)
        if not pts:
            continue
        recent = _mean([v for _, v in pts[-cfg.window :]])
        evidence[label] = recent
        if recent >= limit:
            parts.append((label, recent, limit, pts[-1][0]))
    if not parts:
        return None
    msg = "; ".join(f"{p[1]:.0%} of recent trajectories {p[0]} (limit {p[2]:.0%})" for p in parts)
    return Alarm("truncated_or_errored", "warning", parts[0][3], msg, evidence)


def entropy_collapse(rows: Sequence[Row], cfg: AlarmConfig) -> Alarm | None:
    key = _first_key(rows, cfg.entropy_keys)
    pts = series(rows, key) if key else []
    if len(pts) < cfg.min_steps:
        return None
    e0, e1, step = _early_recent(pts, cfg.window)
    if e0 > 0 and (e1 <= e0 * cfg.entropy_collapse_frac or e1 < cfg.entropy_floor):
        return Alarm(
            "entropy_collapse",
            "warning",
            step,
            f"{key} fell {e0:.3f} -> {e1:.3f} nats per token: the policy has stopped exploring "
            "(lower the learning rate, raise the temperature, or add clip-higher / an entropy bonus)",
            {"early": e0, "recent": e1},
        )
    return None


def logprob_mismatch(rows: Sequence[Row], cfg: AlarmConfig) -> Alarm | None:
    pts = series(rows, cfg.mismatch_key)
    if not pts:
        return None
    recent = _mean([v for _, v in pts[-cfg.window :]])
    if recent > cfg.mismatch_max:
        return Alarm(
            "logprob_mismatch",
            "critical" if recent > 4 * cfg.mismatch_max else "warning",
            pts[-1][0],
            f"the trainer's logprobs of sampled tokens differ from the sampler's "
            f"(k3 KL {recent:.4f} per token, limit {cfg.mismatch_max}): check the decode dtype, "
            "temperature and top-p/top-k, or keep truncated importance weights (algo.tis_cap) on",
            {"recent": recent},
        )
    return None


def no_learning_signal(rows: Sequence[Row], cfg: AlarmConfig) -> Alarm | None:
    pts = series(rows, cfg.zero_variance_key)
    n = cfg.zero_variance_steps
    if len(pts) < n or any(v < 1.0 for _, v in pts[-n:]):
        return None
    return Alarm(
        "no_learning_signal",
        "critical",
        pts[-1][0],
        f"for {n} steps every prompt group had one reward for all its samples, so every "
        "advantage was 0 and nothing was learned: make the task easier or the reward denser, "
        "sample more (group_size, temperature), or turn on filters.zero_variance with max_rounds > 1",
        {"steps": float(n)},
    )


ALARMS: dict[str, Callable[[Sequence[Row], AlarmConfig], Alarm | None]] = {
    "tool_call_rate_collapse": tool_call_rate_collapse,
    "format_up_accuracy_down": format_up_accuracy_down,
    "train_eval_divergence": train_eval_divergence,
    "response_length_explosion": response_length_explosion,
    "truncated_or_errored": truncated_or_errored,
    "entropy_collapse": entropy_collapse,
    "logprob_mismatch": logprob_mismatch,
    "no_learning_signal": no_learning_signal,
}


def check_alarms(metrics_rows: Sequence[Row], config: AlarmConfig | None = None) -> list[Alarm]:
    """Run every rule in ALARMS over the rows (metrics.jsonl dicts, in step order)."""
    cfg = config or AlarmConfig()
    rows = sorted(
        metrics_rows,
        key=lambda r: r.get("step", 0) if isinstance(r.get("step"), (int, float)) else 0,
    )
    found = [rule(rows, cfg) for rule in ALARMS.values()]
    return [a for a in found if a is not None]


def alarm_config_from_overrides(overrides: Sequence[str]) -> AlarmConfig:
    """AlarmConfig with `name=value` overrides (numbers only), e.g. ["tool_rate_drop=0.6"]."""
    cfg = AlarmConfig()
    numeric = {k: type(v) for k, v in vars(cfg).items() if isinstance(v, (int, float))}
    for item in overrides:
        name, sep, value = item.partition("=")
        if not sep or name not in numeric:
            raise ValueError(
                f"bad alarm threshold {item!r}: expected NAME=VALUE with NAME one of {', '.join(sorted(numeric))}"
            )
        try:
            setattr(cfg, name, numeric[name](value))
        except ValueError:
            raise ValueError(
                f"bad alarm threshold {item!r}: {name} takes a {numeric[name].__name__}"
            ) from None
    return cfg
