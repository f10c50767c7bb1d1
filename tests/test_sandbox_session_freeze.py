"""A session cell's limits bind what it leaves running (issue 12, class 4): threads and
processes a cell starts stop when the cell returns and go on only during later cells, so
they can never work between cells, where no per-cell wall limit applies.

Each variant starts something that keeps working after the cell returns `ok` and records
its progress (ticks or CPU seconds); the host then waits; the next cell reads how far the
leftover got while no cell was running."""

from __future__ import annotations

import time

import pytest

from trajlab.tools.sandbox import SandboxConfig, SandboxPool

pytestmark = pytest.mark.sandbox

GAP_S = 1.0  # how long the host waits between the two cells

# Each starter leaves work running and defines progress() -> float: ticks or CPU seconds
# since it started, read the same way in the next cell.
STARTERS = {
    "thread-ticks": (
        "import threading, time\n"
        "ticks = [0]\n"
        "def tick():\n"
        "    while True:\n"
        "        ticks[0] += 1\n"
        "        time.sleep(0.005)\n"
        "threading.Thread(target=tick, daemon=True).start()\n"
        "def progress():\n"
        "    return ticks[0] * 0.005\n"
    ),
    "thread-spin": (
        "import threading, time\n"
        "spent = [0.0]\n"
        "def spin():\n"
        "    while True:\n"
        "        spent[0] = time.thread_time()\n"
        "threading.Thread(target=spin, daemon=True).start()\n"
        "def progress():\n"
        "    return spent[0]\n"
    ),
    "forked-child": (
        "import os\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    while True:\n"
        "        pass\n"
        "def progress():\n"
        "    fields = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()\n"
        "    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')\n"
    ),
    "subprocess": (
        "import os, subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-c', 'while True: pass'])\n"
        "def progress():\n"
        "    fields = open(f'/proc/{child.pid}/stat').read().rsplit(')', 1)[1].split()\n"
        "    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')\n"
    ),
}


@pytest.fixture(scope="module")
def pool():
    p = SandboxPool(SandboxConfig(slots=1, timeout_s=20, preload=(), allow_insecure=True))
    if not p.capabilities().holds("cgroup"):
        p.close()
        pytest.skip("needs the cgroup layer (self-check): the freezer is a cgroup feature")
    yield p
    p.close()


@pytest.mark.parametrize("starter", list(STARTERS.values()), ids=list(STARTERS))
def test_leftovers_do_not_run_between_cells(pool, starter):
    with pool.session() as s:
        r = s.run(starter + "import time\ntime.sleep(0.3)\nprint(progress())\n")
        assert r.ok, r.stderr
        during_cell = float(r.stdout)
        assert during_cell > 0.05, "the leftover never ran, so the probe shows nothing"
        time.sleep(GAP_S)
        r = s.run("print(progress())")
        assert r.ok, r.stderr
        gap = float(r.stdout) - during_cell
        assert gap < 0.25 * GAP_S, f"the leftover worked {gap:.2f} s while no cell ran"
        # ... and it is not lost: it goes on during the next cell
        r = s.run("import time\nt = progress()\ntime.sleep(0.3)\nprint(progress() - t)")
        assert r.ok and float(r.stdout) > 0.05, r.stdout + r.stderr


def test_a_session_that_is_frozen_can_still_be_closed_and_killed(pool):
    s = pool.session()
    assert s.run(STARTERS["forked-child"] + "print(1)").ok
    s.close()  # thawed, then killed: nothing of it is left
    assert pool.run("print(2)").stdout == "2\n"
    with pool.session() as again:
        r = again.run("print(1)\nwhile True: pass", timeout_s=1)
        assert r.status == "timeout"
        assert again.run("print(3)").stdout == "3\n"
