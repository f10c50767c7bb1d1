"""Memory a run pins through in-flight file descriptors is not charged to the next run
(issue 12, class 5): a run fills memfds and leaves them in flight on unix sockets that only
reference each other; once it is dead, the next run still gets its whole memory limit.
See docs/sandbox.md ("What crosses runs") for what this rests on."""

from __future__ import annotations

import pytest

from trajlab.tools.sandbox import SandboxConfig, SandboxPool

pytestmark = pytest.mark.sandbox

LIMIT_MB = 512

PIN = r"""
import os, resource, socket
size = min(resource.getrlimit(resource.RLIMIT_FSIZE)[0], 16 << 20)
a, b = socket.socketpair()
fds = []
for _ in range(({mb} << 20) // size):
    fd = os.memfd_create("pin")
    os.write(fd, b"x" * size)
    fds.append(fd)
for i in range(0, len(fds), 200):
    socket.send_fds(a, [b"x"], fds[i : i + 200])
socket.send_fds(a, [b"x"], [{cycle}])  # the queue now holds a reference to a socket
for fd in fds:
    os.close(fd)
a.close()
b.close()
print(len(fds) * size >> 20)
"""

USE = r"""
x = bytearray({mb} << 20)
for i in range(0, len(x), 4096):
    x[i] = 1
print("ok")
"""


@pytest.fixture(scope="module")
def pool():
    p = SandboxPool(
        SandboxConfig(
            slots=1, timeout_s=30, preload=(), memory_bytes=LIMIT_MB << 20, allow_insecure=True
        )
    )
    if not p.capabilities().holds("cgroup"):
        p.close()
        pytest.skip("needs the cgroup layer (self-check)")
    yield p
    p.close()


@pytest.mark.parametrize(
    "cycle", ["b.fileno()", "a.fileno()"], ids=["peer-in-own-queue", "self-in-peer-queue"]
)
def test_memory_pinned_in_flight_is_not_charged_to_the_next_run(pool, cycle):
    use = USE.format(mb=300)
    assert pool.run(use).stdout == "ok\n"  # fits the limit on its own
    r = pool.run(PIN.format(mb=256, cycle=cycle))
    assert r.ok and int(r.stdout) >= 240, r.stderr  # 256 MiB pinned and the run exited
    after = pool.run(use)
    assert after.ok and after.stdout == "ok\n", (after.status, after.stderr[-500:])


@pytest.mark.parametrize("how", ["session-closed", "killed-by-timeout"])
def test_pinned_memory_of_a_session_or_a_killed_run_is_released(pool, how):
    use = USE.format(mb=300)
    pin = PIN.format(mb=256, cycle="b.fileno()")
    if how == "session-closed":
        with pool.session() as s:
            assert s.run(pin).ok
    else:
        r = pool.run(pin + "while True:\n    pass\n", timeout_s=2)
        assert r.status == "timeout"
    after = pool.run(use)
    assert after.ok and after.stdout == "ok\n", (after.status, after.stderr[-500:])
