"""benchmarks/bench_generation.py end to end on the tiny model: every system runs, the
concatenating-KV column comes out, greedy identity is counted (timings are never asserted)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.smoke
def test_the_benchmark_prints_its_table_with_the_concat_kv_column(tiny_model_dir, tmp_path):
    out = tmp_path / "gen.json"
    cmd = [
        sys.executable, str(ROOT / "benchmarks" / "bench_generation.py"),
        "--model", str(tiny_model_dir), "--batches", "8", "--max-new-tokens", "6",
        "--reps", "1", "--dtypes", "fp32", "--concat-kv", "--context-tokens", "40",
        "--json", str(out),
    ]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| 8 | fp32 |" in r.stdout and "in-place / concat-kv" in r.stdout
    assert "flags" in r.stdout and "load average" in r.stdout
    data = json.loads(out.read_text())
    systems = {row["system"] for row in data["results"]}
    assert systems == {"hf-generate fp32", "trajlab fp32", "trajlab fp32 concat-kv"}
    assert all(row["tokens"] > 0 for row in data["results"])
    assert data["greedy_identical_rows"]["fp32"] == 16  # the tiny model's greedy rows match
    lengths = re.search(r"prompt tokens: (\d+)-(\d+)", r.stdout)
    assert lengths and int(lengths[1]) >= 40  # every prompt padded to the asked context
