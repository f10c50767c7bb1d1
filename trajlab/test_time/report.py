"""summary.md and curve.png of a test-time run (trajlab.test_time.run's metrics).

What it does not do: compute anything; it formats the curve run.py measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _ci(row: dict[str, Any], key: str, signed: bool = False) -> str:
    lo, hi = row[f"{key}_ci"]
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"{f.format(row[key])} [{f.format(lo)}, {f.format(hi)}]"


def write_summary(path: Path, m: dict[str, Any]) -> None:
    verifier = "" if m["verifier"] == "none" else f", verifier `{m['verifier']}`"
    lines = [
        "# Test-time search summary",
        "",
        f"- method: `{m['method']}`{verifier}",
        f"- model: `{m['model']}`; task: `{m['task']}` ({m['num_examples']} questions); "
        f"sampling temperature {m.get('temperature')}",
        f"- samples: `{m.get('samples_run', '')}`",
        "",
        "Budget k: the strategy sees the first k samples of each question. Plain sampling: "
        "one of those k at random (their mean accuracy). pass@k: a question counts when any "
        "of the k is right, the most any selection can reach. Intervals: 95 % bootstrap over "
        "questions; the gain is paired.",
        "",
        "| k | model tokens / question | verifier tokens / question | accuracy | plain sampling "
        "| gain | pass@k | answered |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in m["curve"]:
        lines.append(
            f"| {r['k']} | {r['model_tokens_per_question']:.0f} | "
            f"{r['verifier_tokens_per_question']:.0f} | {_ci(r, 'accuracy')} | "
            f"{_ci(r, 'sample_accuracy')} | {_ci(r, 'gain_over_sample', signed=True)} | "
            f"{r['pass_at_k']:.3f} | {r['answered_rate']:.3f} |"
        )
    path.write_text("\n".join(lines) + "\n")


def write_curve_plot(path: Path, m: dict[str, Any]) -> None:
    """Accuracy against model tokens per question: the strategy, plain sampling, pass@k."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = m["curve"]
    x = [r["model_tokens_per_question"] + r["verifier_tokens_per_question"] for r in curve]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("accuracy", m["method"]), ("sample_accuracy", "plain sampling")):
        y = [r[key] for r in curve]
        err = [[v - r[f"{key}_ci"][0] for v, r in zip(y, curve)],
               [r[f"{key}_ci"][1] - v for v, r in zip(y, curve)]]  # fmt: skip
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label)
    ax.plot(x, [r["pass_at_k"] for r in curve], "k--", marker=".", label="pass@k (oracle)")
    for xi, r in zip(x, curve):
        ax.annotate(f"k={r['k']}", (xi, r["accuracy"]), fontsize=7, xytext=(3, -10),
                    textcoords="offset points")  # fmt: skip
    ax.set_title(f"{m['model']} on {m['task']}: {m['method']} ({m['verifier']})", fontsize=9)
    _save(fig, ax, path, "accuracy")


def plot_runs(runs: list[Path], path: Path) -> Path:
    """One compute-accuracy plot over several test-time runs: per (method, verifier), the
    mean accuracy over the runs that share it (e.g. sampling seeds) with a min-max band,
    and plain sampling and pass@k the same way."""
    import json
    from collections import defaultdict

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines: dict[str, list[list[tuple[float, float]]]] = defaultdict(list)
    for run in runs:
        m = json.loads((Path(run) / "metrics.json").read_text())
        verifier = m["verifier"]
        if verifier.startswith(("orm:", "prm:")):
            verifier = verifier[:3]  # no paths in labels
        label = m["method"] + ("" if verifier == "none" else f" ({verifier})")
        x = [r["model_tokens_per_question"] + r["verifier_tokens_per_question"] for r in m["curve"]]
        lines[label].append(list(zip(x, (r["accuracy"] for r in m["curve"]))))
        if m["verifier"] == "none":  # one copy of the baselines per set of samples
            xs = [r["model_tokens_per_question"] for r in m["curve"]]
            lines["plain sampling"].append(
                list(zip(xs, (r["sample_accuracy"] for r in m["curve"])))
            )
            lines["pass@k (oracle)"].append(list(zip(xs, (r["pass_at_k"] for r in m["curve"]))))
    if not lines:
        raise ValueError("no test-time runs to plot")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, curves in lines.items():
        n = min(map(len, curves))
        x = [sum(c[i][0] for c in curves) / len(curves) for i in range(n)]
        ys = [[c[i][1] for c in curves] for i in range(n)]
        style = "k--" if label.startswith("pass@k") else "-"
        ax.plot(x, [sum(y) / len(y) for y in ys], style, marker="o", markersize=3, label=label)
        if len(curves) > 1:
            ax.fill_between(x, [min(y) for y in ys], [max(y) for y in ys], alpha=0.15)
    _save(fig, ax, path, "accuracy (mean over runs, band: min-max)")
    return path


def _save(fig: Any, ax: Any, path: Path, ylabel: str) -> None:
    """The axes every compute-accuracy plot shares, then the file."""
    import matplotlib.pyplot as plt

    ax.set_xscale("log", base=2)
    ax.set_xlabel("tokens per question (sampled + verifier)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """python -m trajlab.test_time.report RUN [RUN ...] --out FIG.png"""
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m trajlab.test_time.report",
        description="one compute-accuracy plot over several `trajlab test-time` runs",
    )
    p.add_argument("runs", nargs="+", type=Path, help="test-time run directories")
    p.add_argument("--out", type=Path, required=True, help="PNG file to write")
    a = p.parse_args(argv)
    for run in a.runs:
        if not (run / "metrics.json").is_file():
            p.error(f"{run} has no metrics.json; is it a finished `trajlab test-time` run?")
    print(plot_runs(a.runs, a.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
