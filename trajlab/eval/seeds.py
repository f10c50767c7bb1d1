"""Several seeds of one recipe, summarised: mean and spread at every evaluation, and curves.

    trajlab seeds runs/zero_rl_s0 runs/zero_rl_s1 runs/zero_rl_s2 --plot curves.png
    summary = summarize_seeds([...])      # {"eval": [...], "final": {...}, "runs": [...]}

A training run's held-out numbers are its metrics.jsonl `eval/*` keys (trajlab train with
eval.every > 0). At each evaluation step that every run reached, the table gives the mean
over seeds, the min-max range and each seed's value; so a reader sees at once whether a
gain is larger than the seed-to-seed spread. The plot draws the mean of each training
curve (reward, held-out accuracy, tool-call rate, response length, entropy) with a band
from the lowest to the highest seed.

The spread here is over seeds (the training randomness); each single evaluation also has
an interval over its examples (eval/accuracy_ci_*, trajlab compare). Both matter: a
recipe helps when its gain beats both.

What it does not do: pick the best seed, or compare two recipes (compare their runs with
`trajlab compare`, seed by seed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EVAL_KEYS = (
    "eval/accuracy",
    "eval/tool_call_rate",
    "eval/response_tokens_mean",
    "eval/answered_rate",
    "eval/em",
    "eval/f1",
    "eval/cover_em",
    "eval/retrieval_recall",
)
# Shown in a second table when the runs have them (QA and search runs).
QA_KEYS = ("eval/f1", "eval/cover_em", "eval/retrieval_recall", "eval/answered_rate")
CURVES = (
    ("reward/total/mean", "training reward"),
    ("eval/accuracy", "held-out accuracy"),
    ("tool_call_rate", "tool-call rate (training rollouts)"),
    ("eval/tool_call_rate", "tool-call rate (held-out)"),
    ("eval/f1", "held-out answer F1"),
    ("eval/retrieval_recall", "held-out gold-passage recall"),
    ("response_length/mean", "response tokens"),
    ("entropy", "entropy (nats / token)"),
)


def read_rows(run: str | Path) -> list[dict[str, Any]]:
    p = Path(run) / "metrics.jsonl"
    if not p.is_file():
        raise FileNotFoundError(
            f"{p} not found: give training run directories (trajlab train writes metrics.jsonl)"
        )
    rows = []
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn last line of a killed run
    for r in rows:  # eval keys a run did not log come from its eval/step_N/metrics.json
        if "eval/accuracy" not in r:
            continue
        m = Path(run) / "eval" / f"step_{int(r['step']):06d}" / "metrics.json"
        if m.is_file():
            metrics = json.loads(m.read_text())
            for key in EVAL_KEYS:
                if key not in r and isinstance(metrics.get(key[5:]), (int, float)):
                    r[key] = float(metrics[key[5:]])
    return rows


def _spread(values: list[float]) -> dict[str, Any]:
    return {
        "mean": sum(values) / len(values),
        "min": min(values),
        "max": max(values),
        "values": values,
    }


def summarize_seeds(runs: list[str | Path]) -> dict[str, Any]:
    """Per evaluation step every run reached: mean, min, max and values of EVAL_KEYS."""
    if len(runs) < 2:
        raise ValueError("give at least two runs (seeds) to summarise their spread")
    all_rows = [read_rows(r) for r in runs]
    by_run = [
        {int(r["step"]): r for r in rows if isinstance(r.get("eval/accuracy"), (int, float))}
        for rows in all_rows
    ]
    steps = sorted(set.intersection(*(set(b) for b in by_run)))
    if not steps:
        raise ValueError(
            "these runs share no evaluation step; train them with the same eval.every "
            "(and eval.at_start for the base model's numbers)"
        )
    evals = []
    for step in steps:
        point: dict[str, Any] = {"step": step}
        for key in EVAL_KEYS:
            vals = [b[step].get(key) for b in by_run]
            if all(isinstance(v, (int, float)) for v in vals):
                point[key] = _spread([float(v) for v in vals])
        evals.append(point)
    first, last = evals[0], evals[-1]
    gains = [
        b - a
        for a, b in zip(
            first["eval/accuracy"]["values"], last["eval/accuracy"]["values"], strict=True
        )
    ]
    wall = [_wall_time(r) for r in runs]
    load = [_load(rows) for rows in all_rows]
    return {
        "runs": [str(r) for r in runs],
        "eval": evals,
        "final": {
            "first_step": first["step"],
            "last_step": last["step"],
            "gain": _spread(gains),
            "wall_time_s": _spread(wall) if all(w is not None for w in wall) else None,
            "load_avg_1m": _spread(load) if all(v is not None for v in load) else None,
        },
    }


def _wall_time(run: str | Path) -> float | None:
    """Seconds from run.json's `created` to its last `updated` (a resumed run counts its pause)."""
    import datetime as dt

    p = Path(run) / "run.json"
    try:
        info = json.loads(p.read_text())
        t0, t1 = (dt.datetime.fromisoformat(info[k]) for k in ("created", "updated"))
    except (OSError, KeyError, ValueError):
        return None
    return (t1 - t0).total_seconds()


def _load(rows: list[dict[str, Any]]) -> float | None:
    vals = [r["machine/load_avg_1m"] for r in rows if "machine/load_avg_1m" in r]
    return sum(vals) / len(vals) if vals else None


def format_summary(s: dict[str, Any]) -> str:
    """Markdown: one row per evaluation step, mean [min, max] and each seed's value."""
    n = len(s["runs"])
    lines = [
        f"{n} seeds: " + ", ".join(s["runs"]),
        "",
        "| step | held-out accuracy, mean [min, max] | per seed | tool-call rate, mean [min, max] |",
        "|---|---|---|---|",
    ]
    for p in s["eval"]:
        acc, tools = p["eval/accuracy"], p.get("eval/tool_call_rate")
        lines.append(
            f"| {p['step']} | {acc['mean']:.3f} [{acc['min']:.3f}, {acc['max']:.3f}] | "
            + ", ".join(f"{v:.3f}" for v in acc["values"])
            + " | "
            + (f"{tools['mean']:.3f} [{tools['min']:.3f}, {tools['max']:.3f}]" if tools else "-")
            + " |"
        )
    qa = [k for k in QA_KEYS if k in s["eval"][0]]
    if qa:
        lines += [
            "",
            "| step | " + " | ".join(f"{k[5:]}, mean [min, max]" for k in qa) + " |",
            "|---|" + "---|" * len(qa),
        ]
        for p in s["eval"]:
            cells = [f"{p[k]['mean']:.3f} [{p[k]['min']:.3f}, {p[k]['max']:.3f}]" for k in qa]
            lines.append(f"| {p['step']} | " + " | ".join(cells) + " |")
    f = s["final"]
    g = f["gain"]
    lines += [
        "",
        f"gain in held-out accuracy, step {f['first_step']} -> {f['last_step']}: "
        f"mean {g['mean']:+.3f}, min {g['min']:+.3f}, max {g['max']:+.3f} over {n} seeds",
    ]
    if f["wall_time_s"]:
        w = f["wall_time_s"]
        lines.append(
            f"wall time per run: {w['mean'] / 60:.1f} min [{w['min'] / 60:.1f}, {w['max'] / 60:.1f}]"
        )
    if f["load_avg_1m"]:
        ld = f["load_avg_1m"]
        lines.append(f"load average (1 min) during the runs: {ld['min']:.2f}-{ld['max']:.2f}")
    return "\n".join(lines)


def plot_seeds(runs: list[str | Path], path: str | Path) -> Path:
    """Mean curve and min-max band over seeds for each of CURVES that the runs logged."""
    from trajlab.eval.report import plot_curves

    all_rows = [read_rows(r) for r in runs]
    panels = []
    for key, title in CURVES:
        per_run = [
            {int(r["step"]): float(r[key]) for r in rows if isinstance(r.get(key), (int, float))}
            for rows in all_rows
        ]
        steps = sorted(set.intersection(*(set(p) for p in per_run))) if per_run else []
        if steps:
            panels.append((title, steps, [[p[s] for p in per_run] for s in steps]))
    if not panels:
        raise ValueError("the runs share no logged step of any curve; nothing to plot")
    return plot_curves(path, panels, f"mean over {len(runs)} seeds, band: min-max")


# -- the `trajlab seeds` command ----------------------------------------------------------


def configure(p: Any) -> None:
    p.add_argument("runs", nargs="+", help="training run directories, one per seed")
    p.add_argument("--plot", help="write the curves (mean and min-max band) to this PNG")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def main(args: Any) -> int:
    s = summarize_seeds(args.runs)
    print(json.dumps(s, indent=2) if args.json else format_summary(s))
    if args.plot:
        print(f"curves written to {plot_seeds(args.runs, args.plot)}")
    return 0
