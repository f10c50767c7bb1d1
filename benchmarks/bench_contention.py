"""Throughput on a busy machine: idle, with one competing busy process, with two trajlab
processes at once (issue 13, item 3).

    .venv/bin/python benchmarks/bench_contention.py                   # about 8 minutes
    .venv/bin/python benchmarks/bench_contention.py --seconds 10 --workloads decode

Workloads, each timed for --seconds in a fresh process on the default model (fp32):
  * decode: HFEngine.generate of 16 prompts x 16 new tokens, temperature 1 (a rollout);
  * train: forward and backward of 2 x 128 tokens (a training micro-batch).
Each call is short so that a cell ends close to --seconds even on a crowded machine.
Thread settings: `auto` (trajlab.threads.ThreadGovernor, the default: one torch thread
per core no other process is using) against torch's default (one thread per core, active
waiting), and against OMP_WAIT_POLICY=PASSIVE with torch's default count.
Conditions: idle; while `python -c "while True: pass"` runs; two identical processes at
once (their mean, per process). Columns: tokens/s, and its share of the best idle tokens/s
of that workload, so 40 % means "the competitor cost 60 %".
Target (issue 13): with one competing busy process on 2 cores, >= 40 % of idle throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WORKER = r"""
import json, sys, time
setting, seconds, kind = sys.argv[1], float(sys.argv[2]), sys.argv[3]
import torch
from trajlab.threads import ThreadGovernor
governor = ThreadGovernor(configured=0 if setting == "auto" else torch.get_num_threads(),
                          recheck_s=2.0)
if kind == "decode":
    from trajlab.engines.base import SamplingParams
    from trajlab.engines.hf import HFEngine
    eng = HFEngine.from_spec("default")
    prompts = [eng.tokenizer.encode(f"What is {i} times {i + 7}? Think step by step.")
               for i in range(16)]
    sp = SamplingParams(temperature=1.0, max_new_tokens=16, seed=0)
    def work():
        return sum(len(g.token_ids) for g in eng.generate(prompts, sp))
else:
    from trajlab.models import load_model
    model = load_model("default")
    model.train()
    ids = torch.randint(0, 49000, (2, 128), generator=torch.Generator().manual_seed(0))
    def work():
        model(input_ids=ids, labels=ids).loss.backward()
        model.zero_grad(set_to_none=True)
        return ids.numel()
governor.adjust()
work()
t0, n, used = time.perf_counter(), 0, set()
while time.perf_counter() - t0 < seconds:
    used.add(governor.adjust())
    n += work()
print(json.dumps({"tok_s": n / (time.perf_counter() - t0), "threads": sorted(used)}))
"""

SETTINGS = {"auto": {}, "torch-default": {}, "passive": {"OMP_WAIT_POLICY": "PASSIVE"}}


def worker(setting: str, seconds: float, kind: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **SETTINGS[setting]}
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, setting, str(seconds), kind],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )


def result(p: subprocess.Popen) -> dict:
    out = p.communicate()[0].strip().splitlines()
    if p.returncode != 0 or not out:
        raise SystemExit("benchmark worker failed; run it by hand to see why")
    return json.loads(out[-1])


def measure(setting: str, condition: str, seconds: float, kind: str) -> tuple[float, list]:
    busy = None
    if condition == "one busy process":
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        procs = [
            worker(setting, seconds, kind) for _ in range(2 if condition == "two trajlab" else 1)
        ]
        results = [result(p) for p in procs]
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    tok_s = sum(r["tok_s"] for r in results) / len(results)
    return tok_s, sorted({t for r in results for t in r["threads"]})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--seconds", type=float, default=15.0, help="timed seconds per cell (default: 15)"
    )
    ap.add_argument("--workloads", default="decode,train", help="decode,train (default: both)")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args()
    from trajlab.models import cpu_feature_summary

    conditions = ("idle", "one busy process", "two trajlab")
    print(
        f"contention benchmark: {os.cpu_count()} cores ({platform.processor() or platform.machine()}, "
        f"flags {cpu_feature_summary()}), load average {os.getloadavg()[0]:.2f} at start"
    )
    rows = []
    for kind in args.workloads.split(","):
        for setting in SETTINGS:
            for condition in conditions:
                tok_s, used = measure(setting, condition, args.seconds, kind)
                load = os.getloadavg()[0]
                rows.append({"workload": kind, "setting": setting, "condition": condition,
                             "tok_s": tok_s, "threads": used, "load": load})  # fmt: skip
                print(
                    f"  {kind:6s} {setting:13s} {condition:17s} {tok_s:8.1f} tok/s  threads {used}  load {load:.2f}",
                    flush=True,
                )
    print(
        "\n| workload | setting | condition | tok/s (per process) | of best idle | threads used | load |"
    )
    print("|---|---|---|---|---|---|---|")
    for kind in args.workloads.split(","):
        best = max(r["tok_s"] for r in rows if r["workload"] == kind and r["condition"] == "idle")
        for r in (r for r in rows if r["workload"] == kind):
            share = r["tok_s"] / best
            print(f"| {kind} | {r['setting']} | {r['condition']} | {r['tok_s']:.1f} | {share:.0%} | "
                  f"{','.join(map(str, r['threads']))} | {r['load']:.2f} |")  # fmt: skip
    print("target (issue 13): one competing busy process on 2 cores -> >= 40 % of idle throughput")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
