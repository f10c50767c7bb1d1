"""Human-readable reports of evaluation metrics: summary.md and metrics.png.

What it does not do: compute anything; it formats what metrics.py returned.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_HEADLINE = (
    ("accuracy", "accuracy (mean over samples)"),
    ("em", "exact match (QA)"),
    ("f1", "token F1 (QA)"),
    ("cover_em", "cover exact match (QA)"),
    ("retrieval_recall", "gold supporting titles retrieved (recall)"),
    ("retrieval_all_found", "trajectories that retrieved every gold title"),
    ("answered_rate", "trajectories with an extracted answer"),
    ("mixed_rate", "examples with both right and wrong samples (GRPO groups with signal)"),
    ("tool_call_rate", "trajectories with a tool call"),
    ("tool_calls_per_trajectory", "tool calls per trajectory"),
    ("tool_error_rate", "failed tool calls / tool calls"),
    ("response_tokens_mean", "response tokens per trajectory"),
    ("model_tokens_mean", "model tokens per trajectory"),
    ("turns_mean", "model turns per trajectory"),
    ("wall_time_s", "wall time (s)"),
    ("model_tokens_per_s", "model tokens per second"),
)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def write_summary(path: Path, metrics: dict[str, Any], config: dict[str, Any]) -> None:
    agent = config.get("agent", {})
    lines = [
        "# Evaluation summary",
        "",
        f"- model: `{config.get('model')}`",
        f"- task: `{config.get('task')}` ({metrics.get('num_examples', 0)} examples x {metrics.get('samples_per_example', 0)} samples)",
        (
            f"- tools: {', '.join(agent['tools'])}; protocol: `{agent.get('protocol')}`"
            if agent.get("tools")
            else "- tools: none (plain reasoning)"
        ),
        f"- sampling: temperature {config.get('temperature')}, top-p {config.get('top_p')}, seed {config.get('seed')}",
        "",
        "| metric | value [95 % interval over examples] |",
        "|---|---|",
    ]
    for key, label in _HEADLINE:
        if key in metrics:
            ci = metrics.get(f"{key}_ci")
            shown = _fmt(metrics[key]) + (f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "")
            lines.append(f"| {label} | {shown} |")
    for key in sorted(k for k in metrics if k.startswith(("pass@", "maj@"))):
        lines.append(f"| {key} | {_fmt(metrics[key])} |")
    lines += [
        "",
        "Stop reasons: "
        + ", ".join(f"{k} {v}" for k, v in sorted(metrics.get("stop_reasons", {}).items())),
    ]
    if metrics.get("tool_calls_by_status"):
        lines.append(
            "Tool calls by status: "
            + ", ".join(f"{k} {v}" for k, v in sorted(metrics["tool_calls_by_status"].items()))
        )
    if metrics.get("tool_stats"):
        lines += [
            "",
            "| tool | calls | calls / trajectory | error rate | latency mean (s) | latency p50 (s) |",
            "|---|---|---|---|---|---|",
        ]
        for tool, st in metrics["tool_stats"].items():
            lines.append(
                f"| {tool} | {st['calls']} | {_fmt(st['calls_per_trajectory'])} | "
                f"{_fmt(st['error_rate'])} | {_fmt(st['latency_s_mean'])} | {_fmt(st['latency_s_p50'])} |"
            )
    path.write_text("\n".join(lines) + "\n")


def write_plot(path: Path, metrics: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = {
        k: metrics[k]
        for k in ("accuracy", "answered_rate", "tool_call_rate", "tool_error_rate")
        if k in metrics
    }
    rates.update({k: metrics[k] for k in sorted(metrics) if k.startswith(("pass@", "maj@"))})
    stops = metrics.get("stop_reasons", {})
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [2, 1]})
    a1.bar(list(rates), list(rates.values()), color="#3b6ea5")
    a1.set_ylim(0, 1)
    a1.set_title("rates")
    a1.tick_params(axis="x", rotation=40)
    for i, v in enumerate(rates.values()):
        a1.text(i, v + 0.02, f"{v:.2f}", ha="center", fontsize=8)
    a2.bar(list(stops), list(stops.values()), color="#a5673b")
    a2.set_title("stop reasons")
    a2.tick_params(axis="x", rotation=40)
    fig.suptitle(f"{metrics.get('model', '')} on {metrics.get('task', '')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(
    path: Path | str,
    panels: list[tuple[str, list[float], list[list[float]]]],
    title: str = "",
    cols: int = 3,
) -> Path | None:
    """A grid of curves over steps: panels of (title, steps, values per step). One value per
    step draws a line; several (one per seed) draw their mean with a min-max band."""
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nrows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.0 * nrows), squeeze=False)
    for ax, (name, steps, vals) in zip(axes.flat, panels):
        if any(len(v) > 1 for v in vals):
            ax.fill_between(steps, [min(v) for v in vals], [max(v) for v in vals], alpha=0.25)
        mean = [sum(v) / len(v) for v in vals]
        ax.plot(steps, mean, marker="o" if len(steps) < 30 else None, markersize=3)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
