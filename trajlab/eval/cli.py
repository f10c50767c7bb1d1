"""`trajlab eval`: evaluate a model on a task, with or without tools.

    trajlab eval --model default --task arith --tools python --protocol code -n 4
    trajlab eval --config my_eval.yaml agent.max_turns=6 tools.python.timeout_s=5

Flags come from EvalConfig (trajlab/eval/harness.py), so `trajlab eval --help` lists every
field with its documentation; a YAML file (`--config`) gives the same fields, and
KEY=VALUE overrides with dotted keys are applied last (trajlab/flags.py).
"""

from __future__ import annotations

import argparse
import sys


def configure(p: argparse.ArgumentParser) -> None:
    from trajlab.eval.harness import EvalConfig
    from trajlab.flags import add_dataclass_args, add_overrides

    p.add_argument("--config", help="YAML file with EvalConfig fields; flags override it")
    add_overrides(p, "agent.max_calls_per_tool.python=2 tools.python.timeout_s=5")
    add_dataclass_args(p, EvalConfig, aliases={"n": "-n"})


def main(args: argparse.Namespace) -> int:
    from trajlab.build import benchmark_defaults
    from trajlab.eval.harness import EvalConfig, evaluate
    from trajlab.flags import resolve, trajlab_command

    config = resolve(EvalConfig, args, defaults=benchmark_defaults("task"))
    m = evaluate(config, argv=["trajlab", *sys.argv[1:]])
    print(
        f"\naccuracy {m.get('accuracy', 0):.3f} | tool-call rate {m.get('tool_call_rate', 0):.3f} | "
        f"{m.get('num_trajectories', 0)} trajectories | {m.get('wall_time_s', 0):.0f}s"
    )
    print(f"run written to {m['run_dir']} (summary.md, metrics.json, trajectories.jsonl)")
    print(f"open it with: {trajlab_command()} view {m['run_dir']}")
    return 0
