"""benchmarks/bench_agent_rollout.py end to end on the tiny model with the real sandbox:
both modes run the same workload and the table comes out (timings are never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.smoke
@pytest.mark.sandbox
def test_the_benchmark_runs_both_modes_and_prints_its_table(tiny_model_dir, tmp_path):
    out = tmp_path / "rows.json"
    cmd = [
        sys.executable, str(ROOT / "benchmarks" / "bench_agent_rollout.py"),
        "--model", str(tiny_model_dir), "--prompts", "2", "--group", "2", "--repeats", "1",
        "--json", str(out),
    ]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| turn loop | 1 |" in r.stdout and "| continuous | 1 |" in r.stdout
    assert "cores" in r.stdout and "load average" in r.stdout and "flags" in r.stdout
    data = json.loads(out.read_text())
    modes = [row["mode"] for row in data["rows"]]
    assert sorted(modes) == ["continuous", "turn loop"]
    assert all(row["tokens"] > 0 for row in data["rows"])
    assert data["greedy_identical"] is True
