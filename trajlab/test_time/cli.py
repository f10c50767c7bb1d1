"""`trajlab test-time`: best-of-N and voting over sampled trajectories, per budget.

    trajlab test-time --model default --task arith --method vote --budgets 1,2,4,8
    trajlab test-time --samples runs/arith_n8 --method best_of_n --verifier judge --out runs/bon

Flags come from TestTimeConfig (trajlab/test_time/run.py): every `trajlab eval` flag
(how to sample) plus the strategy's; KEY=VALUE overrides with dotted keys apply last.
"""

from __future__ import annotations

import argparse
import sys


def configure(p: argparse.ArgumentParser) -> None:
    from trajlab.flags import add_dataclass_args, add_overrides
    from trajlab.test_time.run import TestTimeConfig

    p.add_argument("--config", help="YAML file with TestTimeConfig fields; flags override it")
    add_overrides(p, "agent.max_turns=3 tools.python.timeout_s=5")
    add_dataclass_args(p, TestTimeConfig, aliases={"n": "-n"})


def main(args: argparse.Namespace) -> int:
    from trajlab.build import benchmark_defaults
    from trajlab.flags import resolve, trajlab_command
    from trajlab.test_time.run import TestTimeConfig, run_test_time

    config = resolve(TestTimeConfig, args, defaults=benchmark_defaults("task"))
    m = run_test_time(config, argv=["trajlab", *sys.argv[1:]])
    print(f"\n{m['method']} ({m['verifier']}) on {m['task']}, {m['num_examples']} questions")
    for r in m["curve"]:
        lo, hi = r["gain_over_sample_ci"]
        print(
            f"  k={r['k']:<3d} accuracy {r['accuracy']:.3f} | plain sampling "
            f"{r['sample_accuracy']:.3f} | gain {r['gain_over_sample']:+.3f} "
            f"[{lo:+.3f}, {hi:+.3f}] | pass@k {r['pass_at_k']:.3f} | "
            f"{r['model_tokens_per_question']:.0f} tokens/question"
        )
    print(f"run written to {m['run_dir']} (summary.md, metrics.json, curve.png, chosen.jsonl)")
    print(f"open it with: {trajlab_command()} view {m['run_dir']}")
    return 0
