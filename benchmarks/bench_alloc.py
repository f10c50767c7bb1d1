"""Fresh memory: how long allocating and filling a KV cache's worth of buffers takes,
round after round in one process (docs/performance.md, introduction).

    .venv/bin/python benchmarks/bench_alloc.py                 # 6 rounds of 0.9 GB
    .venv/bin/python benchmarks/bench_alloc.py --rounds 3 --rows 8

Each round allocates `--buffers` zeroed fp32 tensors [rows, 3, 310, 64] (the default
model's per-layer keys or values for `rows` sequences of 310 positions; 60 = 30 layers x
keys and values), copies a 213-position cache into each, and keeps them until the next
round has built its own (as a cache rebuilt on every admission does). On a machine where
memory the process has not used before is slow to obtain (pages the kernel or the
hypervisor must supply), rounds that need new pages take many times longer than rounds
that reuse freed ones; the table shows each round.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trajlab.models import cpu_feature_summary  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=6, help="rounds (default 6)")
    ap.add_argument("--rows", type=int, default=64, help="sequences per buffer (default 64)")
    ap.add_argument("--buffers", type=int, default=60, help="buffers per round (default 60)")
    args = ap.parse_args(argv)
    print(f"machine: {os.cpu_count()} cores (flags {cpu_feature_summary()}), load average "
          f"{os.getloadavg()[0]:.2f}, torch {torch.__version__}")  # fmt: skip
    sources = [torch.randn(args.rows, 3, 213, 64) for _ in range(args.buffers)]
    gb = args.buffers * args.rows * 3 * 310 * 64 * 4 / 1e9
    print(f"| round | seconds to allocate, zero and fill {gb:.2f} GB |")
    print("|---|---|")
    kept: list[torch.Tensor] = []
    for r in range(args.rounds):
        t0 = time.perf_counter()
        built = []
        for src in sources:
            buf = src.new_zeros(args.rows, 3, 310, 64)
            buf[:, :, :213] = src
            built.append(buf)
        seconds = time.perf_counter() - t0
        kept = built  # the previous round's buffers are freed only now
        print(f"| {r + 1} | {seconds:.3f} |", flush=True)
    del kept
    return 0


if __name__ == "__main__":
    sys.exit(main())
