"""Per-step training metrics: what goes into metrics.jsonl, the progress line and the plots.

    row = rollout_metrics(trajectories, correct, group_keys)     # reward, accuracy, tools, lengths
    print(progress_line(row, step, total_steps))
    write_plots(run_dir / "metrics.png", rows)

Key names follow docs/run_directory.md: reward components as `reward/<name>/mean|std`,
flat names elsewhere (`accuracy`, `tool_call_rate`, `response_length/mean`, `entropy`,
`kl`, `clip_fraction`, `grad_norm`, `filtered/<reason>`, `time/<phase>`, `tokens_per_s`),
stop reasons as `stop_reason/<reason>` fractions (read by trajlab.viewer.alarms).

What this module does not do: compute losses or decide anything; it only summarises.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trajlab.types import STOP_REASONS, Trajectory


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else 0.0


def _std(xs: Sequence[float]) -> float:
    if len(xs) < 2:
        return 0.0
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs))


def rollout_metrics(
    trajs: Sequence[Trajectory], correct: Sequence[bool], group_keys: Sequence[str]
) -> dict[str, float]:
    """Reward, accuracy, group pass rates, tools, lengths and stop reasons of a step's rollouts."""
    out: dict[str, float] = {"num_trajectories": float(len(trajs))}
    if not trajs:
        return out
    totals = [t.reward.total for t in trajs if t.reward is not None]
    out["reward/total/mean"], out["reward/total/std"] = _mean(totals), _std(totals)
    components: dict[str, list[float]] = defaultdict(list)
    for t in trajs:
        if t.reward is not None:
            for k, v in t.reward.components.items():
                components[k].append(v)
    for k, vs in sorted(components.items()):
        out[f"reward/{k}/mean"], out[f"reward/{k}/std"] = _mean(vs), _std(vs)
    out["accuracy"] = _mean([float(c) for c in correct])
    by_group: dict[str, list[bool]] = defaultdict(list)
    for key, c in zip(group_keys, correct):
        by_group[key].append(bool(c))
    rates = [sum(v) / len(v) for v in by_group.values()]
    out["pass_rate/mean"] = _mean(rates)
    out["pass_rate/all_correct"] = _mean([float(r == 1.0) for r in rates])
    out["pass_rate/all_wrong"] = _mean([float(r == 0.0) for r in rates])
    calls = [c for t in trajs for c in t.tool_calls]
    out["tool_call_rate"] = _mean([float(bool(t.tool_calls)) for t in trajs])
    out["tool_calls_per_trajectory"] = len(calls) / len(trajs)
    out["tool_error_rate"] = _mean([float(not c.ok) for c in calls]) if calls else 0.0
    resp = [float(len(t.response_token_ids)) for t in trajs]
    model_tokens = [float(t.num_model_tokens) for t in trajs]
    out["response_length/mean"], out["response_length/max"] = _mean(resp), max(resp)
    out["model_tokens/mean"] = _mean(model_tokens)
    out["turns/mean"] = _mean([float(t.metadata.get("turns", 0)) for t in trajs])
    out["void_turn_rate"] = _mean([float(t.metadata.get("void_turns", 0) > 0) for t in trajs])
    stops = Counter(t.stop_reason or "unknown" for t in trajs)
    for reason in (*STOP_REASONS, "unknown"):
        if stops.get(reason) or reason in STOP_REASONS:
            out[f"stop_reason/{reason}"] = stops.get(reason, 0) / len(trajs)
    return out


def weighted_stats(parts: Sequence[tuple[float, dict[str, float]]]) -> dict[str, float]:
    """Average per-micro-batch stats dicts, weighted (e.g. by trained tokens)."""
    total = sum(w for w, _ in parts)
    if total <= 0:
        return {}
    keys = {k for _, d in parts for k in d}
    out = {}
    for k in keys:
        if k.endswith("_max"):
            out[k] = max(d[k] for _, d in parts if k in d)
        elif k.endswith("_min"):
            out[k] = min(d[k] for _, d in parts if k in d)
        else:
            out[k] = sum(w * d.get(k, 0.0) for w, d in parts) / total
    return out


def progress_line(row: dict[str, Any], step: int, steps: int) -> str:
    """One human line per step, from a metrics row."""

    def g(key: str, fmt: str = ".3f") -> str:
        v = row.get(key)
        return format(v, fmt) if isinstance(v, (int, float)) else "-"

    parts = [
        f"step {step}/{steps}",
        f"reward {g('reward/total/mean')}±{g('reward/total/std', '.2f')}",
        f"acc {g('accuracy', '.2f')}",
        f"tools {g('tool_call_rate', '.2f')}",
        f"len {g('response_length/mean', '.0f')}",
        f"loss {g('loss', '.4f')}",
        f"gnorm {g('grad_norm', '.3f')}",
    ]
    if "kl" in row:
        parts.append(f"kl {g('kl', '.4f')}")
    if "entropy" in row:
        parts.append(f"ent {g('entropy', '.2f')}")
    filtered = sum(v for k, v in row.items() if k.startswith("filtered/") and isinstance(v, float))
    if filtered:
        parts.append(f"filtered {filtered:.2f}")
    if row.get("dynamic_sampling/shortfall"):
        parts.append(f"short {int(row['dynamic_sampling/shortfall'])} groups")
    if "eval/accuracy" in row:
        parts.append(eval_text(row))
    phases = " ".join(
        f"{k[5:]} {row[k]:.1f}" for k in ("time/rollout", "time/update", "time/eval") if k in row
    )
    parts.append(f"{g('time/step', '.1f')}s ({phases})")
    parts.append(f"{g('tokens_per_s', '.0f')} tok/s")
    return " | ".join(parts)


def eval_text(row: dict[str, Any]) -> str:
    """'EVAL acc 0.660 [0.520, 0.780] tools 0.78' from a row's eval/ keys."""
    ci = ""
    if isinstance(row.get("eval/accuracy_ci_low"), (int, float)):
        ci = f" [{row['eval/accuracy_ci_low']:.3f}, {row['eval/accuracy_ci_high']:.3f}]"
    tools = row.get("eval/tool_call_rate")
    return f"EVAL acc {row['eval/accuracy']:.3f}{ci}" + (
        f" tools {tools:.2f}" if isinstance(tools, (int, float)) else ""
    )


def training_summary(rows: Sequence[dict[str, Any]], config: Any, status: str) -> str:
    """summary.md of a training run: held-out evaluations with their intervals, the last
    step's diagnostics and the alarms that fired. Written when the run stops."""
    steps = [r for r in rows if r.get("step", 0) > 0]
    lines = [
        "# Training summary",
        "",
        f"- status: {status}; steps done: {steps[-1]['step'] if steps else 0} of {config.steps}",
        f"- model: `{config.model.model}`; task: `{config.data.task}`; seed {config.seed}",
        f"- rewards: {', '.join(f'{k} x {v:g}' for k, v in config.reward.weights.items())}",
        "",
    ]
    lines += _eval_table([r for r in rows if isinstance(r.get("eval/accuracy"), (int, float))])
    if steps:
        r = steps[-1]
        lines += ["", f"Last step ({r['step']}):", "", "| metric | value |", "|---|---|"]
        lines += [
            f"| {k} | {r[k]:.4g} |" for k in SUMMARY_KEYS if isinstance(r.get(k), (int, float))
        ]
    try:
        from trajlab.viewer.alarms import check_alarms

        alarms = check_alarms(list(rows))
    except ImportError:
        alarms = []
    lines += ["", "Alarms: " + ("; ".join(str(a) for a in alarms) if alarms else "none")]
    return "\n".join(lines) + "\n"


# The last step's diagnostics shown in summary.md.
SUMMARY_KEYS = (
    "reward/total/mean",
    "accuracy",
    "tool_call_rate",
    "tool_error_rate",
    "groups/zero_variance",
    "entropy",
    "mismatch/kl_k3",
    "grad_norm",
    "response_length/mean",
    "time/step",
    "machine/load_avg_1m",
)


def _with_interval(row: dict[str, Any], key: str) -> str:
    lo, hi = row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high")
    v = row.get(key)
    if not isinstance(v, (int, float)):
        return "-"
    return f"{v:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if isinstance(lo, (int, float)) else "")


def _eval_table(evals: list[dict[str, Any]]) -> list[str]:
    """The held-out evaluations, one line each with intervals, and the first-to-last change."""
    if not evals:
        return []
    ci = _with_interval
    lines = [
        "Held-out evaluation (95 % bootstrap interval over the held-out examples; for the",
        "spread over seeds, run several seeds and `trajlab seeds`):",
        "",
        "| step | accuracy | tool-call rate | answered | response tokens |",
        "|---|---|---|---|---|",
    ]
    for r in evals:
        lines.append(
            f"| {r['step']} | {ci(r, 'eval/accuracy')} | {ci(r, 'eval/tool_call_rate')} | "
            f"{ci(r, 'eval/answered_rate')} | {r.get('eval/response_tokens_mean', 0):.0f} |"
        )
    first, last = evals[0], evals[-1]
    if first is not last:
        lines += [
            "",
            f"Held-out accuracy {first['eval/accuracy']:.3f} (step {first['step']}) -> "
            f"{last['eval/accuracy']:.3f} (step {last['step']}); `trajlab compare "
            f"RUN/eval/step_{first['step']:06d} RUN/eval/step_{last['step']:06d}` gives the "
            "paired interval of the difference.",
        ]
    return lines


PLOT_KEYS = (
    ("reward/total/mean", "reward"),
    ("accuracy", "train accuracy"),
    ("eval/accuracy", "held-out accuracy"),
    ("tool_call_rate", "tool-call rate"),
    ("response_length/mean", "response tokens"),
    ("entropy", "entropy"),
    ("kl", "KL to reference"),
    ("clip_fraction", "clip fraction"),
    ("grad_norm", "grad norm"),
    ("loss", "loss"),
)


def write_plots(path: str | Path, rows: Sequence[dict[str, Any]]) -> Path | None:
    """A grid of the headline curves over steps; keys a run never logged are skipped."""
    from trajlab.eval.report import plot_curves

    panels = []
    for key, title in PLOT_KEYS:
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        if pts:
            panels.append((title, [s for s, _ in pts], [[v] for _, v in pts]))
    return plot_curves(path, panels)


class TensorBoardLogger:
    """Scalars of each metrics row to RUN_DIR/tb (optional: needs the tensorboard package)."""

    def __init__(self, log_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ImportError(
                f"log.tensorboard=true needs the tensorboard package ({e}). "
                "Fix: pip install tensorboard, or set log.tensorboard=false"
            ) from None
        self.writer = SummaryWriter(str(log_dir))

    def log(self, row: dict[str, Any]) -> None:
        step = int(row["step"])
        for k, v in row.items():
            if (
                k not in ("step", "time")
                and isinstance(v, (int, float))
                and not isinstance(v, bool)
            ):
                self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
