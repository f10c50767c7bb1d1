"""Multi-turn tool rollouts: the turn-by-turn agent loop against continuous batching
(issue 13, item 1).

    .venv/bin/python benchmarks/bench_agent_rollout.py                  # about 8 minutes
    .venv/bin/python benchmarks/bench_agent_rollout.py --prompts 2 --repeats 1
    .venv/bin/python benchmarks/bench_agent_rollout.py --model runs/demo/sft/model

Workload: `arith` training questions (the task's usual mix of bare expressions and word
problems) with the Python tool in the real sandbox, protocol `code`, groups of 8 samples
per question at temperature 0.6 (the demo's GRPO rollouts: up to 3 turns, 2 calls, 96
tokens per turn, 224 per episode), all episodes of a batch in one `AgentLoop.run`, the
engine's batch limit 64. Every mode gets the same questions and seeds; the modes run
alternately (A B B A ...), each run in this process after one warm-up.
  * turn loop: every waiting episode's turn is generated together, then every call runs,
    then the next turn re-prefills each episode's whole context;
  * continuous: one running decode batch; episodes leave it while their call runs and
    rejoin with a prefill of the observation only (agent.continuous_batching).
Columns: wall time, episodes/s, completion tokens/s (model tokens / wall), tool calls and
mean turns (the same workload must come out in both modes). A greedy check on the first
question's group compares the two modes' trajectories token for token.
Peers: TRL's GRPOTrainer has no CPU tool-calling rollout to time here (not installed in
this environment); the row says so instead of a number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trajlab.demo import AGENT  # noqa: E402  (the demo's GRPO rollout budgets)


def make_loop(engine, tools, continuous: bool, temperature: float, seed: int):
    from trajlab.agent.loop import AgentConfig, AgentLoop
    from trajlab.engines.base import SamplingParams

    config = AgentConfig(**AGENT, continuous_batching=continuous)
    loop = AgentLoop(engine, tools, config, sampling=SamplingParams(temperature, seed=seed))
    assert loop.streams == continuous
    return loop


def run_once(engine, tools, jobs, continuous: bool, temperature: float, seed: int) -> dict:
    loop = make_loop(engine, tools, continuous, temperature, seed)
    t0 = time.perf_counter()
    trajs = loop.run(jobs)
    wall = time.perf_counter() - t0
    tokens = sum(t.num_model_tokens for t in trajs)
    return {
        "mode": "continuous" if continuous else "turn loop",
        "wall_s": wall,
        "episodes_per_s": len(trajs) / wall,
        "tok_per_s": tokens / wall,
        "tokens": tokens,
        "tool_calls": sum(len(t.tool_calls) for t in trajs),
        "turns": sum(t.metadata["turns"] for t in trajs) / len(trajs),
        "load": os.getloadavg()[0],
    }


def greedy_check(engine, tools, jobs) -> bool:
    runs = [make_loop(engine, tools, c, 0.0, 0).run(jobs) for c in (False, True)]
    return all(
        [(s.source, s.token_ids) for s in a.segments]
        == [(s.source, s.token_ids) for s in b.segments]
        for a, b in zip(*runs)
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default", help="model spec (default: the default model)")
    ap.add_argument("--prompts", type=int, default=8, help="questions per batch (default: 8)")
    ap.add_argument("--group", type=int, default=8, help="samples per question (default: 8)")
    ap.add_argument("--repeats", type=int, default=2, help="runs per mode (default: 2)")
    ap.add_argument("--temperature", type=float, default=0.6, help="(default: 0.6)")
    ap.add_argument(
        "--decode-dtype", default="auto", help="auto, float32 or bfloat16 (default: auto)"
    )
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args()

    import torch

    from trajlab.agent.loop import AgentConfig
    from trajlab.build import build_tools, resolve_decode_dtype
    from trajlab.engines.hf import HFEngine
    from trajlab.models import cpu_feature_summary
    from trajlab.tasks import load_task
    from trajlab.threads import ThreadGovernor
    from trajlab.tools.config import ToolsConfig
    from trajlab.tools.python import PythonToolConfig

    ThreadGovernor(configured=0).adjust()
    dtype = resolve_decode_dtype(args.decode_dtype)
    engine = HFEngine.from_spec(args.model, max_batch_size=64, decode_dtype=dtype)
    tools = build_tools(
        ["python"], AgentConfig(**AGENT), ToolsConfig(python=PythonToolConfig(timeout_s=5))
    )
    examples = load_task("arith", split="train", n=args.prompts, seed=0)
    jobs = [(ex, i) for ex in examples for i in range(args.group)]
    print(
        f"agent rollout benchmark: {os.cpu_count()} cores ({platform.processor() or platform.machine()}, "
        f"flags {cpu_feature_summary()}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"decode dtype {engine.decode_dtype}, load average {os.getloadavg()[0]:.2f} at start"
    )
    print(f"workload: {len(examples)} arith questions x {args.group} samples, T={args.temperature}, "
          f"model {args.model}")  # fmt: skip
    try:
        run_once(engine, tools, jobs[: args.group], False, args.temperature, 1)  # warm-up
        same = greedy_check(engine, tools, jobs[: args.group])
        print(f"greedy trajectories identical in both modes (first group): {same}")
        rows = []
        for k in range(args.repeats):  # A B B A ...
            for continuous in (False, True) if k % 2 == 0 else (True, False):
                r = run_once(engine, tools, jobs, continuous, args.temperature, seed=7)
                rows.append(r)
                print(f"  {r['mode']:10s} {r['wall_s']:7.1f} s  {r['episodes_per_s']:.3f} ep/s  "
                      f"{r['tok_per_s']:.1f} tok/s  calls {r['tool_calls']}  turns {r['turns']:.2f}  "
                      f"load {r['load']:.2f}", flush=True)  # fmt: skip
    finally:
        for t in tools.values():
            t.close()
    print(
        "\n| mode | runs | wall s (median) | episodes/s | completion tok/s | tool calls | mean turns | ratio (episodes/s) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    med = {}
    for mode in ("turn loop", "continuous"):
        rs = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["wall_s"])
        m = rs[len(rs) // 2]
        med[mode] = m
        base = med["turn loop"]["episodes_per_s"]
        print(f"| {mode} | {len(rs)} | {m['wall_s']:.1f} | {m['episodes_per_s']:.3f} | {m['tok_per_s']:.1f} | "
              f"{m['tool_calls']} | {m['turns']:.2f} | {m['episodes_per_s'] / base:.2f}x |")  # fmt: skip
    print(
        "| TRL GRPOTrainer with tools | - | not run: not installed in this environment | | | | | |"
    )
    print("target (issue 13): continuous >= 2x the turn loop's episodes/s")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "greedy_identical": same}, indent=2))


if __name__ == "__main__":
    main()
