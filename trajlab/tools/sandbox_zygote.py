"""Zygote (fork server) of the Python sandbox, and the code that runs inside a sandbox.

What: one zygote per pool slot. `SandboxPool` (trajlab/tools/sandbox.py) starts it with
exec, a minimal explicit environment and `python -I` (so the trainer's environment
block, which stays readable through /proc/self/environ, never reaches it). The zygote
preloads numpy/sympy once, then serves requests that arrive as length-prefixed JSON
frames on its stdin and answers on its stdout. For every run it forks, as root (the
fast path, one fork of the preloaded process per run; see docs/sandbox.md, "Performance"):

    zygote (root, clean) ─ unshare(PID) for the next child only ─ fork S (pid 1 of it) ─ setns back
        S: PDEATHSIG → setsid → (session cgroup) → setns(template mount ns) + unshare(MNT|NET|IPC|UTS)
           → fresh read-only procfs, size-capped tmpfs cwd//tmp//var/tmp//dev/shm (a venv under
             them is bound back read-only), hostname
           → setgroups/setresgid/setresuid(slot uid) → PR_SET_DUMPABLE → unshare(USER) → uid/gid map
           → fds 0=/dev/null 1,2=pipes, all others closed; rlimits; env
           → caps and bounding set dropped, NO_NEW_PRIVS, seccomp (last)
           → exec(compile(code)) in a fresh __main__

and without root, the two-fork order (docs/sandbox.md):

    zygote ─ fork C1: setsid → join cgroup → setgroups/setresgid/setresuid(slot uid)
                            → PDEATHSIG → PR_SET_DUMPABLE → unshare(USER|MNT|PID|NET|IPC|UTS)
                            → uid/gid map ─ fork C2 (pid 1 of the new pid namespace)
                                  → private mounts, minimal read-only root (pivot_root), fresh
                                    procfs, size-capped tmpfs cwd//tmp//var/tmp//dev/shm
                                  → fds, rlimits, env, caps, NO_NEW_PRIVS, seccomp (last)
                                  → exec(compile(code)) in a fresh __main__

The zygote enforces the wall-clock deadline and the output cap from outside with SIGKILL
of C1's process group (PDEATHSIG then takes C2 and with it the whole pid namespace), and
finally kills whatever is left in the slot's cgroup (on the fast path S is both: the
process group leader and pid 1). Results go back to the pool as a
JSON frame that echoes the request's nonce; the sandbox itself never writes a frame on
the result channel, so printed fake markers cannot forge one. Nothing is ever pickled.

Departures from the two-fork order: user code runs as pid 1 of its namespace (saves a fork); the
consequences (self-sent default-action signals are ignored, orphans are reaped only when
the namespace dies) are harmless, and RLIMIT_CPU uses soft = hard so the kernel's
SIGKILL lands (pitfall 6). On the fast path the pid namespace is made by the zygote and
the mount, net, ipc and uts namespaces and the mounts by root before the uid drop (the
user namespace still follows the drop); the mount namespace is a per-run copy of a
template already inside the minimal root; the zygote's heap is backed by huge pages.
docs/sandbox.md, "Performance", argues why none of this weakens a layer.

Non-goals: this file has no policy. Which layers to apply is decided by the pool's
self-check and passed in the `configure` frame; this file only applies them, and in
`probe` runs reports which ones held. It imports nothing from trajlab, so the zygote
stays small and independent of the project tree (which the sandbox cannot see).
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import errno
import fcntl
import json
import os
import select
import signal
import struct
import sys
import time

# ----------------------------------------------------------------------------- framing
# A frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON.

MAX_FRAME = 32 << 20


def write_frame(fd: int, obj: dict, deadline: float | None = None) -> None:
    """Write one frame. On a non-blocking fd, TimeoutError once `deadline` passes with the
    reader not draining the pipe (so a sandbox that stops reading cannot stall its writer)."""
    data = json.dumps(obj, separators=(",", ":")).encode()
    buf = memoryview(struct.pack(">I", len(data)) + data)
    while buf:
        try:
            n = os.write(fd, buf)
        except BlockingIOError:
            left = None if deadline is None else deadline - time.monotonic()
            if (left is not None and left <= 0) or not select.select([], [fd], [], left)[1]:
                raise TimeoutError(
                    f"the reader took no frame within the deadline ({len(buf)} bytes left)"
                ) from None
            continue
        buf = buf[n:]


def read_exact(fd: int, n: int, deadline: float | None = None) -> bytes | None:
    """n bytes from fd; None on EOF before the first byte; TimeoutError past deadline."""
    chunks: list[bytes] = []
    got = 0
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"no frame within the deadline ({got}/{n} bytes)")
        b = os.read(fd, n - got)
        if not b:
            if got == 0:
                return None
            raise EOFError(f"stream closed inside a frame ({got}/{n} bytes)")
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


def read_frame(fd: int, deadline: float | None = None, limit: int = MAX_FRAME) -> dict | None:
    head = read_exact(fd, 4, deadline)
    if head is None:
        return None
    (n,) = struct.unpack(">I", head)
    if n > limit:
        raise ValueError(f"frame of {n} bytes exceeds the {limit}-byte limit")
    body = read_exact(fd, n, deadline)
    if body is None:
        raise EOFError("stream closed after a frame header")
    obj = json.loads(body)
    if not isinstance(obj, dict):
        raise ValueError("frame is not a JSON object")
    return obj


# ----------------------------------------------------------------------------- messages
# Every frame between the pool and its zygote is one of the classes below: requests from
# the pool, answers from the zygote, each tagged by `op`. `decode` checks that a frame
# names a known message and that every field is present and of its type, so a malformed
# frame fails at the boundary with its name, never as a KeyError inside a handler.
# (Frames between the zygote and its own sandboxes, on fds 3/4, are not these.)

_NEEDED = object()  # marks a field without a default
_INT, _NUM, _STR, _DICT = (int,), (int, float), (str,), (dict,)
_OPT_INT, _OPT_STR = (int, type(None)), (str, type(None))


class Message:
    op = ""
    FIELDS: dict = {}  # name -> (accepted types, default or _NEEDED)
    __slots__ = ("nonce",)

    def __init__(self, nonce: str | None = None, **values) -> None:
        self.nonce = nonce
        for name, (types, default) in self.FIELDS.items():
            value = values.pop(name, default)
            if value is _NEEDED:
                raise ValueError(f"a {self.op!r} message needs the field {name!r}")
            if not isinstance(value, types) or (types == _NUM and isinstance(value, bool)):
                raise ValueError(
                    f"field {name!r} of a {self.op!r} message must be "
                    f"{'/'.join(t.__name__ for t in types)}, not {type(value).__name__}"
                )
            setattr(self, name, value)
        if values:
            raise ValueError(f"a {self.op!r} message has no fields {sorted(values)}")

    def to_wire(self) -> dict:
        return {"op": self.op, "nonce": self.nonce, **{k: getattr(self, k) for k in self.FIELDS}}

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={getattr(self, k)!r}" for k in ("nonce", *self.FIELDS))
        return f"{type(self).__name__}({body})"


class Configure(Message):
    """The layers the pool's self-check found to hold; the zygote applies exactly these."""

    op = "configure"
    FIELDS = {"layers": (_DICT, _NEEDED)}
    __slots__ = tuple(FIELDS)


class Run(Message):
    """One program in a fresh sandbox (`kind` probe: the self-check's probe instead)."""

    op = "run"
    FIELDS = {
        "kind": (_STR, "run"),
        "code": (_STR, ""),
        "stdin": (_OPT_STR, None),  # base64
        "timeout_s": (_NUM, _NEEDED),
        "output_cap": (_INT, _NEEDED),
        "limits": (_DICT, _NEEDED),
    }
    __slots__ = tuple(FIELDS)


class SessionOpen(Message):
    op = "session_open"
    FIELDS = {"sid": (_STR, _NEEDED), "limits": (_DICT, _NEEDED), "max_sessions": (_INT, 8)}
    __slots__ = tuple(FIELDS)


class SessionRun(Message):
    op = "session_run"
    FIELDS = {
        "sid": (_STR, _NEEDED),
        "code": (_STR, ""),
        "timeout_s": (_NUM, _NEEDED),
        "output_cap": (_INT, _NEEDED),
    }
    __slots__ = tuple(FIELDS)


class SessionClose(Message):
    op = "session_close"
    FIELDS = {"sid": (_STR, _NEEDED)}
    __slots__ = tuple(FIELDS)


class Ping(Message):
    op = "ping"
    __slots__ = ()


class Shutdown(Message):
    op = "shutdown"
    __slots__ = ()


class Ready(Message):
    """The zygote's first frame: what its startup found (preloads, seccomp, landlock)."""

    op = "ready"
    FIELDS = {"info": (_DICT, _NEEDED), "pid": (_INT, _NEEDED)}
    __slots__ = tuple(FIELDS)


class Status(Message):
    """The answer to a request that produces no run: ok, refused, bad_op or zygote_error."""

    op = "status"
    FIELDS = {"status": (_STR, "ok"), "error": (_STR, "")}
    __slots__ = tuple(FIELDS)


class Pong(Message):
    op = "pong"
    FIELDS = {
        "runs": (_INT, _NEEDED),
        "spare_pid": (_OPT_INT, None),
        "session_pids": ((list,), _NEEDED),
    }
    __slots__ = tuple(FIELDS)


class Result(Message):
    """How one run or session cell ended. stdout/stderr are base64; killed_for is
    timeout, output_limit, crashed, gone (no such session) or None."""

    op = "result"
    FIELDS = {
        "stdout": (_STR, ""),
        "stderr": (_STR, ""),
        "exit_code": (_OPT_INT, None),
        "signal": (_OPT_INT, None),
        "killed_for": (_OPT_STR, None),
        "oom_kill": ((bool,), False),
        "latency_s": (_NUM, 0.0),
        "setup_error": (_STR, ""),
        "session_reset": ((bool,), False),
    }
    __slots__ = tuple(FIELDS)


REQUESTS = (Configure, Run, SessionOpen, SessionRun, SessionClose, Ping, Shutdown)
ANSWERS = (Ready, Status, Pong, Result)
MESSAGES = {cls.op: cls for cls in (*REQUESTS, *ANSWERS)}


def decode(frame: dict) -> Message:
    """The message a frame carries; ValueError if it names no message or breaks its fields."""
    fields = dict(frame)
    op = fields.pop("op", None)
    cls = MESSAGES.get(op) if isinstance(op, str) else None
    if cls is None:
        raise ValueError(f"unknown message op {op!r}; known: {', '.join(MESSAGES)}")
    nonce = fields.pop("nonce", None)
    if nonce is not None and not isinstance(nonce, str):
        raise ValueError(f"the nonce of a {op!r} message must be a string")
    return cls(nonce=nonce, **fields)


def send(fd: int, msg: Message) -> None:
    write_frame(fd, msg.to_wire())


def receive(fd: int, deadline: float | None = None) -> Message | None:
    """The next message on fd; None on a clean EOF (errors as read_frame, plus decode's)."""
    frame = read_frame(fd, deadline)
    return None if frame is None else decode(frame)


# ----------------------------------------------------------------------------- libc
_libc = ctypes.CDLL(None, use_errno=True)
_SYSCALLS = {  # numbers for the syscalls glibc does not wrap
    "x86_64": {"pivot_root": 155, "mount_setattr": 442, "landlock_create_ruleset": 444},
    "aarch64": {"pivot_root": 41, "mount_setattr": 442, "landlock_create_ruleset": 444},
}.get(os.uname().machine, {})

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
CLONE_NEWCGROUP = 0x02000000
NS_FLAGS = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
NS_FLAGS |= CLONE_NEWCGROUP  # after the cgroup join: /proc/self/cgroup then reads "0::/"
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP = 1, 4, 24
PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 36, 38, 47
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV = 0x1, 0x2, 0x4
AT_FDCWD, AT_RECURSIVE = -100, 0x8000
SETUP_FAIL = 121  # exit code of C1/C2 when a required layer could not be applied


def _err(what: str) -> OSError:
    e = ctypes.get_errno()
    return OSError(e, f"{what}: {os.strerror(e)}")


def prctl(option: int, arg2: int = 0, arg3: int = 0) -> int:
    r = _libc.prctl(
        ctypes.c_int(option),
        ctypes.c_ulong(arg2),
        ctypes.c_ulong(arg3),
        ctypes.c_ulong(0),
        ctypes.c_ulong(0),
    )
    if r == -1:
        raise _err(f"prctl({option})")
    return r


def unshare(flags: int) -> None:
    if _libc.unshare(ctypes.c_int(flags)) != 0:
        raise _err("unshare")


def setns(fd: int, nstype: int) -> None:
    if _libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)) != 0:
        raise _err("setns")


def mount(
    src: str | None, dst: str, fstype: str | None, flags: int, data: str | None = None
) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    r = _libc.mount(enc(src), enc(dst), enc(fstype), ctypes.c_ulong(flags), enc(data))
    if r != 0:
        raise _err(f"mount {src} on {dst}")


def umount2(path: str, flags: int) -> None:
    if _libc.umount2(path.encode(), ctypes.c_int(flags)) != 0:
        raise _err(f"umount {path}")


def pivot_root(new: str, old: str) -> None:
    if _libc.syscall(ctypes.c_long(_SYSCALLS["pivot_root"]), new.encode(), old.encode()) != 0:
        raise _err("pivot_root")


def mount_setattr_recursive(path: str, attr_set: int) -> None:
    attr = struct.pack("=QQQQ", attr_set, 0, 0, 0)  # struct mount_attr
    buf = ctypes.create_string_buffer(attr, len(attr))
    r = _libc.syscall(
        ctypes.c_long(_SYSCALLS["mount_setattr"]), ctypes.c_int(AT_FDCWD), path.encode(),
        ctypes.c_uint(AT_RECURSIVE), buf, ctypes.c_size_t(len(attr)),
    )  # fmt: skip
    if r != 0:
        raise _err("mount_setattr")


_CAP_LAST: list[int] = []  # read once (the zygote calls cap_last() at startup)


def cap_last() -> int:
    if not _CAP_LAST:
        _CAP_LAST.append(int(_read("/proc/sys/kernel/cap_last_cap")))
    return _CAP_LAST[0]


def drop_capabilities() -> None:
    """Empty the bounding, ambient, effective, permitted and inheritable sets."""
    for cap in range(cap_last() + 1):
        prctl(PR_CAPBSET_DROP, cap)
    prctl(PR_CAP_AMBIENT, 4)  # PR_CAP_AMBIENT_CLEAR_ALL
    header = struct.pack("=Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = ctypes.create_string_buffer(24)  # two zeroed __user_cap_data_struct
    if _libc.capset(ctypes.create_string_buffer(header, 8), data) != 0:
        raise _err("capset")


def landlock_abi() -> int:
    nr = _SYSCALLS.get("landlock_create_ruleset")
    if nr is None:
        return 0
    r = _libc.syscall(ctypes.c_long(nr), None, ctypes.c_size_t(0), ctypes.c_uint(1))
    return max(int(r), 0)


# ----------------------------------------------------------------------------- cgroups
def cgroup_oom_kills(unit: dict | None) -> int:
    """OOM-kill counter of a cgroup unit ({"kind", "dirs"}); -1 when unknown."""
    if not unit:
        return -1
    try:
        if unit["kind"] == "v1":
            path = os.path.join(unit["dirs"]["memory"], "memory.oom_control")
        else:
            path = os.path.join(unit["dirs"]["unified"], "memory.events")
        for line in _read(path).splitlines():
            k, _, v = line.partition(" ")
            if k == "oom_kill":
                return int(v)
    except (OSError, KeyError, ValueError):
        pass
    return -1


def cgroup_pids(unit: dict | None) -> list[int]:
    pids: set[int] = set()
    for d in (unit or {}).get("dirs", {}).values():
        with contextlib.suppress(OSError, ValueError):
            pids.update(int(x) for x in _read(os.path.join(d, "cgroup.procs")).split())
    return sorted(pids)


def cgroup_kill_all(
    unit: dict | None, deadline_s: float = 2.0, exclude: tuple[int, ...] = ()
) -> int:
    """SIGKILL every process in the unit (but those in `exclude`: the zygote and its fork
    template) until none is left; returns how many were signalled."""
    killed = 0
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        pids = [p for p in cgroup_pids(unit) if p not in exclude]
        if not pids:
            break
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        time.sleep(0.005)
    return killed


def kill_uid(uid: int, rounds: int = 20) -> int:
    """SIGKILL every process whose real uid is `uid` (the slot's own uid, used by nothing
    else); the fallback sweep when neither a pid namespace nor a cgroup holds."""
    killed = 0
    for _ in range(rounds):
        found = 0
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                st = _read(f"/proc/{d}/status")
            except OSError:
                continue
            fields = dict(ln.split(":", 1) for ln in st.splitlines() if ":" in ln)
            if fields.get("State", "").split()[:1] == ["Z"]:
                continue  # already dead, waiting for its parent
            if fields.get("Uid", "").split()[:1] == [str(uid)]:
                found += 1
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(d), signal.SIGKILL)
        killed += found
        if not found:
            break
        time.sleep(0.005)
    return killed


def cgroup_create(kind: str, parents: dict[str, str], name: str, limits: dict) -> dict:
    """mkdir one cgroup per controller under `parents`, write the limits, return the unit."""
    dirs = {}
    for ctrl, parent in parents.items():
        d = os.path.join(parent, name)
        os.makedirs(d, exist_ok=True)
        dirs[ctrl] = d
    mem, pids = str(limits["memory_bytes"]), str(limits["pids"])
    if kind == "v1":
        _write_text(os.path.join(dirs["memory"], "memory.limit_in_bytes"), mem)
        memsw = os.path.join(dirs["memory"], "memory.memsw.limit_in_bytes")
        if os.path.exists(memsw):  # no swap escape when swap accounting is on
            _write_text(memsw, mem)
        _write_text(os.path.join(dirs["pids"], "pids.max"), pids)
    else:
        u = dirs["unified"]
        _write_text(os.path.join(u, "memory.max"), mem)
        if os.path.exists(os.path.join(u, "memory.swap.max")):
            _write_text(os.path.join(u, "memory.swap.max"), "0")
        _write_text(os.path.join(u, "pids.max"), pids)
    return {"kind": kind, "dirs": dirs}


def cgroup_freeze(unit: dict | None, frozen: bool, timeout_s: float = 2.0) -> bool:
    """Freeze (or thaw) every process of the unit: cgroup v2's cgroup.freeze, v1's freezer
    controller. Waits until the kernel reports the new state; returns whether it did (False
    where the unit has no freezer)."""
    if not unit:
        return False
    if unit["kind"] == "v2":
        d = unit["dirs"]["unified"]
        control, want = os.path.join(d, "cgroup.freeze"), "1" if frozen else "0"
        state, done = os.path.join(d, "cgroup.events"), f"frozen {want}"
    elif "freezer" in unit["dirs"]:
        control = state = os.path.join(unit["dirs"]["freezer"], "freezer.state")
        want = done = "FROZEN" if frozen else "THAWED"
    else:
        return False
    try:
        _write_text(control, want)
        end = time.monotonic() + timeout_s
        while done not in _read(state):
            if time.monotonic() > end:
                return False
            time.sleep(0.0005)
    except OSError:
        return False
    return True


def collect_unix_garbage() -> None:
    """Make the kernel collect unreachable in-flight unix-socket descriptors now. A run can
    leave memfds in flight on sockets that only reference each other; they stay charged to
    the slot's cgroup after the run is dead, until the kernel's unix garbage collector runs,
    which closing any unix socket triggers while descriptors are in flight (measured on
    Linux 6.18: the next run got its whole limit back; tests/test_sandbox_memory_pinning.py)."""
    import socket

    a, b = socket.socketpair()
    a.close()
    b.close()


def cgroup_remove(unit: dict | None) -> None:
    if not unit:
        return
    cgroup_kill_all(unit)
    for d in unit["dirs"].values():
        for _ in range(50):
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError:  # EBUSY while the last killed task is exiting
                time.sleep(0.01)


# ----------------------------------------------------------------------------- seccomp
_DENY_SYSCALLS = (
    "ptrace", "process_vm_readv", "process_vm_writev", "bpf", "perf_event_open", "userfaultfd",
    "keyctl", "add_key", "request_key", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "personality",
    "fanotify_init", "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick",
    "mount_setattr", "open_by_handle_at", "name_to_handle_at", "pidfd_getfd", "acct", "swapon",
    "swapoff", "reboot", "syslog", "quotactl", "vhangup", "iopl", "ioperm", "lookup_dcookie",
    "uselib", "kcmp", "add_key",
    # File locks and change watches work across every process that sees the same file, so
    # on the host files bound into each sandbox (the venv) they are a channel between runs
    # and to the host; a sandbox gets EPERM for flock, record locks and inotify.
    "flock", "inotify_init", "inotify_init1",
)  # fmt: skip
# fcntl commands that set, test or lease locks: F_GETLK, F_SETLK, F_SETLKW, F_OFD_GETLK,
# F_OFD_SETLK, F_OFD_SETLKW, F_SETLEASE, F_GETLEASE
_LOCK_FCNTLS = (5, 6, 7, 36, 37, 38, 1024, 1025)
_CLONE_NS_BITS = (
    CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWCGROUP,
)  # fmt: skip
TIOCSTI, TIOCLINUX = 0x5412, 0x541C


def build_seccomp(allow_inet: bool):
    """A denylist filter (default allow). Socket families: only AF_UNIX, plus AF_INET/AF_INET6
    when loopback networking is allowed; never AF_NETLINK or AF_PACKET."""
    import pyseccomp as sc

    f = sc.SyscallFilter(defaction=sc.ALLOW)
    eperm = sc.ERRNO(errno.EPERM)
    skipped = []
    for name in dict.fromkeys(_DENY_SYSCALLS):
        try:
            f.add_rule(eperm, name)
        except Exception:  # syscall unknown to this libseccomp/arch
            skipped.append(name)
    # Families are compared as 64-bit values, so a family with stray high bits (which the
    # kernel would truncate to an allowed int) is refused too.
    for call in ("socket", "socketpair"):
        if not allow_inet:  # AF_UNIX only
            f.add_rule(eperm, call, sc.Arg(0, sc.NE, 1))
            continue
        f.add_rule(eperm, call, sc.Arg(0, sc.GT, 10))  # AF_UNIX, AF_INET, AF_INET6 (1, 2, 10)
        for fam in (0, 3, 4, 5, 6, 7, 8, 9):
            f.add_rule(eperm, call, sc.Arg(0, sc.EQ, fam))
    for bit in _CLONE_NS_BITS:  # no nested namespaces (user namespaces above all)
        f.add_rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, bit, bit))
    try:  # ENOSYS: glibc falls back to clone, whose flags the filter can inspect
        f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    except Exception:
        skipped.append("clone3")
    for req in (TIOCSTI, TIOCLINUX):
        f.add_rule(eperm, "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, req))
    for cmd in _LOCK_FCNTLS:
        f.add_rule(eperm, "fcntl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, cmd))
    return f, skipped


class CompiledFilter:
    """The filter compiled to BPF once in the zygote; `load()` in a sandbox is then one
    prctl instead of a libseccomp compilation per run (about 1 ms of CPU saved)."""

    def __init__(self, filt):
        r, w = os.pipe()
        try:
            with os.fdopen(w, "wb") as f:
                filt.export_bpf(f)
            code = b""
            while chunk := os.read(r, 1 << 16):
                code += chunk
        finally:
            os.close(r)
        if not code or len(code) % 8:
            raise ValueError(f"libseccomp exported {len(code)} bytes of BPF")
        self.filter = filt  # keeps libseccomp's context alive, for a fallback load
        self._code = ctypes.create_string_buffer(code, len(code))
        # struct sock_fprog { unsigned short len; struct sock_filter *filter; }
        self._prog = struct.pack("HxxxxxxP", len(code) // 8, ctypes.addressof(self._code))
        self._prog_buf = ctypes.create_string_buffer(self._prog, len(self._prog))

    def load(self) -> None:
        r = _libc.prctl(
            ctypes.c_int(22),
            ctypes.c_ulong(2),
            self._prog_buf,
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
        )  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        if r != 0:
            raise _err("prctl(PR_SET_SECCOMP)")


# ----------------------------------------------------------------------------- sandbox setup
class SetupError(Exception):
    """A layer that the configuration requires could not be applied."""


class Steps:
    """Runs setup steps; in strict mode a failure raises, in probe mode it is recorded."""

    def __init__(self, strict: bool):
        self.strict = strict
        self.log: dict[str, str] = {}

    def __call__(self, name: str, fn, *args) -> bool:
        try:
            fn(*args)
        except Exception as e:
            if self.strict:
                raise SetupError(f"{name}: {type(e).__name__}: {e}") from e
            self.log[name] = f"{type(e).__name__}: {e}"
            return False
        self.log[name] = "ok"
        return True


def _drop_uid(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid):
        raise OSError("uid drop did not stick")


def _write_maps(uid: int, gid: int, proc_dir: int | None = None) -> None:
    """Map uid and gid to themselves in the caller's (new) user namespace; `proc_dir` is a
    descriptor of the caller's /proc/<pid> directory when /proc is not (or no longer) the
    host's procfs, else /proc/self is used."""
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                       ("gid_map", f"{gid} {gid} 1")):  # fmt: skip
        fd = os.open(name if proc_dir is not None else f"/proc/self/{name}", os.O_WRONLY,
                     dir_fd=proc_dir)  # fmt: skip
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)


def prepare_minimal_root(root: str, binds: list[str], etc: list[str]) -> None:
    """Build, once per zygote and inside the zygote's own private mount namespace, the
    read-only root every sandbox of this zygote pivots into. Doing it here, with the
    zygote's privileges, lets a mode-0700 parent such as /root not block a bind (pitfall
    8); copied into each sandbox's less-privileged namespace, these mounts are locked:
    the sandbox can neither make them writable nor unmount them to look underneath."""
    os.umask(0o022)  # the sandbox uid must be able to traverse the directories made here
    if os.geteuid() != 0:  # unprivileged: a user namespace of our own gives mount rights
        uid, gid = os.getuid(), os.getgid()
        unshare(CLONE_NEWUSER | CLONE_NEWNS)
        _write_maps(uid, gid)
    else:
        unshare(CLONE_NEWNS)
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=0755")
    for sub in ("proc", "dev", "dev/shm", "tmp", "var/tmp", "sandbox", "etc"):
        os.makedirs(os.path.join(root, sub), mode=0o755, exist_ok=True)
    for name in ("bin", "sbin", "lib", "lib64", "lib32", "libx32"):
        if os.path.islink("/" + name):  # merged-/usr systems
            os.symlink(os.readlink("/" + name), os.path.join(root, name))
    for dev in ("null", "zero", "full", "random", "urandom"):
        open(os.path.join(root, "dev", dev), "w").close()
        mount(f"/dev/{dev}", os.path.join(root, "dev", dev), None, MS_BIND)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):  # fmt: skip
        os.symlink(target, os.path.join(root, "dev", name))
    with open(os.path.join(root, "etc", "hosts"), "w") as f:  # the host's names the host
        f.write("127.0.0.1\tlocalhost\n::1\tlocalhost\n")
    for path in list(binds) + list(etc):
        if not os.path.exists(path):
            continue
        dst = root + path
        if os.path.islink(dst):
            continue  # e.g. /bin already provided as a symlink into /usr
        if os.path.isdir(path):
            os.makedirs(dst, mode=0o755, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(dst), mode=0o755, exist_ok=True)
            open(dst, "w").close()
        mount(path, dst, None, MS_BIND | MS_REC)
    _mask_source_records(root, list(binds))
    try:
        mount_setattr_recursive(root, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID)
    except OSError as e:
        if e.errno != errno.ENOSYS:
            raise
        mount(None, root, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)


def make_template_ns(root: str) -> int:
    """A mount namespace already pivoted into the minimal root at `root`, kept alive by the
    returned descriptor (fast path, root only). A helper child builds it: unshare, make
    every mount private, pivot_root, detach the old root; the zygote opens the helper's
    /proc/<pid>/ns/mnt and lets it exit. Each sandbox then joins it and unshares, which
    copies only the minimal root's mounts (no pivot_root, no detaching of the host's
    mount tree per run)."""
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        msg = b"ok"
        try:
            os.close(ready_r)
            os.close(done_w)
            unshare(CLONE_NEWNS)
            mount(None, "/", None, MS_REC | MS_PRIVATE)
            os.chdir(root)
            pivot_root(".", ".")
            umount2(".", MNT_DETACH)
            os.chdir("/")
        except BaseException as e:
            msg = f"{type(e).__name__}: {e}".encode()
        os.write(ready_w, msg)
        os.read(done_r, 1)  # until the zygote holds the namespace
        os._exit(0)
    os.close(ready_w)
    os.close(done_r)
    try:
        msg = os.read(ready_r, 4096)
        if msg != b"ok":
            raise OSError(f"template mount namespace: {msg.decode(errors='replace')}")
        return os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_r)
        os.close(done_w)
        os.waitpid(pid, 0)


def _enter_root(root: str, as_root: bool = False) -> None:
    """pivot_root into the prepared minimal root with a fresh procfs; every mount of the
    result is read-only and nosuid. `as_root`: called by root in a mount namespace of the
    initial user namespace (the fast path), where nothing is locked and the prepared
    mounts keep their read-only flags, so the self-bind and the recursive re-flagging are
    skipped and procfs is mounted read-only directly."""
    if not as_root:
        # The prepared root came from a more privileged mount namespace, so it is locked
        # and pivot_root refuses it; a recursive bind onto itself is a fresh, unlocked top
        # mount (its children stay locked and read-only).
        mount(root, root, None, MS_BIND | MS_REC)
    # procfs must be mounted while the old root (with the host's fully visible /proc) is
    # still attached: a user namespace may not mount proc where none is visible.
    proc_flags = MS_NOSUID | MS_NODEV | MS_NOEXEC | (MS_RDONLY if as_root else 0)
    mount("proc", root + "/proc", "proc", proc_flags)
    os.chdir(root)
    pivot_root(".", ".")
    umount2(".", MNT_DETACH)  # the old root, stacked under the new one, goes away entirely
    os.chdir("/")
    if not as_root:
        mount_setattr_recursive("/", MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID)


# Host directories that every sandbox covers with a fresh tmpfs of its own.
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
MINIMAL_CWD = "/sandbox"  # the working directory's tmpfs in the minimal root


def shadowed_by_scratch(paths: list[str], minimal: bool) -> list[str]:
    """The paths (the interpreter's directories) that a sandbox's scratch tmpfs mounts
    would hide: strictly below /tmp, /var/tmp, /dev/shm, or /sandbox in the minimal root.
    A scratch directory itself is never returned: binding it back would expose all of it."""
    tops = SCRATCH_DIRS + ((MINIMAL_CWD,) if minimal else ())
    out = []
    for p in paths:
        p = os.path.normpath(p)
        if any(p.startswith(t + "/") for t in tops) and p not in out:
            out.append(p)
    return out


def _mount_scratch(
    minimal: bool, sizes: dict, keep: list[str], owner: tuple[int, int] | None = None
) -> tuple[str, list, list]:
    """Size-capped tmpfs on every writable place; returns the working directory, the
    directories of `keep` bound back and the errors of those that could not be.

    `keep` lists interpreter directories (a venv under /tmp, say) that these mounts would
    shadow. Each is held by an O_PATH descriptor before the tmpfs covers it, and after
    the mounts is bound back (recursive, read-only, nosuid, nodev) at its own path, on
    directories created for it in the fresh tmpfs. So /tmp shows only the path down to
    the venv, and the host's other files under /tmp stay hidden. Best effort: a directory
    that cannot be held or bound stays hidden, and the self-check's interpreter probe
    reports it. `owner` (uid, gid) makes the sandbox uid own the working directory when
    root mounts it (the fast path)."""
    held, bound, errors = [], [], []
    own = f",uid={owner[0]},gid={owner[1]}" if owner else ""
    for path in keep:
        try:
            held.append((path, os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)))
        except OSError as e:
            errors.append(f"{path}: {e.strerror}")
    try:
        flags = MS_NOSUID | MS_NODEV
        mount("tmpfs", "/tmp", "tmpfs", flags, f"size={sizes['tmp']},mode=1777")
        if os.path.isdir("/var/tmp"):
            mount("tmpfs", "/var/tmp", "tmpfs", flags, f"size={sizes['var_tmp']},mode=1777")
        if os.path.isdir("/dev/shm"):
            mount("tmpfs", "/dev/shm", "tmpfs", flags, f"size={sizes['shm']},mode=1777")
        if minimal:
            mount("tmpfs", MINIMAL_CWD, "tmpfs", flags, f"size={sizes['cwd']},mode=0700{own}")
            cwd = MINIMAL_CWD
        else:
            os.mkdir("/tmp/sandbox", 0o700)
            if owner:
                os.chown("/tmp/sandbox", *owner)
            cwd = "/tmp/sandbox"
        for path, fd in held:
            try:
                _bind_back(fd, path)
                bound.append(path)
            except OSError as e:
                errors.append(f"{path}: {e}")
    finally:
        for _, fd in held:
            os.close(fd)
    return cwd, bound, errors


def _bind_back(fd: int, path: str) -> None:
    """Bind the directory held by `fd` at `path`, read-only, nosuid and nodev."""
    parts = path.strip("/").split("/")
    d = ""
    for part in parts:  # 0755 whatever the umask; owned by the sandbox uid, in its own tmpfs
        d += "/" + part
        if not os.path.isdir(d):
            os.mkdir(d)
            os.chmod(d, 0o755)
    # MS_REC: the held mount may carry locked child mounts, which a plain bind refuses.
    mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
    try:
        mount_setattr_recursive(path, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)
    except OSError as e:
        if e.errno != errno.ENOSYS:
            raise
        mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _loopback_up() -> None:
    import fcntl
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        ifr = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, 0x8913, ifr))[1]  # SIOCGIFFLAGS
        fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", flags | 0x1))  # SIOCSIFFLAGS, IFF_UP
    finally:
        s.close()


def _set_rlimits(lim: dict) -> None:
    import resource as r

    for res, val in (
        (
            r.RLIMIT_CPU,
            lim.get("cpu_s"),
        ),  # a spare gets its CPU limit with its code  # soft = hard: the kernel SIGKILL reaches even pid 1 (pitfall 6)
        (r.RLIMIT_AS, lim["as_bytes"]),
        (r.RLIMIT_FSIZE, lim["fsize_bytes"]),
        (r.RLIMIT_NOFILE, lim["nofile"]),
        (r.RLIMIT_NPROC, lim["nproc"]),
        (r.RLIMIT_CORE, 0),
    ):
        if val is not None:
            r.setrlimit(res, (val, val))


class Job:
    """Everything a forked sandbox needs; built in the zygote before fork."""

    def __init__(self, z: Zygote, kind: str, code: str, limits: dict, unit: dict | None, uid, gid):
        self.z, self.kind, self.code, self.limits, self.unit = z, kind, code, limits, unit
        self.uid, self.gid = uid, gid
        self.join_unit = unit if kind == "session" else None
        self.code_w = -1  # spare sandboxes wait for their code on a pipe
        self.status: int | None = None  # wait status of C1 once reaped
        self.out_r, self.out_w = os.pipe()
        self.err_r, self.err_w = os.pipe()
        self.st_r, self.st_w = os.pipe()  # setup errors (strict mode) travel here
        self.extra: list[int] = []  # session pipes kept open in C2
        self.pid = 0
        self.via_template = False  # forked by the zygote's Template (reaped through it)
        self.fallback_cwd = f"/tmp/trajlab-sandbox-{os.urandom(8).hex()}"


def _template_job(z: Zygote, header: dict, fds: list[int]) -> Job:
    """The Job of a sandbox the template forks: the settings in `header` (no run data) and
    the child ends of the pipes the zygote made, received as descriptors."""
    job = Job.__new__(Job)
    job.z, job.kind, job.code = z, header["kind"], ""
    job.limits, job.unit = header["limits"], header["unit"]
    job.uid, job.gid = header["uid"], header["gid"]
    job.join_unit = job.unit if job.kind == "session" else None
    job.code_w, job.status, job.pid, job.via_template = -1, None, 0, False
    job.out_r = job.err_r = job.st_r = -1
    job.out_w, job.err_w, job.st_w, *job.extra = fds
    job.fallback_cwd = header["fallback_cwd"]
    return job


class Template:
    """The zygote's handle on its fork template: a child forked once, when the zygote is
    configured and has handled no run, that forks every later sandbox (one-shot spares and
    sessions). It never reads a request or an output, so a sandbox's address space holds
    nothing of any other run: not the request loop's objects, not freed memory of earlier
    runs (classes 1 and 2 of docs/sandbox.md's guarantees). The zygote sends it a job's
    settings and the child ends of the job's pipes over a unix socket; it answers with the
    sandbox's pid and later with its wait status (it is the sandbox's parent)."""

    def __init__(self, z: Zygote) -> None:
        import socket

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            try:
                ours.close()
                _template_main(z, theirs)
            except BaseException:  # to the zygote log; the zygote sees the socket close
                import traceback

                traceback.print_exc()
            finally:
                os._exit(0)
        theirs.close()
        self.pid, self.sock, self.exits = pid, ours, {}

    def spawn(self, job: Job) -> int:
        import socket

        header = {
            "kind": job.kind, "limits": job.limits, "unit": job.unit, "uid": job.uid,
            "gid": job.gid, "fallback_cwd": job.fallback_cwd,
        }  # fmt: skip
        fds = [job.out_w, job.err_w, job.st_w, *job.extra]
        socket.send_fds(self.sock, [json.dumps(header).encode()], fds)
        deadline = time.monotonic() + 30.0
        while True:
            msg = self._receive(deadline)
            if "pid" in msg:
                return int(msg["pid"])
            if "error" in msg:
                raise OSError(errno.EAGAIN, f"the fork template could not fork: {msg['error']}")

    def wait(self, pid: int, timeout_s: float = 30.0) -> int:
        """The wait status of sandbox `pid` (blocks until the template has reaped it)."""
        deadline = time.monotonic() + timeout_s
        while pid not in self.exits:
            self._receive(deadline)
        return self.exits.pop(pid)

    def configure(self, layers: dict) -> None:
        import socket

        socket.send_fds(self.sock, [json.dumps({"layers": layers}).encode()], [])

    def _receive(self, deadline: float) -> dict:
        if not select.select([self.sock], [], [], max(0.0, deadline - time.monotonic()))[0]:
            raise TimeoutError("the fork template did not answer")
        data = self.sock.recv(4096)
        if not data:
            raise OSError(errno.ECHILD, "the fork template exited")
        msg = json.loads(data)
        if "exit" in msg:
            self.exits[int(msg["exit"])] = int(msg["status"])
        return msg

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


def _template_main(z: Zygote, sock) -> None:
    """The template's loop: fork a sandbox per job, report pids and wait statuses. It
    dies with the zygote, never holds the pool's pipes, and is the parent its sandboxes
    check for (PDEATHSIG, the pidfd of _fast_main, C1's getppid)."""
    import socket

    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != z.pid:
        os._exit(0)  # the zygote died before PDEATHSIG was armed
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1):
        os.dup2(null, fd)  # the pool's pipes are the zygote's alone
    os.close(null)
    z.pid, z.template = os.getpid(), None
    if z.self_pidfd >= 0:  # the fast path's children check their parent through it
        z.self_pidfd = os.pidfd_open(z.pid)
    wake_r, wake_w = os.pipe()
    for fd in (wake_r, wake_w):
        os.set_blocking(fd, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    z.template_fds = (wake_r, wake_w, sock.fileno())
    while True:
        ready = select.select([sock, wake_r], [], [])[0]
        if wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(wake_r, 512):
                    pass
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if not pid:
                break
            sock.send(json.dumps({"exit": pid, "status": status}).encode())
        if sock in ready:
            data, fds, _, _ = socket.recv_fds(sock, 65536, 16)
            if not data:
                os._exit(0)
            header = json.loads(data)
            if "layers" in header:
                z.layers.update(header["layers"])
                continue
            job = _template_job(z, header, fds)
            try:
                z.fork_sandbox(job)
                reply = {"pid": job.pid}
            except OSError as e:
                reply = {"error": f"{type(e).__name__}: {e}"}
            finally:
                for fd in fds:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            sock.send(json.dumps(reply).encode())


def _forget_template(fds: tuple[int, ...]) -> None:
    """In a sandbox the template forked: drop its signal wiring and descriptors."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _c1_main(job: Job) -> None:
    """First child: setsid, cgroup, uid drop, namespaces; forks C2 and mirrors its end."""
    z, lay = job.z, job.z.layers
    steps = Steps(strict=not z.probing)
    os.setsid()
    if lay["cgroup"] and job.join_unit:  # sessions; runs inherit the zygote's slot cgroup
        for d in job.join_unit["dirs"].values():
            steps("cgroup", _write_text, os.path.join(d, "cgroup.procs"), str(os.getpid()))
    # The zygote shares the slot cgroup: make sure its OOM killer always picks a sandbox.
    steps("oom_score_adj", _write_text, "/proc/self/oom_score_adj", "1000")
    if lay["uid_drop"]:
        steps("uid_drop", _drop_uid, job.uid, job.gid)
    steps("pdeathsig_c1", prctl, PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != z.pid:
        os._exit(SETUP_FAIL)  # the zygote died before PDEATHSIG was armed
    ns = False
    uid, gid = os.getuid(), os.getgid()  # after unshare they read as the overflow id
    if lay["namespaces"]:
        steps("dumpable", prctl, PR_SET_DUMPABLE, 1)  # else uid_map is root-owned (pitfall 4)
        ns = steps("namespaces", unshare, NS_FLAGS)
        if ns:
            ns = steps("uid_map", _write_maps, uid, gid)
    c2 = os.fork()
    if c2 == 0:
        _c2_main(job, steps, ns)
        os._exit(SETUP_FAIL)
    os.closerange(0, 1 << 16)
    _, status = os.waitpid(c2, 0)
    if os.WIFSIGNALED(status):  # die the same way so the zygote sees the signal
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.WEXITSTATUS(status))


def _write_text(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _read(path: str, mode: str = "r"):
    with open(path, mode) as f:
        return f.read()


def _fast_main(job: Job) -> None:
    """The only child of the fast path (a root zygote, see Zygote.spawn): it is already
    pid 1 of a pid namespace the zygote created for it. As root it creates its mount, net,
    ipc and uts namespaces and does the mounts; then it drops to the slot uid, and only
    then creates its user namespace (pitfall 3's order: uid drop before CLONE_NEWUSER) and
    maps the uid to itself through a descriptor of its host /proc directory (its own /proc
    is the fresh, read-only one by then). The rest is the same as C2's."""
    z, lay = job.z, job.z.layers
    steps = Steps(strict=not z.probing)
    steps("pdeathsig", prctl, PR_SET_PDEATHSIG, signal.SIGKILL)
    if select.select([z.self_pidfd], [], [], 0)[0]:
        os._exit(SETUP_FAIL)  # the zygote died before PDEATHSIG was armed
    os.setsid()
    if lay["cgroup"] and job.join_unit:  # sessions; runs inherit the zygote's slot cgroup
        for d in job.join_unit["dirs"].values():
            steps("cgroup", _write_text, os.path.join(d, "cgroup.procs"), "0")
    steps("oom_score_adj", _write_text, "/proc/self/oom_score_adj", "1000")
    proc_dir = os.open("/proc/self", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP
    template = z.mnt_template if lay["minimal_root"] and z.root_ready else -1
    if template >= 0:  # a private copy of the zygote's ready-made minimal root
        ns = lay["namespaces"] and steps("namespaces", _enter_template, template, flags)
    else:
        ns = lay["namespaces"] and steps("namespaces", unshare, flags)
    cwd, minimal = _mount_steps(job, steps, template >= 0) if ns else (None, False)
    steps("uid_drop", _drop_uid, job.uid, job.gid)
    steps("dumpable", prctl, PR_SET_DUMPABLE, 1)  # else uid_map is root-owned (pitfall 4)
    if ns and steps("namespaces", unshare, CLONE_NEWUSER):
        steps("uid_map", _write_maps, job.uid, job.gid, proc_dir)
    os.close(proc_dir)
    _c2_finish(job, steps, cwd, minimal)


def _c2_main(job: Job, steps: Steps, ns: bool) -> None:
    steps("pdeathsig_c2", prctl, PR_SET_PDEATHSIG, signal.SIGKILL)
    cwd, minimal = _mount_steps(job, steps) if ns else (None, False)
    _c2_finish(job, steps, cwd, minimal)


def _enter_template(template: int, flags: int) -> None:
    """Join the zygote's template mount namespace (already pivoted into the minimal root)
    and take a private copy of it, together with fresh net, ipc and uts namespaces."""
    setns(template, CLONE_NEWNS)
    unshare(flags)


def _mount_steps(job: Job, steps: Steps, in_template: bool = False) -> tuple[str | None, bool]:
    """Private mounts, minimal root, fresh procfs, scratch tmpfs, hostname, loopback; returns
    the working directory (None when the scratch mounts failed) and whether the minimal
    root is in use. `in_template`: the mount namespace is a copy of the zygote's template
    (private, read-only, already inside the minimal root): only procfs is left to mount."""
    z, lay = job.z, job.z.layers
    cwd = None
    minimal = False
    if in_template:  # the copy of the template: private, read-only, inside the minimal root
        steps.log["private_mounts"] = steps.log["minimal_root"] = "ok"
        minimal = True
        ro_proc = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
        steps("private_proc", mount, "proc", "/proc", "proc", ro_proc)
    else:
        steps("private_mounts", mount, None, "/", None, MS_REC | MS_PRIVATE)
        if lay["minimal_root"] and z.root_ready:
            minimal = steps("minimal_root", _enter_root, z.stage_dir, os.geteuid() == 0)
            if minimal:
                steps.log["private_proc"] = "ok"
        elif lay["minimal_root"]:
            steps.log["minimal_root"] = z.root_error
        if not minimal:
            steps("private_proc", mount, "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    owner = (job.uid, job.gid) if job.uid is not None and os.geteuid() == 0 else None
    if steps("tmpfs", _set_cwd_holder, minimal, z.sizes, z.keep_visible, owner):
        cwd = _CWD[0]
    steps("hostname", _sethostname, b"sandbox")
    if z.allow_loopback:
        steps("loopback", _loopback_up)
    return cwd, minimal


def _c2_finish(job: Job, steps: Steps, cwd: str | None, minimal: bool) -> None:
    """fds, rlimits, env, capabilities, NO_NEW_PRIVS, seccomp; then the job's own work."""
    z, lay = job.z, job.z.layers
    env = dict(z.child_env)
    if cwd is None:  # degraded: no mount namespace; a private dir the zygote deletes afterwards
        cwd = job.fallback_cwd
        steps("cwd_dir", os.mkdir, cwd, 0o700)
        env["TMPDIR"] = cwd
    env.update(HOME=cwd, PWD=cwd)
    # Move the fds we keep above every target number first, so no dup2 clobbers another.
    keep = [os.open("/dev/null", os.O_RDWR), job.out_w, job.err_w, *job.extra, job.st_w]
    floor = max(max(keep), 16) + 1
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, floor) for fd in keep]
    os.dup2(high[0], 0)
    os.dup2(high[1], 1)
    os.dup2(high[2], 2)
    for i, fd in enumerate(high[3:]):
        os.dup2(fd, 3 + i)
    job.st_w = 3 + len(job.extra)
    os.closerange(job.st_w + 1, 1 << 16)
    steps("rlimits", _set_rlimits, job.limits)
    os.chdir(cwd)
    os.umask(0o077)
    if z.env_is_child_env:  # the zygote's environment is exactly child_env: set what differs
        for k, v in env.items():
            if os.environ.get(k) != v:
                os.environ[k] = v
    else:
        os.environ.clear()
        os.environ.update(env)
    if lay["caps"]:
        steps("caps_dropped", drop_capabilities)
    steps("no_new_privs", prctl, PR_SET_NO_NEW_PRIVS, 1)
    if lay["seccomp"] and z.seccomp is not None:
        steps("seccomp", z.seccomp.load)
    os.close(job.st_w)  # setup is over: from here on only the user's code runs
    if job.kind == "probe":
        _probe_inside(z, steps, cwd, minimal)
    elif job.kind == "session":
        _session_loop()
    elif job.kind == "spare":
        _await_code()
    else:
        _run_user_code(job.code)


_CWD: list[str] = []
_REBOUND: dict[str, list[str]] = {"bound": [], "errors": []}


def _set_cwd_holder(minimal: bool, sizes: dict, keep: list[str], owner) -> None:
    cwd, bound, errors = _mount_scratch(minimal, sizes, shadowed_by_scratch(keep, minimal), owner)
    _CWD[:] = [cwd]
    _REBOUND.update(bound=bound, errors=errors)


def _sethostname(name: bytes) -> None:
    if _libc.sethostname(name, ctypes.c_size_t(len(name))) != 0:
        raise _err("sethostname")


# ----------------------------------------------------------------------------- user code
def _fresh_stdio() -> None:
    import io

    sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(
        io.FileIO(1, "w", closefd=False),
        encoding="utf-8",
        errors="backslashreplace",
        line_buffering=True,
    )
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False),
        encoding="utf-8",
        errors="backslashreplace",
        line_buffering=True,
    )
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _exec_cell(code: str, main_dict: dict, filename: str) -> int:
    """Run one code string; print a traceback on error; return the exit code."""
    import linecache
    import traceback

    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    try:
        exec(compile(code, filename, "exec"), main_dict)
        return 0
    except SystemExit as e:
        if e.code is None:
            return 0
        if isinstance(e.code, int):
            return e.code & 0xFF
        print(e.code, file=sys.stderr)
        return 1
    except BaseException as e:
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != filename:
            tb = tb.tb_next  # hide the harness frames
        try:
            traceback.print_exception(type(e), e, tb)
        except BaseException:
            os.write(2, f"{type(e).__name__}\n".encode())
        return 1


def _new_main() -> dict:
    import builtins
    import types

    mod = types.ModuleType("__main__")
    mod.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = mod
    sys.argv = ["-c"]
    return mod.__dict__


def _finish(code: int) -> None:
    import atexit
    import threading

    try:
        threading._shutdown()  # join non-daemon threads, as the interpreter does at exit
        atexit._run_exitfuncs()
    except BaseException:
        pass
    for s in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            s.flush()
    os._exit(code)


def _run_user_code(code: str) -> None:
    import atexit

    atexit._clear()  # the zygote's own exit handlers must never run in a sandbox
    _fresh_stdio()
    _finish(_exec_cell(code, _new_main(), "<code>"))


def _await_code() -> None:
    """A warm spare: fully set up in advance, it waits on fd 3 for the one frame carrying
    its code and CPU limit, then runs it. EOF means the zygote discarded it."""
    import resource

    try:
        req = read_frame(3)
    except Exception:
        req = None
    if req is None:
        os._exit(0)
    os.close(3)
    cpu = int(req["cpu_s"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))  # lowering needs no privilege
    if req.get("stdin"):  # grader-provided input: an in-memory file replaces /dev/null
        fd = os.memfd_create("stdin")
        data = memoryview(base64.b64decode(req["stdin"]))
        while data:
            data = data[os.write(fd, data) :]
        os.lseek(fd, 0, os.SEEK_SET)
        os.dup2(fd, 0)
        os.close(fd)
    _run_user_code(req["code"])


def _session_loop() -> None:
    """A notebook: cells arrive as frames on fd 3, each answered with a frame on fd 4.
    The sandboxed code can reach fds 3/4 too; it can only confuse its own session."""
    import atexit

    atexit._clear()
    _fresh_stdio()
    g = _new_main()
    n = 0
    while True:
        try:
            req = read_frame(3)
        except Exception:
            break
        if req is None:
            break
        n += 1
        rc = _exec_cell(req.get("code", ""), g, f"<cell {n}>")
        for s in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                s.flush()
        write_frame(4, {"nonce": req.get("nonce"), "exit_code": rc})
    _finish(0)


def _probe_inside(z: Zygote, steps: Steps, cwd: str, minimal: bool) -> None:
    """Report, from inside a fully set-up sandbox, which layers actually hold."""
    import socket
    import subprocess

    r: dict = {"steps": steps.log, "cwd": cwd, "minimal_root": minimal}
    r["resuid"] = list(os.getresuid())
    r["resgid"] = list(os.getresgid())
    status = dict(
        line.split(":", 1) for line in _read("/proc/self/status").splitlines() if ":" in line
    )
    r["cap_eff"] = status.get("CapEff", "").strip()
    r["cap_bnd"] = status.get("CapBnd", "").strip()
    r["no_new_privs"] = status.get("NoNewPrivs", "").strip()
    r["seccomp_mode"] = status.get("Seccomp", "").strip()
    r["pid"] = os.getpid()
    r["visible_pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    try:
        r["net_ifaces"] = [
            ln.split(":")[0].strip() for ln in _read("/proc/net/dev").splitlines()[2:]
        ]
    except OSError as e:
        r["net_ifaces"] = f"unreadable: {e}"
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
        r["inet_socket"] = "allowed"
    except OSError as e:
        r["inet_socket"] = f"blocked: {errno.errorcode.get(e.errno, e.errno)}"
    r["env_keys"] = sorted(os.environ)
    try:
        raw = _read("/proc/self/environ", "rb")
        r["proc_environ_keys"] = sorted(
            {kv.split(b"=", 1)[0].decode() for kv in raw.split(b"\0") if kv}
        )
    except OSError as e:
        r["proc_environ_keys"] = f"unreadable: {e}"
    r["hidden_paths_visible"] = [p for p in z.hidden_paths if os.path.exists(p)]
    r["executable"] = sys.executable
    r["rebound"], r["rebind_errors"] = _REBOUND["bound"], _REBOUND["errors"]
    r["executable_ok"] = os.access(sys.executable, os.X_OK)
    writable = []
    for p in sys.path:
        if p and os.path.isdir(p):
            probe = os.path.join(p, ".trajlab-write-probe")
            try:
                fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except OSError:
                continue
            os.close(fd)
            os.unlink(probe)
            writable.append(p)
    r["writable_sys_path"] = writable
    try:
        cp = subprocess.run(
            [sys.executable, "-I", "-c", "import sys, json; print(json.dumps(sys.prefix))"],
            capture_output=True, timeout=20,
        )  # fmt: skip
        r["interpreter_exec"] = "ok" if cp.returncode == 0 else cp.stderr.decode()[-500:]
    except Exception as e:
        r["interpreter_exec"] = f"{type(e).__name__}: {e}"
    try:
        st = os.statvfs(cwd)
        r["cwd_bytes"] = st.f_blocks * st.f_frsize
    except OSError:
        r["cwd_bytes"] = -1
    import resource

    r["rlimits"] = {
        name: list(resource.getrlimit(getattr(resource, name)))
        for name in ("RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_NPROC")
    }
    r["cgroup"] = _read("/proc/self/cgroup")
    os.write(1, json.dumps(r).encode())
    os._exit(0)


# ----------------------------------------------------------------------------- zygote
class Session:
    def __init__(self, job: Job, cell_w: int, done_r: int):
        self.job, self.cell_w, self.done_r = job, cell_w, done_r
        self.last_used = time.monotonic()
        self.cells = 0
        self.frozen = False  # between cells, where the cgroup freezer holds


class Zygote:
    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.pid = os.getpid()
        self.probing = True
        self.layers = {
            k: True for k in ("cgroup", "uid_drop", "namespaces", "minimal_root", "caps", "seccomp")
        }
        self.uid, self.gid = cfg.get("uid"), cfg.get("gid")
        self.session_uid, self.session_gid = cfg.get("session_uid"), cfg.get("session_gid")
        if self.uid is None:
            self.layers["uid_drop"] = False
        self.unit = cfg.get("cgroup_unit")
        if not self.unit:
            self.layers["cgroup"] = False
        self.session_parents = cfg.get("cgroup_session_parents")
        self.sizes = cfg["tmpfs"]
        self.stage_dir = cfg["stage_dir"]
        self.child_env = cfg["child_env"]
        self.hidden_paths = cfg.get("hidden_paths", [])
        # interpreter directories to bind back over the scratch tmpfs mounts (a venv in /tmp)
        self.keep_visible = cfg.get("interpreter_dirs", [])
        self.allow_loopback = bool(cfg.get("allow_loopback"))
        self.root_ready, self.root_error = False, "not requested"
        self.seccomp = None
        self.seccomp_skipped: list[str] = []
        self.sessions: dict[str, Session] = {}
        self.runs = 0
        self.spare: Job | None = None
        self.spare_limits: dict | None = None
        self.fast_spawn = False  # set by startup() when the one-fork spawn works
        self.env_is_child_env = dict(os.environ) == self.child_env
        self.pidns_fd = self.self_pidfd = -1
        self.mnt_template = -1  # fd of the template mount namespace (fast path)
        self.template: Template | None = None  # forks every sandbox once configured
        self.template_fds: tuple[int, ...] = ()  # set inside the template itself

    def startup(self) -> dict:
        prctl(PR_SET_CHILD_SUBREAPER, 1)
        info: dict = {"preloaded": [], "preload_errors": {}}
        if self.unit:  # join once: moving every run costs ~5-10 ms (an RCU sync in the kernel)
            try:
                for d in self.unit["dirs"].values():
                    _write_text(os.path.join(d, "cgroup.procs"), str(self.pid))
                info["cgroup"] = _read("/proc/self/cgroup")  # sandboxes see only "/" of it
            except OSError as e:
                info["cgroup_error"] = f"{type(e).__name__}: {e}"
                self.unit = None
                self.layers["cgroup"] = False
        for mod in self.cfg.get("preload", []):
            try:
                __import__(mod)
                info["preloaded"].append(mod)
            except Exception as e:
                info["preload_errors"][mod] = f"{type(e).__name__}: {e}"
        if "sympy" in info["preloaded"]:  # warm sympy's caches once, for every later fork
            import sympy

            x = sympy.Symbol("x")
            sympy.solve(x**2 - 4, x)
            sympy.simplify(sympy.sin(x) ** 2 + sympy.cos(x) ** 2)
        for mod in ("io", "linecache", "traceback", "types", "builtins", "atexit", "threading",
                    "resource", "fcntl", "socket", "subprocess"):  # fmt: skip
            __import__(mod)
        info["install_finders_dropped"] = drop_install_finders()
        try:
            filt, self.seccomp_skipped = build_seccomp(self.allow_loopback)
            self.seccomp = CompiledFilter(filt)
        except Exception as e:
            info["seccomp_error"] = f"{type(e).__name__}: {e}"
            self.layers["seccomp"] = False
        info["seccomp_skipped"] = self.seccomp_skipped
        info["landlock_abi"] = landlock_abi()
        cap_last()
        if os.geteuid() == 0 and self.uid is not None:  # the one-fork spawn (see spawn())
            try:
                self.pidns_fd = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
                self.self_pidfd = os.pidfd_open(self.pid)
                unshare(CLONE_NEWPID)
                setns(self.pidns_fd, CLONE_NEWPID)
                self.fast_spawn = True
            except OSError as e:
                info["fast_spawn_error"] = f"{type(e).__name__}: {e}"
        info["fast_spawn"] = self.fast_spawn
        if self.cfg.get("binds"):
            try:
                prepare_minimal_root(self.stage_dir, self.cfg["binds"], self.cfg.get("etc", []))
                self.root_ready, self.root_error = True, ""
                if self.fast_spawn:
                    self.mnt_template = make_template_ns(self.stage_dir)
            except Exception as e:
                self.root_error = f"{type(e).__name__}: {e}"
                self.layers["minimal_root"] = False
        info["minimal_root"] = self.root_error or "ok"
        # Move every object created so far out of the collector's reach: a collection in a
        # forked sandbox would otherwise touch (and copy-on-write) every preloaded page.
        import gc

        gc.collect()
        gc.freeze()
        info["huge_pages_kb"] = collapse_heap()
        info["vm_size_kb"] = _vm_size_kb()
        return info

    # -- one run ---------------------------------------------------------------------------
    def spawn(self, job: Job) -> None:
        """Fork the sandbox for `job`. Fast path (root zygote): the zygote creates a fresh
        pid namespace for its next child and forks the sandbox directly into it as pid 1
        (`_fast_main`), then returns to its own pid namespace: one fork of the large
        preloaded process per run. Otherwise (unprivileged) the two-fork order: C1
        drops the uid and unshares every namespace, C2 is pid 1 (`_c1_main`)."""
        if self.template is not None and job.kind in ("spare", "session"):
            job.pid = self.template.spawn(job)
            job.via_template = True
        else:
            self.fork_sandbox(job)
        for fd in (job.out_w, job.err_w, job.st_w, *job.extra):
            os.close(fd)

    def fork_sandbox(self, job: Job) -> None:
        """The fork itself (in the zygote before it is configured, in its template after)."""
        fast = self.fast_spawn and self.layers["namespaces"] and self.layers["uid_drop"]
        if fast:
            unshare(CLONE_NEWPID)  # applies to the next child only
            try:
                pid = os.fork()
            finally:
                if os.getpid() == self.pid:  # back to our own pid namespace for later forks
                    setns(self.pidns_fd, CLONE_NEWPID)
        else:
            pid = os.fork()
        if pid == 0:
            try:
                if self.template_fds:
                    _forget_template(self.template_fds)
                _fast_main(job) if fast else _c1_main(job)
            except SetupError as e:
                _report_setup_error(job, str(e))
            except BaseException as e:
                _report_setup_error(job, f"{type(e).__name__}: {e}")
            os._exit(SETUP_FAIL)
        job.pid = pid

    def collect(self, job: Job, deadline: float, cap: int, done_r: int | None = None, nonce=None):
        """Read output until the sandbox ends (or, for a session cell, says it is done),
        the deadline passes or the cap is hit. Returns (out, err, why, done_frame)."""
        bufs = {job.out_r: bytearray(), job.err_r: bytearray()}
        open_fds = [job.out_r, job.err_r]
        pidfd = os.pidfd_open(job.pid)
        why, done = None, None
        exited_at = None
        watch = [pidfd, 0] + ([done_r] if done_r is not None else [])
        try:
            while open_fds or exited_at is None:
                now = time.monotonic()
                if now >= deadline:
                    why = "timeout"
                    break
                if exited_at is not None and now - exited_at > 0.5:
                    break  # something outside our pid namespace still holds a pipe
                wait = deadline - now if exited_at is None else 0.05
                ready = select.select(open_fds + watch, [], [], wait)[0]
                for fd in ready:
                    if fd == pidfd:
                        exited_at = exited_at or time.monotonic()
                        watch.remove(pidfd)
                    elif fd == 0:
                        raise _HostGone()
                    elif fd == done_r:
                        try:
                            done = read_frame(done_r, time.monotonic() + 1.0, limit=4096)
                        except Exception:  # a sandbox scribbled on its own channel
                            done = None
                        if done is None or done.get("nonce") != nonce:
                            why = "crashed"  # session died or tampered with its channel
                        why = why or "done"
                        break
                    else:
                        chunk = os.read(fd, 65536)
                        if not chunk:
                            open_fds.remove(fd)
                            continue
                        room = cap - len(bufs[job.out_r]) - len(bufs[job.err_r])
                        bufs[fd] += chunk[: max(room, 0)]
                        if len(chunk) > room:
                            why = "output_limit"
                            break
                if why:
                    break
            if why == "done":  # drain what the cell wrote before it reported
                for fd in open_fds:
                    os.set_blocking(fd, False)
                    try:
                        while chunk := os.read(fd, 65536):
                            room = cap - len(bufs[job.out_r]) - len(bufs[job.err_r])
                            bufs[fd] += chunk[: max(room, 0)]
                            if len(chunk) > room:
                                why = "output_limit"
                                break
                    except BlockingIOError:
                        pass
                    os.set_blocking(fd, True)
        finally:
            os.close(pidfd)
        return bytes(bufs[job.out_r]), bytes(bufs[job.err_r]), why, done

    def kill(self, job: Job, unit: dict | None) -> None:
        if job.kind == "session":  # frozen tasks would hold their SIGKILL until thawed
            cgroup_freeze(unit, False)
        for target in (-job.pid, job.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(target, signal.SIGKILL)
        cgroup_kill_all(unit, exclude=self.own_pids())

    def own_pids(self) -> tuple[int, ...]:
        """The processes of the slot's cgroup that are not sandboxes."""
        return (self.pid,) if self.template is None else (self.pid, self.template.pid)

    def reap(self, job: Job) -> tuple[int | None, int | None]:
        """Wait for C1; returns (exit_code, signal)."""
        if job.status is None:
            if job.via_template:
                job.status = self.template.wait(job.pid)
            else:
                _, job.status = os.waitpid(job.pid, 0)
        self._reap_strays(wait_s=1.0)
        collect_unix_garbage()
        if os.WIFSIGNALED(job.status):
            return None, os.WTERMSIG(job.status)
        return os.WEXITSTATUS(job.status), None

    def _children(self) -> set[int]:
        try:
            with open(f"/proc/self/task/{self.pid}/children") as f:
                return {int(x) for x in f.read().split()}
        except OSError:
            return set()

    def _reap_strays(self, wait_s: float = 0.0) -> None:
        """Collect exited children (we are a subreaper: a sandbox's pid 1 whose C1 died
        first lands here). Waits up to wait_s for untracked children to finish dying;
        remembers the status of tracked ones so reap() never waits for them twice."""
        tracked = {s.job.pid: s.job for s in self.sessions.values()}
        if self.spare is not None:
            tracked[self.spare.pid] = self.spare
        if self.template is not None:  # it lives as long as we do
            tracked[self.template.pid] = None
        end = time.monotonic() + wait_s
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid:
                if tracked.get(pid) is not None:
                    tracked[pid].status = status
                continue
            if not (self._children() - set(tracked)) or time.monotonic() >= end:
                return
            time.sleep(0.001)

    def setup_error(self, job: Job) -> str:
        os.set_blocking(job.st_r, False)
        try:
            return os.read(job.st_r, 4096).decode(errors="replace")
        except BlockingIOError:
            return ""

    def make_spare(self) -> None:
        """Fork the next sandbox now, so it is set up while the host is busy elsewhere."""
        if self.spare is None and self.spare_limits is not None and not self.probing:
            job = Job(self, "spare", "", self.spare_limits, self.unit, self.uid, self.gid)
            code_r, job.code_w = os.pipe()
            os.set_blocking(job.code_w, False)  # writes to a sandbox have a deadline
            job.extra = [code_r]
            self.spawn(job)
            self.spare = job

    def drop_spare(self) -> None:
        job, self.spare = self.spare, None
        if job is not None:
            os.close(job.code_w)  # EOF: the spare exits by itself, C1 collects its pid 1
            if job.status is None:
                pidfd = os.pidfd_open(job.pid)
                exited = select.select([pidfd], [], [], 0.5)[0]
                os.close(pidfd)
                if not exited:
                    self.kill(job, None)
            self.reap(job)
            for fd in (job.out_r, job.err_r, job.st_r):
                os.close(fd)

    def run(self, req: Run) -> Result:
        kind = req.kind
        if kind == "probe":
            self.probing = True
            self.drop_spare()
        limits = req.limits
        oom0 = cgroup_oom_kills(self.unit)
        t0 = time.monotonic()
        if kind == "run" and not self.probing:
            if self.spare is None or self.spare_limits != _no_cpu(limits):
                self.drop_spare()
                self.spare_limits = _no_cpu(limits)
                self.make_spare()
            job, self.spare = self.spare, None
            with contextlib.suppress(OSError):  # died in setup (its status says why) or timed out
                frame = {"code": req.code, "cpu_s": limits["cpu_s"], "stdin": req.stdin}
                write_frame(job.code_w, frame, t0 + req.timeout_s)
            os.close(job.code_w)
        else:
            job = Job(self, kind, req.code, limits, self.unit, self.uid, self.gid)
            self.spawn(job)
        try:
            out, err, why, _ = self.collect(job, t0 + req.timeout_s, req.output_cap)
        except BaseException:
            self.kill(job, self.unit)
            raise
        if why:
            self.kill(job, self.unit)
        code, sig = self.reap(job)
        if self.unit:  # anything that escaped the namespace teardown
            cgroup_kill_all(self.unit, exclude=self.own_pids())
        elif not self.layers["namespaces"] and self.layers["uid_drop"] and self.uid is not None:
            kill_uid(self.uid)  # degraded mode: no pid namespace, no cgroup
        if os.path.lexists(job.fallback_cwd):  # degraded mode only (no mount namespace)
            import shutil

            shutil.rmtree(job.fallback_cwd, ignore_errors=True)
        latency = time.monotonic() - t0
        setup_err = self.setup_error(job) if code == SETUP_FAIL else ""
        for fd in (job.out_r, job.err_r, job.st_r):
            os.close(fd)
        self.runs += 1
        oom = cgroup_oom_kills(self.unit) > oom0 >= 0
        if kind == "probe":
            self.probing = False
        return _result(req.nonce, out, err, code, sig, why, oom, latency, setup_err)

    def handle(self, req: Message) -> Message:
        """Answer one request from the pool."""
        if isinstance(req, Configure):
            self.drop_spare()
            self.layers.update(req.layers)
            self.probing = False
            if self.template is None:
                self.template = Template(self)  # now, before any run has been handled
            else:
                self.template.configure(req.layers)
            return Status(req.nonce)
        if isinstance(req, Run):
            return self.run(req)
        if isinstance(req, SessionOpen):
            return self.session_open(req)
        if isinstance(req, SessionRun):
            return self.session_run(req)
        if isinstance(req, SessionClose):
            self._drop_session(req.sid)
            return Status(req.nonce)
        if isinstance(req, Ping):
            spare = self.spare.pid if self.spare else None
            pids = [x.job.pid for x in self.sessions.values()]
            return Pong(req.nonce, runs=self.runs, spare_pid=spare, session_pids=pids)
        return Status(req.nonce, status="bad_op", error=f"{req.op!r} is not a request")

    # -- sessions -------------------------------------------------------------------------
    def session_open(self, req: SessionOpen) -> Status:
        sid = req.sid
        if len(self.sessions) >= req.max_sessions:
            return Status(req.nonce, status="refused", error="too many open sessions")
        unit = None
        if self.layers["cgroup"] and self.session_parents:
            unit = cgroup_create(self.session_parents["kind"], self.session_parents["parents"],
                                 f"session-{sid}", req.limits["cgroup"])  # fmt: skip
        uid = self.session_uid if self.layers["uid_drop"] else None
        gid = self.session_gid if self.layers["uid_drop"] else None
        job = Job(self, "session", "", req.limits, unit, uid, gid)
        cell_r, cell_w = os.pipe()
        os.set_blocking(cell_w, False)  # a session that stops reading cannot stall the zygote
        done_r, done_w = os.pipe()
        job.extra = [cell_r, done_w]
        self.spawn(job)
        self.sessions[sid] = Session(job, cell_w, done_r)
        return Status(req.nonce)

    def session_run(self, req: SessionRun) -> Result:
        s = self.sessions.get(req.sid)
        if s is None:
            return _result(req.nonce, b"", b"", None, None, "gone", False, 0.0, "")
        t0 = time.monotonic()
        oom0 = cgroup_oom_kills(s.job.unit)
        cell_nonce = base64.b16encode(os.urandom(8)).decode()
        if s.frozen:  # frozen since its last cell returned: nothing ran in between
            cgroup_freeze(s.job.unit, False)
            s.frozen = False
        try:
            write_frame(s.cell_w, {"nonce": cell_nonce, "code": req.code}, t0 + req.timeout_s)
        except TimeoutError:  # still busy with an earlier cell (one that lied it was done)
            self._drop_session(req.sid)
            res = _result(req.nonce, b"", b"", None, None, "timeout", False, req.timeout_s, "")
            res.session_reset = True
            return res
        except OSError:
            self._drop_session(req.sid)
            return _result(req.nonce, b"", b"", None, None, "gone", False, 0.0, "")
        try:
            out, err, why, done = self.collect(
                s.job, t0 + req.timeout_s, req.output_cap, s.done_r, cell_nonce
            )
        except BaseException:
            self._drop_session(req.sid)
            raise
        s.last_used = time.monotonic()
        s.cells += 1
        latency = time.monotonic() - t0
        if why == "done":
            # Threads and processes the cell left behind stop with it until the next cell:
            # a cell's wall limit binds everything it started.
            s.frozen = cgroup_freeze(s.job.unit, True)
            rc = done.get("exit_code") if isinstance(done, dict) else None
            rc = rc if isinstance(rc, int) else 1
            return _result(req.nonce, out, err, rc, None, None, False, latency, "")
        # the cell ended the session (timeout, cap, crash, exit): kill and report
        self.kill(s.job, s.job.unit)
        code, sig = self.reap(s.job)
        oom = cgroup_oom_kills(s.job.unit) > oom0 >= 0
        self._drop_session(req.sid, kill=False)
        res = _result(req.nonce, out, err, code, sig, why, oom, latency, "")
        res.session_reset = True
        return res

    def _drop_session(self, sid: str, kill: bool = True) -> None:
        s = self.sessions.pop(sid, None)
        if s is None:
            return
        if kill:
            self.kill(s.job, s.job.unit)
            self.reap(s.job)
        for fd in (s.cell_w, s.done_r, s.job.out_r, s.job.err_r, s.job.st_r):
            with contextlib.suppress(OSError):
                os.close(fd)
        cgroup_remove(s.job.unit)
        if os.path.lexists(s.job.fallback_cwd):  # degraded mode only (no mount namespace)
            import shutil

            shutil.rmtree(s.job.fallback_cwd, ignore_errors=True)

    def expire_sessions(self, idle_s: float) -> None:
        now = time.monotonic()
        for sid, s in list(self.sessions.items()):
            if now - s.last_used > idle_s:
                self._drop_session(sid)

    def shutdown(self) -> None:
        self.drop_spare()
        for sid in list(self.sessions):
            self._drop_session(sid)
        if self.template is not None:
            self.template.close()
            self.template = None
        for pid in self._children():  # nothing may outlive the zygote (nor reach init)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._reap_strays(wait_s=2.0)


class _HostGone(Exception):
    pass


def _report_setup_error(job: Job, msg: str) -> None:
    with contextlib.suppress(OSError):
        os.write(job.st_w, msg.encode()[:4000])


def _no_cpu(limits: dict) -> dict:
    return {k: v for k, v in limits.items() if k != "cpu_s"}


def collapse_heap(min_bytes: int = 4 << 20) -> int:
    """Back the zygote's large private anonymous mappings (the malloc heap and the
    interpreter's arenas, where the preloaded modules live) with transparent huge pages
    (MADV_COLLAPSE, Linux 6.1+; best effort). Each fork then copies, and each sandbox's
    exit frees, one entry per 2 MiB instead of 512 page-table entries: with numpy and
    sympy preloaded about 0.4 ms less CPU per fork and as much per exit. Copy-on-write
    is unchanged (a write splits the huge mapping in the writer and copies 4 KiB).
    Returns the kB now in huge pages (AnonHugePages), or -1 when unknown."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    MADV_HUGEPAGE, MADV_COLLAPSE = 14, 25
    try:
        maps = _read("/proc/self/maps").splitlines()
    except OSError:
        return -1
    for line in maps:
        f = line.split()
        if f[1] != "rw-p" or (len(f) > 5 and f[5] != "[heap]"):
            continue  # private anonymous (or the heap) only: no files, stacks or vdso
        lo, hi = (int(v, 16) for v in f[0].split("-"))
        if hi - lo >= min_bytes:
            libc.madvise(lo, hi - lo, MADV_HUGEPAGE)
            libc.madvise(lo, hi - lo, MADV_COLLAPSE)
    try:
        for line in _read("/proc/self/smaps_rollup").splitlines():
            if line.startswith("AnonHugePages:"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1


# Names of files by which an installed package records where its source tree lives: an
# editable install's finder (its MAPPING names the tree) and .pth, a legacy .egg-link, and
# PEP 610's direct_url.json. The minimal root binds an empty file over each.
SOURCE_RECORDS = ("__editable__*", "*.egg-link", "*.dist-info/direct_url.json")


def drop_install_finders() -> list[str]:
    """Forget editable-install finders the interpreter loaded at start-up (their module
    globals name the source tree): out of sys.modules, sys.meta_path, sys.path_hooks and
    sys.path. The sandbox imports only installed packages, which need none of them."""
    names = [m for m in list(sys.modules) if m.startswith("__editable__")]
    for name in names:
        mod = sys.modules.pop(name)
        sys.meta_path[:] = [
            f for f in sys.meta_path if getattr(f, "__module__", "") != mod.__name__
        ]
        sys.path_hooks[:] = [
            h for h in sys.path_hooks if getattr(h, "__module__", "") != mod.__name__
        ]
    sys.path[:] = [p for p in sys.path if not str(p).startswith("__editable__")]
    for key in [k for k in sys.path_importer_cache if str(k).startswith("__editable__")]:
        del sys.path_importer_cache[key]
    return names


def _mask_source_records(root: str, binds: list[str]) -> None:
    """Bind an empty read-only file over every SOURCE_RECORDS file under the bound
    site-packages directories of `binds`, inside the minimal root at `root`."""
    import glob

    empty = os.path.join(root, "etc", ".empty")
    open(empty, "w").close()
    for base in binds:
        for site in glob.glob(os.path.join(base, "lib*", "python3*", "site-packages")):
            for pattern in SOURCE_RECORDS:
                for path in glob.glob(os.path.join(site, pattern)):
                    if os.path.isfile(path) and not os.path.islink(path):
                        mount(empty, root + path, None, MS_BIND)


def _vm_size_kb() -> int:
    for line in _read("/proc/self/status").splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1])
    return -1


def _result(
    nonce, out: bytes, err: bytes, code, sig, why, oom: bool, latency: float, setup_err: str
) -> Result:
    return Result(
        nonce,
        stdout=base64.b64encode(out).decode(),
        stderr=base64.b64encode(err).decode(),
        exit_code=code,
        signal=sig,
        killed_for=why,
        oom_kill=oom,
        latency_s=latency,
        setup_error=setup_err,
    )


def main() -> None:
    cfg = read_frame(0)
    if cfg is None:
        return
    z = Zygote(cfg)
    send(1, Ready(info=z.startup(), pid=z.pid))
    idle_s = float(cfg.get("session_idle_s", 600))
    while True:
        timeout = 5.0 if z.sessions else None
        if not select.select([0], [], [], timeout)[0]:
            z.expire_sessions(idle_s)
            continue
        try:
            frame = read_frame(0)
        except Exception:
            break
        if frame is None:
            break
        try:
            req = decode(frame)
        except ValueError as e:
            nonce = frame.get("nonce")
            resp = Status(nonce if isinstance(nonce, str) else None, status="bad_op", error=str(e))
        else:
            if isinstance(req, Shutdown):
                break
            try:
                resp = z.handle(req)
            except _HostGone:
                break
            except Exception as e:  # report, keep serving: one bad request must not kill the slot
                resp = Status(req.nonce, status="zygote_error", error=f"{type(e).__name__}: {e}")
        z.expire_sessions(idle_s)
        try:
            send(1, resp)
        except OSError:
            break
        if frame.get("op") == "run":
            try:
                z.make_spare()
            except Exception:  # e.g. EAGAIN at the process limit: the next run forks anew
                z.spare = None
    z.shutdown()
    os._exit(0)


if __name__ == "__main__":
    main()
