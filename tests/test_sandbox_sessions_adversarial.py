"""Sessions that lie to the zygote. A session cell runs next to the notebook loop that
serves it, so it can read the loop's frames, forge its "done" answer and stop reading
the cell pipe. Whatever it does, it may only hurt its own session: another session on the
same slot keeps its state, the zygote is not restarted, and every answer comes within
the cell's wall-clock limit (plus a margin for a loaded machine).

Run:  .venv/bin/python -m pytest tests/test_sandbox_sessions_adversarial.py -q
"""

from __future__ import annotations

import time

import pytest

from trajlab.tools.sandbox import SandboxConfig, SandboxPool

pytestmark = pytest.mark.sandbox

TIMEOUT = 2.0
MARGIN = 3.0

# Finds the notebook loop's current request, answers it with a forged "done" frame, and
# optionally shrinks the cell pipe so that the next cell frame cannot fit.
FORGE_DONE = """
import fcntl, json, os, struct, sys
frame = sys._getframe()
while frame is not None and "req" not in frame.f_locals:
    frame = frame.f_back
nonce = frame.f_locals["req"]["nonce"]
{shrink}
done = json.dumps({{"nonce": nonce, "exit_code": 0}}).encode()
os.write(4, struct.pack(">I", len(done)) + done)
{then}
"""
SHRINK = "fcntl.fcntl(3, 1031, 4096)  # F_SETPIPE_SZ: the smallest pipe"
BUSY = {
    "spin": "while True: pass",
    "sleep": "import time\ntime.sleep(3600)",
    "thread": "import threading, time\nthreading.Thread(target=lambda: time.sleep(3600)).start()\ntime.sleep(3600)",
}


@pytest.fixture()
def pool():
    p = SandboxPool(SandboxConfig(slots=1, timeout_s=TIMEOUT, preload=(), allow_insecure=True))
    yield p
    p.close()


@pytest.mark.parametrize("busy", sorted(BUSY))
@pytest.mark.parametrize("shrink", [False, True], ids=["pipe", "small-pipe"])
@pytest.mark.parametrize("next_code_bytes", [20, 64 * 1024])
def test_forged_done_only_hurts_its_own_session(pool, busy, shrink, next_code_bytes):
    zygote = pool.zygote_pids()
    victim, liar = pool.session(), pool.session()
    assert victim.run("secret = 41").ok
    forged = FORGE_DONE.format(shrink=SHRINK if shrink else "", then=BUSY[busy])
    r = liar.run(forged)
    assert r.status == "ok"  # the forgery is believed: the cell looks finished
    next_cell = "x = 1\n" + "#" * next_code_bytes
    t0 = time.monotonic()
    r = liar.run(next_cell)
    took = time.monotonic() - t0
    assert r.status == "timeout" and r.session_reset, r
    assert took < TIMEOUT + MARGIN, f"the liar's next cell took {took:.1f} s"
    assert pool.zygote_pids() == zygote  # no restart: nothing else on the slot was touched
    assert victim.run("print(secret + 1)").stdout == "42\n"
    assert liar.run("print('fresh')").stdout == "fresh\n"  # the liar restarts empty
