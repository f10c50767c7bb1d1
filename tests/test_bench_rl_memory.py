"""benchmarks/bench_rl_memory.py end to end on the tiny model with the real sandbox: the
GRPO stage runs, every step's phases are traced and the table comes out (no timings)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.smoke
@pytest.mark.sandbox
@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="needs Linux /proc")
def test_the_benchmark_traces_every_step(tiny_model_dir, tmp_path):
    out = tmp_path / "trace.json"
    cmd = [
        sys.executable, str(ROOT / "benchmarks" / "bench_rl_memory.py"),
        "--model", str(tiny_model_dir), "--out", str(tmp_path / "rl"), "--steps", "2",
        "--interval", "0.05", "--json", str(out),
        "rollout.prompts_per_step=2", "rollout.group_size=2", "agent.max_new_tokens=16",
        "agent.max_new_tokens_per_turn=16", "filters.zero_variance=false",
    ]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| step | PSS at start |" in r.stdout and "load average" in r.stdout
    assert "flags" in r.stdout and "heap trims:" in r.stdout
    data = json.loads(out.read_text())
    for step in (1, 2):
        assert data["marks"][f"{step} start"]["tensors"] > 0  # the tiny model's weights
        assert data["peaks"][f"{step} rollout"]["pss"] > 0
    assert data["trims_s"]  # the trainer trims after every backward, the engine per generate
    assert [line for line in r.stdout.splitlines() if line.startswith("| 2 |")]
