"""The sandbox's fast path as root: what each run must not share with the next one.

As root, the zygote forks each sandbox directly into a pid namespace it created for it,
and the sandbox copies a template mount namespace that is already inside the minimal
root (docs/sandbox.md, "Performance"). These tests pin down that this sharing of setup
never becomes sharing of state: two consecutive runs in the same slot get different pid,
mount, net, ipc, uts and user namespaces, see none of each other's files, sockets, SysV
IPC or processes, and every mount but the four scratch tmpfs is read-only. They also
check the zygote's own pid namespace is restored after each fork, and the compact
socket-family filter. About 5 s.
"""

from __future__ import annotations

import json
import os
import textwrap
import time

import pytest

from trajlab.tools.sandbox import SandboxConfig, SandboxPool

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.skipif(os.geteuid() != 0, reason="the fast path needs root"),
]

SCRATCH = ("/tmp", "/var/tmp", "/dev/shm", "/sandbox")
NS = ("pid", "mnt", "net", "ipc", "uts", "user")
NS_LINE = f"NS = {NS!r}\n"

# Run A leaves every kind of state it can behind; run B reports what it can see.
LEAVE_STATE = textwrap.dedent(
    """
    import ctypes, json, os, socket, time
    for d in ("/tmp", "/var/tmp", "/dev/shm", "/sandbox"):
        open(os.path.join(d, "left-by-a"), "w").write("a")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind("\\0trajlab-left-by-a")
    s.listen(1)
    libc = ctypes.CDLL(None, use_errno=True)
    shm = libc.shmget(0x7A11AB, 4096, 0o1666)  # IPC_CREAT | 0666
    if os.fork() == 0:  # a daemon that outlives the run's main process
        os.setsid()
        time.sleep(60)
        os._exit(0)
    print(json.dumps({"ns": {n: os.readlink(f"/proc/self/ns/{n}") for n in NS}, "shm": shm}))
    """
)

OBSERVE = textwrap.dedent(
    """
    import ctypes, errno, json, os, socket
    seen = {"files": [], "ns": {n: os.readlink(f"/proc/self/ns/{n}") for n in NS}}
    # Paths leading to a mount point are the sandbox's own layout (a venv under /tmp is
    # bound back read-only at its path), not something a previous run left behind.
    points = [line.split()[4] for line in open("/proc/self/mountinfo")]
    for d in ("/tmp", "/var/tmp", "/dev/shm", "/sandbox"):
        for f in os.listdir(d):
            p = os.path.join(d, f)
            if not any(m == p or m.startswith(p + "/") for m in points):
                seen["files"].append(p)
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        c.connect("\\0trajlab-left-by-a")
        seen["abstract"] = "connected"
    except OSError as e:
        seen["abstract"] = errno.errorcode[e.errno]
    libc = ctypes.CDLL(None, use_errno=True)
    seen["shm"] = libc.shmget(0x7A11AB, 0, 0)
    seen["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    seen["uid"] = os.getresuid()
    seen["mounts"] = []
    for line in open("/proc/self/mountinfo"):
        f = line.split()
        seen["mounts"].append([f[4], f[5].split(","), os.stat(f[4]).st_uid])
    print(json.dumps(seen))
    """
)


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(SandboxConfig(slots=1, preload=(), timeout_s=5)) as p:
        yield p


def _observe(pool: SandboxPool) -> dict:
    r = pool.run(NS_LINE + OBSERVE)
    assert r.ok, r.stderr
    return json.loads(r.stdout)


def test_fast_path_is_used_and_every_layer_holds(pool):
    assert pool._slots[0].info.get("fast_spawn") is True
    caps = pool.capabilities()
    for layer in ("uid_drop", "user_namespace", "pid_namespace", "net_namespace",
                  "mount_namespace", "private_proc", "tmpfs_scratch", "minimal_root",
                  "cgroup", "caps_dropped", "no_new_privs", "seccomp"):  # fmt: skip
        assert caps.holds(layer), (layer, caps.layers[layer].detail)


def test_next_run_sees_nothing_of_the_previous_one(pool):
    a = pool.run(NS_LINE + LEAVE_STATE)
    assert a.ok, a.stderr
    state = json.loads(a.stdout)
    assert state["shm"] >= 0  # the segment existed in run A's ipc namespace
    b = _observe(pool)
    assert b["files"] == []
    assert b["abstract"] == "ECONNREFUSED"
    assert b["shm"] == -1
    assert b["pids"] == [1]  # A's daemon died with A's pid namespace
    # (namespace inode numbers are recycled once a namespace is freed, so "fresh" is shown
    # by the state above, not by comparing A's and B's numbers)
    zpid = pool.zygote_pids()[0]
    held = {os.readlink(f"/proc/{zpid}/fd/{fd}") for fd in os.listdir(f"/proc/{zpid}/fd")}
    zyg = {n: os.readlink(f"/proc/{zpid}/ns/{n}") for n in NS}
    for n in NS:  # none is the zygote's own or one it holds (the template)
        assert b["ns"][n] != zyg[n] and b["ns"][n] not in held, n
    c = _observe(pool)
    assert [m[0] for m in c["mounts"]] == [m[0] for m in b["mounts"]]


def test_every_mount_but_scratch_is_read_only(pool):
    seen = _observe(pool)
    uid = seen["uid"][0]
    assert uid != 0 and seen["uid"] == [uid] * 3
    points = {m[0]: m for m in seen["mounts"]}
    assert set(SCRATCH) <= set(points) and "/proc" in points
    for point, opts, _owner in seen["mounts"]:
        assert "nosuid" in opts, point
        if point in SCRATCH:
            assert "rw" in opts and "nodev" in opts, point
        else:
            assert "ro" in opts, point
    assert points["/sandbox"][2] == uid  # the working directory belongs to the sandbox uid


def test_zygote_returns_to_its_own_pid_namespace(pool):
    for _ in range(3):
        assert pool.run("print(1)").stdout == "1\n"
    for _attempt in range(20):  # the pool may be replacing a zygote right now: read a live one
        zpid = pool.zygote_pids()[0]
        try:
            own = os.readlink(f"/proc/{zpid}/ns/pid")
            for_children = os.readlink(f"/proc/{zpid}/ns/pid_for_children")
            break
        except FileNotFoundError:
            time.sleep(0.05)
    else:
        raise AssertionError("no live zygote to inspect")
    assert for_children == own
    assert own == os.readlink("/proc/self/ns/pid")  # the host's: nothing nested builds up


def test_socket_filter_allows_only_unix(pool):
    code = textwrap.dedent(
        """
        import ctypes, errno, json
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        out = {}
        for fam in list(range(0, 46)) + [(1 << 32) | 1, (1 << 32) | 2]:
            fd = libc.syscall(41, ctypes.c_long(fam), 1, 0)  # socket(fam, SOCK_STREAM, 0)
            out[str(fam)] = "ok" if fd >= 0 else errno.errorcode[ctypes.get_errno()]
        print(json.dumps(out))
        """
    )
    r = pool.run(code)
    assert r.ok, r.stderr
    out = json.loads(r.stdout)
    assert out["1"] == "ok"  # AF_UNIX
    refused = {fam: e for fam, e in out.items() if fam != "1"}
    assert set(refused.values()) == {"EPERM"}, refused  # high bits cannot smuggle a family
