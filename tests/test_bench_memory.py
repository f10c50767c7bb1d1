"""Unit tests for the process-tree memory sampler of benchmarks/bench_memory.py (no timings)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from bench_helpers import load_benchmark

MIB = 1024**2

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")


bm = load_benchmark("bench_memory")

# A parent holding 64 MiB that starts a child holding 32 MiB, then waits for stdin to close.
TREE = textwrap.dedent(
    """
    import subprocess, sys
    big = bytearray(64 << 20)
    child = subprocess.Popen([sys.executable, "-c",
        "import sys; x = bytearray(32 << 20); print('child', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    child.stdout.readline()
    print("ready", flush=True)
    sys.stdin.read()
    child.stdin.close()
    child.wait()
    """
)


def test_descendants_of_a_parent_map():
    parents = {1: 0, 10: 1, 11: 10, 12: 10, 13: 11, 20: 1, 21: 20}
    assert sorted(bm.descendants(10, parents)) == [10, 11, 12, 13]
    assert bm.descendants(10, parents)[0] == 10
    assert bm.descendants(13, parents) == [13]
    assert bm.descendants(99, parents) == [99]  # unknown root: itself only


def test_kib_field():
    text = "Name:\tpython\nVmRSS:\t  2048 kB\nPss:   10 kB\n"
    assert bm._kib_field(text, "VmRSS") == 2048 * 1024
    assert bm._kib_field(text, "Pss") == 10 * 1024
    assert bm._kib_field(text, "VmSwap") is None


def test_sample_tree_sums_parent_and_child():
    proc = subprocess.Popen(
        [sys.executable, "-c", TREE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        s = bm.sample_tree(proc.pid)
        assert s is not None
        assert s.procs == 2
        assert s.main_rss >= 64 * MIB
        assert s.rss_sum >= s.main_rss + 32 * MIB
        assert s.pss_complete  # we started both, so both smaps_rollup files are readable
        assert 0 < s.pss_sum <= s.rss_sum  # PSS never exceeds RSS
        assert s.pss_sum >= 96 * MIB  # the two private buffers are counted once each
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    assert bm.sample_tree(proc.pid) is None  # gone


def test_measure_records_peaks_and_output(tmp_path):
    code = "import time; x = bytearray(80 << 20); print('hello', flush=True); time.sleep(0.6)"
    log = tmp_path / "out.log"
    res = bm.measure([sys.executable, "-c", code], interval=0.05, log=log, subreaper=False)
    assert res.returncode == 0
    assert [line for _, line in res.lines] == ["hello"]
    assert log.read_text() == "hello\n"
    assert res.peaks.samples >= 1
    assert res.peaks.main_rss.main_rss >= 80 * MIB
    assert res.peaks.rss_sum.rss_sum >= res.peaks.main_rss.main_rss
    assert res.ru_maxrss >= 80 * MIB
    table = bm.report(res)
    assert "tree PSS sum (judged)" in table and "cores:" in table and "load average" in table
    assert bm.to_json(res)["met"] is True


def test_stage_at():
    lines = [(1.0, "[0 base] eval"), (2.0, ""), (5.0, "[1 data] teacher")]
    assert bm.stage_at(lines, 0.5) == ""
    assert bm.stage_at(lines, 3.0) == "[0 base] eval"
    assert bm.stage_at(lines, 5.0) == "[1 data] teacher"


def test_stage_peaks():
    S = bm.Sample
    timeline = [
        S(0.5, 1, 10, 9, True, 10, 9),
        S(1.5, 2, 50, 40, True, 30, 25),
        S(2.5, 3, 70, 45, True, 30, 25),
        S(6.0, 1, 20, 20, True, 20, 20),
    ]
    lines = [
        (1.0, "[0 base] eval"),
        (1.2, "progress 10%"),
        (3.0, "[0 base] accuracy 0.450 [0.300, 0.600]"),  # ends a stage, starts none
        (5.0, "[1 data] teacher"),
    ]
    st = bm.stage_peaks(lines, timeline)
    assert [x["stage"] for x in st] == ["(start)", "[0 base] eval", "[1 data] teacher"]
    assert [x["pss_sum"] for x in st] == [9, 45, 20]
    assert [x["rss_sum"] for x in st] == [10, 70, 20]
    assert [x["procs"] for x in st] == [1, 3, 1]
    assert st[1]["start_s"] == 1.0 and st[1]["end_s"] == 2.5
