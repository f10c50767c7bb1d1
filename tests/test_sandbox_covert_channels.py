"""Channels through the host files every sandbox shares. The venv (and /usr) is bound
read-only into every sandbox of every slot, so a lock or a change watch on one of its
files would be seen by concurrent runs and by the host: file locks and inotify are denied
(EPERM from the seccomp filter), whatever the call and whatever the file."""

from __future__ import annotations

import fcntl
import json
import sys
from pathlib import Path

import pytest

from trajlab.tools.sandbox import SandboxConfig, SandboxPool

pytestmark = pytest.mark.sandbox

TARGETS = {
    "interpreter": sys.executable,
    "stdlib module": json.__file__,
    "venv directory": sys.prefix,
    "own scratch file": "scratch.txt",
}
ATTEMPTS = {
    "flock shared": "fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)",
    "flock exclusive": "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)",
    "lockf": "fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)",
    "F_SETLK": "fcntl.fcntl(fd, fcntl.F_SETLK, struct.pack('hhqqi', fcntl.F_RDLCK, 0, 0, 0, 0))",
    "F_OFD_SETLK": "fcntl.fcntl(fd, 37, struct.pack('hhqqi', fcntl.F_RDLCK, 0, 0, 0, 0))",
    "F_GETLK": "fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack('hhqqi', fcntl.F_RDLCK, 0, 0, 0, 0))",
    "inotify_init1": "check(libc.inotify_init1(0))",
    "inotify_init": "check(libc.inotify_init())",
}
PROGRAM = """
import ctypes, fcntl, os, struct
libc = ctypes.CDLL(None, use_errno=True)
def check(rc):
    if rc < 0:
        raise OSError(ctypes.get_errno(), "denied")
if {target!r} == "scratch.txt":
    open("scratch.txt", "w").write("x")
fd = os.open({target!r}, os.O_RDONLY)
try:
    {attempt}
    print("ALLOWED")
except OSError as e:
    print("errno", e.errno)
"""


@pytest.fixture(scope="module")
def pool():
    p = SandboxPool(SandboxConfig(slots=1, timeout_s=5, preload=(), allow_insecure=True))
    if not p.capabilities().holds("seccomp"):
        p.close()
        pytest.skip("needs the seccomp layer (self-check)")
    yield p
    p.close()


@pytest.mark.parametrize("attempt", sorted(ATTEMPTS))
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_locks_and_watches_are_denied(pool, target, attempt):
    code = PROGRAM.format(target=TARGETS[target], attempt=ATTEMPTS[attempt])
    r = pool.run(code)
    assert r.stdout == "errno 1\n", (r.stdout, r.stderr[-300:])


def test_the_host_still_locks_its_files_and_the_sandbox_still_works(pool):
    with open(sys.executable, "rb") as f:  # nothing the sandbox did holds a lock here
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(f, fcntl.LOCK_UN)
    r = pool.run(
        "import sqlite3\nprint(sqlite3.connect(':memory:').execute('select 41+1').fetchone()[0])"
    )
    assert r.stdout == "42\n", r.stderr[-300:]
    assert Path(sys.executable).exists()
