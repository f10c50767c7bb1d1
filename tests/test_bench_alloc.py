"""benchmarks/bench_alloc.py runs and prints one row per round (timings never asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.smoke
def test_the_allocation_benchmark_prints_every_round():
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_alloc.py"),
           "--rounds", "2", "--rows", "1", "--buffers", "2"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| 1 |" in r.stdout and "| 2 |" in r.stdout and "flags" in r.stdout
