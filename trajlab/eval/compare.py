"""Honest comparisons: intervals for one run's metrics, paired differences for two runs.

    trajlab compare runs/eval-base runs/eval-rl          # a table; --json for a machine
    lo, hi = bootstrap_ci(per_example_values)            # 95 % interval of a mean
    result = compare_runs("runs/a", "runs/b")            # {"shared": n, "metrics": [...]}

Unit of resampling: the example. A metric's per-example value is its mean over that
example's samples (accuracy = fraction of samples correct, tool-call rate = fraction of
samples that called a tool, ...). One run's interval resamples its examples; a comparison
resamples the examples both runs evaluated, keeping each example's pair together (the
paired bootstrap, Efron & Tibshirani 1993, ch. 16), which is far tighter than two separate
intervals when both runs find the same examples hard. A difference whose interval contains
0 is flagged `within noise`: the data do not show which run is better.

Intervals are percentile intervals over `n_boot` resamples drawn from a fixed seed, so the
same files always give the same numbers. They cover sampling of *examples*, not of seeds:
to say a training recipe helps, compare several seeds as well (docs/results.md does).

A run is an evaluation run directory (its trajectories.jsonl), a trajectories JSONL file,
or a training run directory, which means its newest periodic evaluation (eval/step_N/);
`RUN/eval/step_000010` picks another.

What it does not do: multiple-comparison corrections, or compare training curves.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trajlab.types import Trajectory, iter_jsonl

LEVEL = 0.95
N_BOOT = 10_000


def _reward_component(key: str) -> Callable[[Trajectory], float | None]:
    def get(t: Trajectory) -> float | None:
        if t.reward is None:
            return None
        comps = t.reward.components
        if key in comps:
            return float(comps[key])
        return next((float(v) for k, v in comps.items() if k.endswith("/" + key)), None)

    return get


# name -> per-trajectory value (None: the metric does not apply to that trajectory)
METRICS: dict[str, Callable[[Trajectory], float | None]] = {
    "accuracy": lambda t: float(bool(t.metadata.get("correct", False))),
    "tool_call_rate": lambda t: float(bool(t.tool_calls)),
    "answered_rate": lambda t: float(t.prediction is not None),
    "em": _reward_component("em"),
    "f1": _reward_component("f1"),
    "cover_em": _reward_component("cover_em"),
    "retrieval_recall": lambda t: t.metadata.get("retrieval_recall"),
    "reward_mean": lambda t: None if t.reward is None else float(t.reward.total),
    "model_tokens_mean": lambda t: float(t.num_model_tokens),
}


def bootstrap_ci(
    values: Sequence[float], n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL
) -> tuple[float, float]:
    """Percentile interval of the mean of `values` over `n_boot` resamples."""
    x = np.asarray(values, dtype=np.float64)  # [n]
    if x.size == 0:
        return (float("nan"), float("nan"))
    if x.size == 1 or np.all(x == x[0]):
        return (float(x[0]), float(x[0]))
    means = _resampled_means(x, n_boot, seed)  # [n_boot]
    a = (1 - level) / 2
    return (float(np.quantile(means, a)), float(np.quantile(means, 1 - a)))


def _resampled_means(x: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    chunk = max(1, 2_000_000 // x.size)  # bounds memory for large runs
    for s in range(0, n_boot, chunk):
        k = min(chunk, n_boot - s)
        idx = rng.integers(0, x.size, size=(k, x.size))  # [k, n]
        out[s : s + k] = x[idx].mean(axis=1)
    return out


def per_example(trajs: Sequence[Trajectory]) -> dict[str, dict[str, float]]:
    """metric -> {example_id: mean over that example's samples}, for metrics that apply."""
    sums: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for t in trajs:
        for name, fn in METRICS.items():
            v = fn(t)
            if v is not None:
                sums[name][t.example_id].append(v)
    return {
        name: {ex: sum(vs) / len(vs) for ex, vs in by_ex.items()} for name, by_ex in sums.items()
    }


def intervals(trajs: Sequence[Trajectory], n_boot: int = N_BOOT) -> dict[str, list[float]]:
    """`<metric>_ci`: [low, high] 95 % bootstrap interval over examples, per metric."""
    return {
        f"{name}_ci": list(bootstrap_ci(list(by_ex.values()), n_boot))
        for name, by_ex in per_example(trajs).items()
    }


def resolve_run(path: str | Path) -> Path:
    """The trajectories file a run path stands for (see the module docstring)."""
    p = Path(path)
    if p.is_file():
        return p
    if (p / "trajectories.jsonl").is_file():
        return p / "trajectories.jsonl"
    evals = sorted((p / "eval").glob("step_*/trajectories.jsonl")) if (p / "eval").is_dir() else []
    if evals:
        return evals[-1]
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist; give a run directory or a trajectories file")
    raise FileNotFoundError(
        f"{p} has no trajectories.jsonl and no eval/step_N/ evaluation; compare evaluation runs "
        "(trajlab eval) or training runs with periodic evaluation (eval.every > 0)"
    )


def compare_runs(
    a: str | Path, b: str | Path, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL
) -> dict[str, Any]:
    """Per metric: both runs' means over the shared examples, the mean paired difference
    b - a, its bootstrap interval and whether that interval contains 0."""
    pa, pb = resolve_run(a), resolve_run(b)
    ea, eb = per_example(list(iter_jsonl(pa))), per_example(list(iter_jsonl(pb)))
    ids_a = set().union(*(v.keys() for v in ea.values())) if ea else set()
    ids_b = set().union(*(v.keys() for v in eb.values())) if eb else set()
    shared = sorted(ids_a & ids_b)
    if not shared:
        raise ValueError(
            f"{pa} and {pb} share no example ids; a paired comparison needs the same examples "
            "(same task, split and seed)"
        )
    alpha = (1 - level) / 2
    rows = []
    for name in METRICS:
        if name not in ea or name not in eb:
            continue
        ids = [i for i in shared if i in ea[name] and i in eb[name]]
        if not ids:
            continue
        va = np.array([ea[name][i] for i in ids])  # [n]
        vb = np.array([eb[name][i] for i in ids])  # [n]
        diff = vb - va  # [n]
        if np.all(diff == diff[0]):
            lo = hi = float(diff[0])
        else:
            means = _resampled_means(diff, n_boot, seed)
            lo, hi = float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))
        rows.append(
            {
                "metric": name,
                "n": len(ids),
                "a": float(va.mean()),
                "b": float(vb.mean()),
                "diff": float(diff.mean()),
                "ci": [lo, hi],
                "within_noise": bool(lo <= 0.0 <= hi),
            }
        )
    return {
        "a": str(pa),
        "b": str(pb),
        "shared": len(shared),
        "only_a": len(ids_a - ids_b),
        "only_b": len(ids_b - ids_a),
        "level": level,
        "n_boot": n_boot,
        "metrics": rows,
    }


def format_comparison(result: dict[str, Any]) -> str:
    """The comparison as a Markdown table with one verdict per metric."""
    pct = round(result["level"] * 100)
    lines = [
        f"A: {result['a']}",
        f"B: {result['b']}",
        f"{result['shared']} shared examples (only in A: {result['only_a']}, only in B: "
        f"{result['only_b']}); paired bootstrap, {result['n_boot']} resamples",
        "",
        f"| metric | A | B | B - A | {pct} % interval | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["metrics"]:
        lo, hi = r["ci"]
        if r["within_noise"]:
            verdict = "within noise"
        else:
            verdict = "B higher" if r["diff"] > 0 else "B lower"
        lines.append(
            f"| {r['metric']} | {_fmt(r['a'])} | {_fmt(r['b'])} | {r['diff']:+.3f} | "
            f"[{lo:+.3f}, {hi:+.3f}] | {verdict} |"
        )
    return "\n".join(lines)


def _fmt(v: float) -> str:
    return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"


# -- the `trajlab compare` command ------------------------------------------------------


def configure(p: Any) -> None:
    p.add_argument("run_a", help="run A: an evaluation run, a trajectories file, or a training run")
    p.add_argument("run_b", help="run B, compared as B - A over the examples both evaluated")
    p.add_argument(
        "--n-boot", type=int, default=N_BOOT, help=f"bootstrap resamples (default: {N_BOOT})"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the resampling (default: 0)")
    p.add_argument(
        "--level", type=float, default=LEVEL, help=f"interval coverage (default: {LEVEL})"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def main(args: Any) -> int:
    if args.n_boot < 1:
        raise ValueError(f"--n-boot must be >= 1, got {args.n_boot}")
    if not 0 < args.level < 1:
        raise ValueError(f"--level must be between 0 and 1, got {args.level}")
    result = compare_runs(args.run_a, args.run_b, args.n_boot, args.seed, args.level)
    print(json.dumps(result, indent=2) if args.json else format_comparison(result))
    return 0
