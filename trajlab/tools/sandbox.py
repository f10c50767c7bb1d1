"""SandboxPool: run untrusted, model-written Python on a plain Linux machine.

How to use it:

    with SandboxPool(SandboxConfig(timeout_s=5)) as pool:
        r = pool.run("print(1)")            # SandboxResult(status="ok", stdout="1\\n", ...)
        print(pool.capabilities().summary())
        with pool.session() as s:           # a notebook: variables survive between cells
            s.run("x = 2"); s.run("print(x)")

What it is (threat model and pitfalls: docs/sandbox.md): one warm fork server ("zygote",
trajlab/tools/sandbox_zygote.py) per slot, launched with exec and a minimal explicit
environment so the trainer's secrets never reach it. Each run is forked from the zygote
into a fresh process with its own unprivileged uid (one per slot), cgroup (memory,
pids), user/mount/pid/net/ipc/uts namespaces, a minimal read-only root without the
project tree, size-capped tmpfs scratch space, rlimits, no capabilities, NO_NEW_PRIVS
and a seccomp denylist. The wall-clock timeout and the output cap are enforced outside
the sandbox with SIGKILL of the whole tree; results cross back as length-prefixed JSON
frames tied to a per-run nonce (never pickle).

At start the pool runs a self-check inside a real sandbox and records which layers
hold (`capabilities()`). The default "untrusted" mode refuses to start unless at least
process-per-run, the outside timeout, a dropped uid, a blocked network (namespace or
seccomp), a scrubbed environment and a read-only site-packages hold; the error names
what is missing and how to fix it. `allow_insecure=True` runs with whatever holds (e.g.
as a non-root user: no uid drop, but unprivileged user namespaces).

Departures: the default memory bound is the cgroup (RLIMIT_AS is set to the same value
as a backstop), user code runs as pid 1 of its namespace (see the zygote's docstring).
Non-goals: no VM-grade isolation (kernel 0-days are out of scope; use gVisor or a
microVM for that), no Landlock policy (its ABI is only reported), and no observation
truncation for the model (the agent loop does that; only the capture cap lives here).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import fcntl
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from trajlab.config import opt
from trajlab.memory import status_kib
from trajlab.tools import sandbox_zygote as zy

M = TypeVar("M", bound=zy.Message)

log = logging.getLogger(__name__)

STATUSES = ("ok", "error", "timeout", "output_limit", "memory", "crashed")
REQUIRED_UNTRUSTED = (
    "process_per_run",
    "outside_timeout",
    "uid_drop",
    "network_blocked",
    "env_scrubbed",
    "site_packages_readonly",
)
MiB = 1 << 20


class SandboxError(RuntimeError):
    """The sandbox itself is broken (not the model's code): a dead zygote, a layer that
    held at the self-check and failed later, a protocol violation."""


class SandboxUnavailable(SandboxError):
    """The self-check found that the layers required by the chosen mode do not hold."""


def default_slots() -> int:
    """Two zygotes per CPU core, at most 32 (the per-slot uid block)."""
    return min(32, 2 * (os.cpu_count() or 1))


@dataclass
class SandboxConfig:
    """Every knob of the sandbox. Defaults: docs/sandbox.md, "Configuration"."""

    slots: int = opt(
        0,
        "Number of zygotes (parallel executions); 0 = two per CPU core (at most 32): a slot "
        "spends part of each call waiting on pipes and on setting up its next warm spare, so one "
        "slot per core leaves the cores idle part of the time (docs/sandbox.md).",
    )
    timeout_s: float = opt(
        10.0,
        "Wall-clock limit per call, enforced outside the sandbox with SIGKILL. Never taken from "
        "the model's tool arguments.",
    )
    memory_bytes: int = opt(
        1 << 30,
        "cgroup memory limit per slot (includes tmpfs pages); also RLIMIT_AS per process.",
    )
    pids: int = opt(
        64,
        "cgroup pids.max per slot and RLIMIT_NPROC of the slot uid (fork and thread bombs).",
    )
    fsize_bytes: int = opt(
        16 * MiB,
        "RLIMIT_FSIZE: the largest file a sandbox may write.",
    )
    nofile: int = opt(
        256,
        "RLIMIT_NOFILE.",
    )
    output_cap_bytes: int = opt(
        64 * 1024,
        "Bytes of stdout+stderr captured per call; beyond it the run is killed with status "
        "output_limit (at most 1 MiB).",
    )
    max_code_bytes: int = opt(
        256 * 1024,
        "Code larger than this is rejected without running (status error).",
    )
    max_stdin_bytes: int = opt(
        8 * MiB,
        "Largest stdin a caller (a grader feeding test input) may pass to `run`.",
    )
    cwd_bytes: int = opt(
        64 * MiB,
        "tmpfs size of the working directory (HOME).",
    )
    tmp_bytes: int = opt(
        64 * MiB,
        "tmpfs size of /tmp.",
    )
    var_tmp_bytes: int = opt(
        16 * MiB,
        "tmpfs size of /var/tmp.",
    )
    shm_bytes: int = opt(
        64 * MiB,
        "tmpfs size of /dev/shm.",
    )
    allow_loopback: bool = opt(
        False,
        "Bring `lo` up inside the private network namespace and allow AF_INET/AF_INET6 sockets "
        "(for tasks that start local servers). The host network stays unreachable.",
    )
    preload: tuple[str, ...] = opt(
        ("numpy", "sympy"),
        "Modules imported once in every zygote, so each run starts with them warm.",
    )
    allow_insecure: bool = opt(
        False,
        "Start even when the layers required for untrusted code do not all hold.",
    )
    minimal_root: bool = opt(
        True,
        "pivot_root into a read-only root holding only /usr, the interpreter prefix and a few "
        "/etc files, so the project tree, data and secrets are invisible.",
    )
    cgroup: str = opt(
        "auto",
        "auto | v1 | v2 | off. auto uses v2 when its memory and pids controllers are available, "
        "else v1, else only rlimits.",
    )
    uid_base: int = opt(
        2_100_000_000,
        "First uid of the ranges handed to pools; each pool locks a block of 64 uids (slots use "
        "base+i, sessions base+32+i). Must not belong to real users.",
        flag=False,
    )
    hash_seed: str | None = opt(
        "0",
        "PYTHONHASHSEED inside the sandbox (None: random per run).",
    )
    extra_env: dict[str, str] = opt(
        {},
        "Additional environment variables for sandboxed code (values are set here, never copied "
        "from the trainer's environment).",
    )
    hidden_paths: tuple[str, ...] = opt(
        (),
        "Paths the self-check must not see from inside (the project tree and home are always "
        "checked); e.g. a directory of hidden tests.",
    )
    session_idle_s: float = opt(
        600.0,
        "A stateful session unused for this long is killed.",
    )
    session_cpu_s: int = opt(
        600,
        "RLIMIT_CPU of a session process (CPU time summed over all its cells).",
    )
    max_sessions_per_slot: int = opt(
        64,
        "Open sessions a slot may hold at once (each is one idle process, mostly shared "
        "copy-on-write with its zygote, plus a cgroup).",
    )
    recycle_after_runs: int = opt(
        10_000,
        "Restart a zygote after this many runs (bounds slow leaks in the fork server).",
    )
    python: str = opt(
        "",
        'Interpreter for the zygotes; "" = the current one (sys.executable).',
        flag=False,
    )
    startup_timeout_s: float = opt(
        120.0,
        "How long a zygote may take to preload its modules and answer.",
    )
    zygote_log: str | None = opt(
        None,
        "File receiving the zygotes' stderr (debugging); None discards it.",
        flag=False,
    )

    def __post_init__(self) -> None:
        checks = [
            (0 < self.timeout_s <= 600, "timeout_s must be in (0, 600]"),
            (self.memory_bytes >= 64 * MiB, "memory_bytes must be >= 64 MiB"),
            (1 <= self.pids <= 4096, "pids must be in [1, 4096]"),
            (1024 <= self.output_cap_bytes <= MiB, "output_cap_bytes must be in [1 KiB, 1 MiB]"),
            (self.slots >= 0 and self.slots <= 32, "slots must be in [0, 32] (0 = 2 per CPU core)"),
            (self.cgroup in ("auto", "v1", "v2", "off"), "cgroup must be auto, v1, v2 or off"),
            (self.max_code_bytes > 0, "max_code_bytes must be > 0"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"SandboxConfig: {msg}")


@dataclass
class SandboxResult:
    """What one execution produced. `stdout`/`stderr` are decoded with errors='replace'."""

    status: str  # ok | error | timeout | output_limit | memory | crashed
    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = None  # None when killed by a signal
    signal: int | None = None
    latency_s: float = 0.0
    truncated: bool = False  # output hit the capture cap
    error: str | None = None  # why, for every status but ok
    session_reset: bool = False  # a session cell ended the session (its variables are gone)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class Layer:
    ok: bool
    detail: str
    fix: str = ""


@dataclass
class Capabilities:
    """Which isolation layers hold, measured inside a real sandbox at pool start."""

    layers: dict[str, Layer]
    info: dict[str, Any]
    required: tuple[str, ...] = REQUIRED_UNTRUSTED

    @property
    def missing(self) -> list[str]:
        return [k for k in self.required if not self.layers.get(k, Layer(False, "")).ok]

    def holds(self, name: str) -> bool:
        layer = self.layers.get(name)
        return bool(layer and layer.ok)

    def summary(self) -> str:
        rows = [f"{'layer':24} {'holds':5}  detail"]
        for k, v in self.layers.items():
            mark = "yes" if v.ok else "NO"
            req = " (required)" if k in self.required else ""
            rows.append(f"{k:24} {mark:5}  {v.detail}{req}")
        return "\n".join(rows)


# ------------------------------------------------------------------------------ host facts
def _is_root() -> bool:
    return os.geteuid() == 0


def _state_dir() -> Path:
    d = Path("/run/trajlab-sandbox") if _is_root() else None
    if d is None or not os.access("/run", os.W_OK):
        d = Path(tempfile.gettempdir()) / f"trajlab-sandbox-{os.geteuid()}"
    d.mkdir(mode=0o755, exist_ok=True)
    (d / "root").mkdir(mode=0o755, exist_ok=True)  # staging mount point of minimal roots
    return d


def _cgroup_kind(want: str) -> str | None:
    if want == "off" or not _is_root():
        return None
    v2_ok = False
    try:
        ctrls = Path("/sys/fs/cgroup/cgroup.controllers").read_text().split()
        v2_ok = "memory" in ctrls and "pids" in ctrls
    except OSError:
        pass
    v1_ok = all(
        os.path.exists(f"/sys/fs/cgroup/{c}/cgroup.procs")
        and not os.path.exists(f"/sys/fs/cgroup/{c}/cgroup.controllers")
        for c in ("memory", "pids")
    )
    if want in ("auto", "v2") and v2_ok:
        return "v2"
    if want in ("auto", "v1") and v1_ok:
        return "v1"
    return None


def _cgroup_roots(kind: str) -> dict[str, Path]:
    if kind == "v1":  # the freezer, where mounted, stops a session between its cells
        ctrls = ["memory", "pids"] + (
            ["freezer"] if Path("/sys/fs/cgroup/freezer").is_dir() else []
        )
        return {c: Path(f"/sys/fs/cgroup/{c}/trajlab") for c in ctrls}
    return {"unified": Path("/sys/fs/cgroup/trajlab")}


def _enable_v2_controllers(d: Path) -> None:
    (d / "cgroup.subtree_control").write_text("+memory +pids")


def _sweep_stale_cgroups(kind: str) -> None:
    """Remove pool cgroups left by processes that died without closing their pool."""
    for root in _cgroup_roots(kind).values():
        if not root.is_dir():
            continue
        for pool_dir in root.glob("pool-*"):
            try:
                owner = int(pool_dir.name.split("-")[1])
                os.kill(owner, 0)
                continue  # owner alive
            except (ValueError, IndexError):
                continue
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
            for sub in pool_dir.iterdir():
                if sub.is_dir():
                    zy.cgroup_remove({"kind": kind, "dirs": {"x": str(sub)}})
            with contextlib.suppress(OSError):
                pool_dir.rmdir()


def _bind_paths(python: str) -> list[str]:
    """Directories bind-mounted read-only into the minimal root: /usr (+ unmerged /lib*),
    and the interpreter's prefixes (the venv; a pyenv under /root)."""
    cands = ["/usr"] + [
        d
        for d in ("/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
        if os.path.isdir(d) and not os.path.islink(d)
    ]
    exe_real = os.path.realpath(python)
    prefix_of_exe = os.path.dirname(os.path.dirname(exe_real))
    venv = os.path.dirname(os.path.dirname(os.path.abspath(python)))
    for p in (
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        prefix_of_exe,
        venv,
    ):
        for q in (os.path.abspath(p), os.path.realpath(p)):
            if q not in ("/", "") and os.path.isdir(q):
                cands.append(q)
    out: list[str] = []
    for p in sorted(set(cands), key=len):
        if not any(p == q or p.startswith(q.rstrip("/") + "/") for q in out):
            out.append(p)
    return out


# Directories every sandbox has (fresh and private), so they can never be "hidden".
_ALWAYS_PRESENT = {
    "",
    "/",
    "/tmp",
    "/var",
    "/var/tmp",
    "/dev",
    "/dev/shm",
    "/proc",
    "/etc",
    "/sandbox",
}


def _covers(path: str, binds: list[str]) -> bool:
    """True when `path` is, or is a parent of, a bind-mounted directory (so it exists)."""
    p = path.rstrip("/") + "/"
    return any((b.rstrip("/") + "/").startswith(p) for b in binds)


_ETC = (
    "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "nsswitch.conf", "host.conf",
    "passwd", "group", "os-release", "mime.types", "ssl", "alternatives", "protocols", "services", "gai.conf", "fonts", "matplotlibrc",
)  # fmt: skip


def _child_env(cfg: SandboxConfig, python: str) -> dict[str, str]:
    """The only environment a zygote (and so a sandbox) ever sees."""
    venv_bin = os.path.dirname(os.path.abspath(python))
    env = {
        "PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin",
        "HOME": "/sandbox",
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "NUMEXPR_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    if cfg.hash_seed is not None:
        env["PYTHONHASHSEED"] = cfg.hash_seed
    env.update(cfg.extra_env)
    return env


# ------------------------------------------------------------------------------ slots
class _UidBlock:
    """A block of 64 uids locked with flock, so concurrent pools never share a uid."""

    def __init__(self, state: Path, base: int):
        for k in range(1024):
            f = open(state / f"uids-{k}.lock", "a")  # noqa: SIM115 (held for the pool's life)
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            self.file, self.first = f, base + 64 * k
            return
        raise SandboxError(f"no free uid block under {state}; close other pools")

    def close(self) -> None:
        self.file.close()


class _Slot:
    def __init__(self, index: int):
        self.index = index
        self.proc: subprocess.Popen | None = None
        self.unit: dict | None = None
        self.busy = False
        self.runs = 0
        self.sessions: set[str] = set()
        self.info: dict = {}
        self.rss0_kb = -1


_LIVE_POOLS: weakref.WeakSet[SandboxPool] = weakref.WeakSet()


@atexit.register
def _close_all_pools() -> None:
    for pool in list(_LIVE_POOLS):
        with contextlib.suppress(Exception):
            pool.close()


class SandboxPool:
    """N warm zygotes; thread-safe `run()`; see the module docstring."""

    def __init__(self, config: SandboxConfig | None = None, **overrides: Any):
        cfg = config or SandboxConfig()
        if overrides:
            names = {f.name for f in fields(SandboxConfig)}
            bad = sorted(set(overrides) - names)
            if bad:
                raise TypeError(f"unknown SandboxConfig fields {bad}; valid: {sorted(names)}")
            cfg = SandboxConfig(
                **{**{f.name: getattr(cfg, f.name) for f in fields(cfg)}, **overrides}
            )
        self.config = cfg
        self.python = cfg.python or sys.executable
        self._cond = threading.Condition()
        self._closed = False
        self._slots = [_Slot(i) for i in range(cfg.slots or default_slots())]
        self._state = _state_dir()
        self._uids = _UidBlock(self._state, cfg.uid_base) if _is_root() else None
        self._cg_kind = _cgroup_kind(cfg.cgroup)
        self._pool_cg: dict[str, str] = {}
        self._layers: dict[str, bool] = {}
        self._caps: Capabilities | None = None
        _LIVE_POOLS.add(self)
        try:
            self._setup_cgroups()
            for s in self._slots:
                self._launch(s)
            for s in self._slots:
                self._handshake(s)
            self._caps = self._self_check()
            self._enforce_mode()
            for s in self._slots:
                self._configure(s)
        except BaseException:
            self.close()
            raise

    # -- public API ---------------------------------------------------------------------
    @property
    def slots(self) -> int:
        return len(self._slots)

    def capabilities(self) -> Capabilities:
        assert self._caps is not None
        return self._caps

    def uids(self) -> list[int]:
        """Every uid this pool's sandboxes may run as (for host-side checks)."""
        if self._uids is None:
            return []
        return [self._uids.first + i for i in range(64)]

    def zygote_pids(self) -> list[int]:
        return [s.proc.pid for s in self._slots if s.proc is not None]

    def run(
        self, code: str, timeout_s: float | None = None, stdin: bytes | str | None = None
    ) -> SandboxResult:
        """Execute `code` in a fresh sandbox; blocks while every slot is busy. `stdin`
        (for graders: feed test input, compare stdout outside) replaces /dev/null."""
        if not isinstance(code, str):
            raise TypeError(f"code must be str, not {type(code).__name__}")
        if isinstance(stdin, str):
            stdin = stdin.encode()
        if stdin is not None and len(stdin) > self.config.max_stdin_bytes:
            raise ValueError(
                f"stdin is {len(stdin)} bytes; SandboxConfig.max_stdin_bytes is "
                f"{self.config.max_stdin_bytes}"
            )
        rejected = self.check_code(code)
        if rejected:
            return rejected
        slot = self._acquire()
        try:
            return self._request_run(slot, code, timeout_s or self.config.timeout_s, stdin)
        finally:
            self._release(slot)

    def stats(self) -> list[dict]:
        """Ping every zygote: runs served, pid of its warm spare sandbox (C1), session pids."""
        out = []
        for slot in self._slots:
            s = self._acquire(slot)
            try:
                pong = self._call(s, zy.Ping(), 10.0, zy.Pong)
            finally:
                self._release(s)
            out.append(
                {
                    "slot": s.index,
                    "zygote_pid": s.proc.pid if s.proc else None,
                    "runs": pong.runs,
                    "spare_pid": pong.spare_pid,
                    "session_pids": pong.session_pids,
                }
            )
        return out

    def map(self, codes: list[str], timeout_s: float | None = None) -> list[SandboxResult]:
        """Run many snippets concurrently across the slots; results in input order."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=self.slots) as ex:
            return list(ex.map(lambda c: self.run(c, timeout_s), codes))

    def session(self) -> SandboxSession:
        """A stateful sandbox (variables persist across `run` calls) until `close()`."""
        return SandboxSession(self)

    def close(self) -> None:
        """Kill every zygote and sandbox, remove the cgroups, release the uid block."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        for s in self._slots:
            self._stop(s)
        self._remove_cgroups()
        if self._uids is not None:
            self._uids.close()
        _LIVE_POOLS.discard(self)

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- lifecycle ----------------------------------------------------------------------
    def _limits(self, cpu_s: float, cgroup: bool = False) -> dict:
        cfg = self.config
        lim = {
            "cpu_s": int(cpu_s) + 1,
            "as_bytes": cfg.memory_bytes,
            "fsize_bytes": cfg.fsize_bytes,
            "nofile": cfg.nofile,
            # RLIMIT_NPROC counts per uid (per user namespace): safe with a dropped uid or a
            # private user namespace; without both it would count the caller's own processes.
            "nproc": cfg.pids if self._uids is not None or self._layers.get("namespaces") else None,
        }
        if cgroup:
            lim["cgroup"] = {"memory_bytes": cfg.memory_bytes, "pids": cfg.pids}
        return lim

    def _setup_cgroups(self) -> None:
        kind = self._cg_kind
        if kind is None:
            return
        try:
            _sweep_stale_cgroups(kind)
            name = f"pool-{os.getpid()}-{secrets.token_hex(3)}"
            for ctrl, root in _cgroup_roots(kind).items():
                root.mkdir(exist_ok=True)
                if kind == "v2":
                    _enable_v2_controllers(root.parent)
                    _enable_v2_controllers(root)
                d = root / name
                d.mkdir()
                if kind == "v2":
                    _enable_v2_controllers(d)
                self._pool_cg[ctrl] = str(d)
            limits = {"memory_bytes": self.config.memory_bytes, "pids": self.config.pids}
            for s in self._slots:
                s.unit = zy.cgroup_create(kind, self._pool_cg, f"slot{s.index}", limits)
        except OSError as e:
            log.warning("cgroup %s unusable (%s); falling back to rlimits", kind, e)
            self._remove_cgroups()
            self._cg_kind = None

    def _remove_cgroups(self) -> None:
        for s in self._slots:
            zy.cgroup_remove(s.unit)
            s.unit = None
        for ctrl, sub in self._end_session_cgroups("session-*", 2.0):
            zy.cgroup_remove({"kind": self._cg_kind, "dirs": {ctrl: str(sub)}})
        for d in self._pool_cg.values():
            with contextlib.suppress(OSError):
                os.rmdir(d)
        self._pool_cg = {}

    def _end_session_cgroups(self, pattern: str, deadline_s: float) -> list[tuple[str, Path]]:
        """Thaw (a session is frozen between its cells; frozen tasks hold a SIGKILL) and
        then kill what is left in the session cgroups matching `pattern`, in every
        controller; returns the (controller, directory) pairs."""
        found = [(c, sub) for c, d in self._pool_cg.items() for sub in Path(d).glob(pattern)]
        units = [{"kind": self._cg_kind, "dirs": {c: str(sub)}} for c, sub in found]
        for unit in units:
            zy.cgroup_freeze(unit, False, timeout_s=0.2)
        for unit in units:
            zy.cgroup_kill_all(unit, deadline_s)
        return found

    def _zygote_config(self, s: _Slot) -> dict:
        cfg = self.config
        uid = gid = suid = sgid = None
        if self._uids is not None:
            uid = gid = self._uids.first + s.index
            suid = sgid = self._uids.first + 32 + s.index
        hidden = [
            str(Path(__file__).resolve().parents[1]),
            os.path.expanduser("~"),
            *cfg.hidden_paths,
        ]
        interpreter = _bind_paths(self.python)
        binds = interpreter if cfg.minimal_root else []
        return {
            "slot": s.index,
            "uid": uid,
            "gid": gid,
            "session_uid": suid,
            "session_gid": sgid,
            "cgroup_unit": s.unit,
            "cgroup_session_parents": (
                {"kind": self._cg_kind, "parents": self._pool_cg} if self._pool_cg else None
            ),
            "tmpfs": {
                "cwd": cfg.cwd_bytes,
                "tmp": cfg.tmp_bytes,
                "var_tmp": cfg.var_tmp_bytes,
                "shm": cfg.shm_bytes,
            },
            "stage_dir": str(self._state / "root"),
            "child_env": _child_env(cfg, self.python),
            "hidden_paths": [
                h for h in hidden if h not in _ALWAYS_PRESENT and not _covers(h, binds)
            ],
            "allow_loopback": cfg.allow_loopback,
            "binds": binds,
            # a venv under /tmp or /var/tmp: bound back over each sandbox's fresh tmpfs
            "interpreter_dirs": zy.shadowed_by_scratch(interpreter, minimal=True),
            "etc": [f"/etc/{e}" for e in _ETC if os.path.exists(f"/etc/{e}")],
            "preload": list(cfg.preload),
            "session_idle_s": cfg.session_idle_s,
        }

    def _launch(self, s: _Slot) -> None:
        cfg = self.config
        err = open(cfg.zygote_log, "ab") if cfg.zygote_log else subprocess.DEVNULL  # noqa: SIM115
        # The zygote's source comes in on an inherited descriptor, not as a path: its command
        # line (which every sandbox can read in /proc and sys.orig_argv) names no directory.
        src = os.open(zy.__file__, os.O_RDONLY)
        boot = f"exec(compile(open({src}).read(), 'trajlab-sandbox-zygote', 'exec'))"
        try:
            s.proc = self._popen(cfg, [self.python, "-I", "-c", boot], err, src)
        finally:
            os.close(src)
            if err is not subprocess.DEVNULL:
                err.close()
        s.runs = 0
        zy.write_frame(s.proc.stdin.fileno(), self._zygote_config(s))

    def _popen(self, cfg: SandboxConfig, argv: list[str], err: Any, src: int) -> subprocess.Popen:
        return subprocess.Popen(
            argv,
            pass_fds=(src,),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            env=_child_env(cfg, self.python),  # explicit: nothing of ours is inherited
            cwd="/",
            close_fds=True,
            start_new_session=True,  # no terminal signals; killpg reaches it alone
        )

    def _handshake(self, s: _Slot) -> None:
        deadline = time.monotonic() + self.config.startup_timeout_s
        try:
            ready = zy.receive(s.proc.stdout.fileno(), deadline)
        except (TimeoutError, EOFError, ValueError) as e:
            ready = None
            why = str(e)
        else:
            why = "it exited during startup" if ready is None else f"it sent {ready!r} first"
        if not isinstance(ready, zy.Ready):
            raise SandboxError(
                f"sandbox zygote {s.index} did not start ({why}); run "
                f"`{self.python} -I {zy.__file__}` by hand, or set SandboxConfig.zygote_log "
                "to a file to see its error"
            )
        s.info = ready.info
        s.rss0_kb = _rss_kb(s.proc.pid)
        if s.info.get("preload_errors"):
            log.warning("sandbox preload failed: %s", s.info["preload_errors"])

    def _configure(self, s: _Slot) -> None:
        resp = self._call(s, zy.Configure(layers=self._layers), 30.0, zy.Status)
        if resp.status != "ok":
            raise SandboxError(f"zygote {s.index} refused its configuration: {resp.error}")

    def _stop(self, s: _Slot) -> None:
        p = s.proc
        if p is None:
            return
        with contextlib.suppress(OSError):
            zy.send(p.stdin.fileno(), zy.Shutdown())
        for f in (p.stdin, p.stdout):
            with contextlib.suppress(OSError):
                f.close()
        try:
            p.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        zy.cgroup_kill_all(s.unit)
        s.proc = None
        s.sessions.clear()

    def _restart(self, s: _Slot) -> None:
        p = s.proc
        if p is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            self._stop(s)
        self._end_session_cgroups(f"session-{_session_prefix(s)}*", 0.2)  # this slot's only
        self._launch(s)
        self._handshake(s)
        if self._layers:
            self._configure(s)

    # -- self-check ---------------------------------------------------------------------
    def _self_check(self) -> Capabilities:
        s = self._slots[0]
        req = zy.Run(kind="probe", timeout_s=60.0, output_cap=MiB, limits=self._limits(60))
        resp = self._call(s, req, 90.0, zy.Result)
        try:
            import json

            probe = json.loads(base64.b64decode(resp.stdout))
        except ValueError:
            err = base64.b64decode(resp.stderr).decode(errors="replace")
            raise SandboxError(
                "the sandbox self-check produced no report "
                f"(exit {resp.exit_code}, signal {resp.signal}, "
                f"setup error {resp.setup_error!r}, stderr {err[-800:]!r})"
            ) from None
        caps = _assess(probe, self, s)
        self._layers = {
            "uid_drop": caps.holds("uid_drop"),
            "namespaces": probe["steps"].get("namespaces") == "ok"
            and probe["steps"].get("uid_map") == "ok",
            "minimal_root": bool(self.config.minimal_root and probe.get("minimal_root")),
            "cgroup": caps.holds("cgroup"),
            "caps": caps.holds("caps_dropped"),
            "seccomp": caps.holds("seccomp"),
        }
        return caps

    def _enforce_mode(self) -> None:
        caps = self.capabilities()
        missing = caps.missing
        if not missing:
            return
        lines = [f"  - {k}: {caps.layers[k].detail}. Fix: {caps.layers[k].fix}" for k in missing]
        msg = (
            "the Python sandbox refuses untrusted mode: these required layers do not hold\n"
            + "\n".join(lines)
            + "\nPass SandboxConfig(allow_insecure=True) (PythonToolConfig(allow_insecure=True)) "
            "to run model code with reduced isolation anyway."
        )
        if not self.config.allow_insecure:
            raise SandboxUnavailable(msg)
        log.warning("%s\n(continuing: allow_insecure=True)", msg)
        if not caps.holds("interpreter_usable"):
            log.warning("sandbox: %s", caps.layers["interpreter_usable"].fix)

    # -- requests -----------------------------------------------------------------------
    def check_code(self, code: str) -> SandboxResult | None:
        """The error result for code over max_code_bytes, else None."""
        n = len(code.encode("utf-8", errors="surrogatepass"))
        if n > self.config.max_code_bytes:
            msg = f"code is {n} bytes; the limit is {self.config.max_code_bytes} bytes"
            return SandboxResult(status="error", stderr=msg, error=msg)
        return None

    def _acquire(self, want: _Slot | None = None) -> _Slot:
        with self._cond:
            while True:
                if self._closed:
                    raise SandboxError("the sandbox pool is closed")
                for s in [want] if want is not None else self._slots:
                    if not s.busy:
                        s.busy = True
                        return s
                self._cond.wait()

    def _release(self, s: _Slot) -> None:
        with self._cond:
            s.busy = False
            self._cond.notify_all()

    def _call(self, s: _Slot, req: zy.Message, wait_s: float, reply: type[M]) -> M:
        """One request and its `reply` with the slot's zygote; a dead or wedged zygote
        (or one that answers with a malformed message) is restarted and SandboxError raised."""
        if s.proc is None:
            raise SandboxError("the sandbox pool is closed")
        req.nonce = secrets.token_hex(16)
        try:
            zy.send(s.proc.stdin.fileno(), req)
            resp = zy.receive(s.proc.stdout.fileno(), time.monotonic() + wait_s)
        except (OSError, TimeoutError, EOFError, ValueError) as e:
            resp, why = None, f"{type(e).__name__}: {e}"
        else:
            why = "it exited"
        if resp is None or resp.nonce != req.nonce:
            if resp is not None:
                why = "its answer did not carry the request's nonce"
            self._restart_quietly(s)
            raise SandboxError(f"sandbox zygote {s.index} failed ({why}); it was restarted")
        if isinstance(resp, zy.Status) and resp.status in ("zygote_error", "bad_op"):
            raise SandboxError(f"sandbox zygote {s.index}: {resp.error}")
        if not isinstance(resp, reply):
            raise SandboxError(f"sandbox zygote {s.index} answered {req.op!r} with {resp!r}")
        return resp

    def _restart_quietly(self, s: _Slot) -> None:
        try:
            self._restart(s)
        except Exception as e:  # the next call will raise again with its own message
            log.error("restarting sandbox zygote %d failed: %r", s.index, e)

    def _request_run(
        self, s: _Slot, code: str, timeout_s: float, stdin: bytes | None = None
    ) -> SandboxResult:
        if not s.sessions and (
            s.runs >= self.config.recycle_after_runs or (s.runs % 200 == 199 and self._bloated(s))
        ):
            self._restart(s)
        req = zy.Run(
            code=code,
            stdin=base64.b64encode(stdin).decode() if stdin else None,
            timeout_s=timeout_s,
            output_cap=self.config.output_cap_bytes,
            limits=self._limits(timeout_s),
        )
        resp = self._call(s, req, timeout_s + 15.0, zy.Result)
        s.runs += 1
        return _to_result(resp)

    # -- sessions (SandboxSession's whole view of the pool) -------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def open_session(self) -> tuple[_Slot, str]:
        """Start a session process on the slot with the fewest; returns (slot, session id)."""
        with self._cond:
            slot = min(self._slots, key=lambda s: len(s.sessions))
        s = self._acquire(slot)
        try:
            sid = _session_prefix(s) + secrets.token_hex(8)  # names its cgroup too
            req = zy.SessionOpen(
                sid=sid,
                limits=self._limits(self.config.session_cpu_s, cgroup=True),
                max_sessions=self.config.max_sessions_per_slot,
            )
            resp = self._call(s, req, 30.0, zy.Status)
            if resp.status != "ok":
                raise SandboxError(
                    f"could not open a sandbox session: {resp.error}; close unused "
                    "sessions or raise SandboxConfig.max_sessions_per_slot"
                )
            s.sessions.add(sid)
            return s, sid
        finally:
            self._release(s)

    def session_alive(self, slot: _Slot | None, sid: str) -> bool:
        """False once the session ended, expired or its zygote was restarted."""
        return slot is not None and sid in slot.sessions

    def session_run(self, slot: _Slot, sid: str, code: str, timeout_s: float) -> zy.Result:
        """One cell in a live session. A cell that ended the session (session_reset) or
        found it gone (killed_for "gone") leaves it forgotten here."""
        s = self._acquire(slot)
        try:
            req = zy.SessionRun(
                sid=sid, code=code, timeout_s=timeout_s, output_cap=self.config.output_cap_bytes
            )
            resp = self._call(s, req, timeout_s + 15.0, zy.Result)
        finally:
            self._release(s)
        if resp.session_reset or resp.killed_for == "gone":
            slot.sessions.discard(sid)
        return resp

    def close_session(self, slot: _Slot, sid: str) -> None:
        """End a live session (nothing to do for one already gone or a closed pool)."""
        if self._closed or sid not in slot.sessions:
            return
        slot.sessions.discard(sid)
        s = self._acquire(slot)
        try:
            self._call(s, zy.SessionClose(sid=sid), 10.0, zy.Status)
        finally:
            self._release(s)

    def _bloated(self, s: _Slot) -> bool:
        """True when the zygote's RSS doubled (plus 64 MiB) since it started."""
        rss = _rss_kb(s.proc.pid) if s.proc else -1
        return s.rss0_kb > 0 and rss > 2 * s.rss0_kb + 65536


def _session_prefix(s: _Slot) -> str:
    return f"s{s.index}-"


def _rss_kb(pid: int) -> int:
    kib = status_kib("VmRSS", pid)
    return -1 if kib is None else kib


class SandboxSession:
    """A long-lived sandbox process whose variables persist between `run` calls. Every
    cell still gets the wall-clock timeout and the output cap; a cell that times out,
    overflows or crashes ends the session, which restarts empty on the next call
    (`SandboxResult.session_reset` says so)."""

    def __init__(self, pool: SandboxPool):
        self.pool = pool
        self._closed = False
        self._reset_reported = False
        self.slot, self.sid = pool.open_session()

    def run(self, code: str, timeout_s: float | None = None) -> SandboxResult:
        if self._closed:
            raise SandboxError("this sandbox session is closed")
        rejected = self.pool.check_code(code)
        if rejected:
            return rejected
        reset = False
        if not self.pool.session_alive(self.slot, self.sid):
            # The previous cell ended the session (already reported), the idle timer
            # expired it or its zygote was restarted (not reported yet): start afresh.
            reset = not self._reset_reported
            self.slot, self.sid = self.pool.open_session()
        t = timeout_s or self.pool.config.timeout_s
        resp = self.pool.session_run(self.slot, self.sid, code, t)
        if resp.killed_for == "gone":  # expired while idle: rerun in a fresh one
            self._reset_reported = False
            return self.run(code, timeout_s)
        res = _to_result(resp)
        res.session_reset = resp.session_reset or reset
        self._reset_reported = res.session_reset
        return res

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.pool.close_session(self.slot, self.sid)

    def __enter__(self) -> SandboxSession:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ------------------------------------------------------------------------------ results
def _to_result(resp: zy.Result) -> SandboxResult:
    if resp.setup_error:
        raise SandboxError(
            f"a sandbox layer that passed the self-check failed: {resp.setup_error}; "
            "restart the pool (capabilities() may have changed) or report a bug"
        )
    out = base64.b64decode(resp.stdout).decode("utf-8", errors="replace")
    err = base64.b64decode(resp.stderr).decode("utf-8", errors="replace")
    code, sig, why = resp.exit_code, resp.signal, resp.killed_for
    r = SandboxResult(
        status="ok",
        stdout=out,
        stderr=err,
        exit_code=code,
        signal=sig,
        latency_s=float(resp.latency_s),
    )
    last = next((ln for ln in reversed(err.splitlines()) if ln.strip()), "")
    if why == "timeout":
        r.status, r.error = "timeout", "wall-clock timeout: the process tree was killed"
    elif why == "output_limit":
        r.status, r.truncated = "output_limit", True
        r.error = "output exceeded the capture cap: the process tree was killed"
    elif why in ("crashed", "gone"):
        r.status, r.error = "crashed", "the session process ended unexpectedly"
    elif resp.oom_kill:
        r.status, r.error = "memory", "killed by the memory limit (cgroup OOM)"
    elif sig is not None:
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        r.status, r.error = "crashed", f"killed by signal {name}"
    elif code not in (0, None):
        if last.startswith("MemoryError"):
            r.status, r.error = "memory", "MemoryError (memory limit)"
        else:
            r.status, r.error = "error", last or f"exit code {code}"
    return r


@dataclass
class _Probe:
    """What one layer check reads: the probe's report, the pool, the probed slot and the
    verdicts of the layers checked before it."""

    p: dict
    pool: SandboxPool
    slot: _Slot
    layers: dict[str, Layer]

    @property
    def steps(self) -> dict:
        return self.p.get("steps", {})

    @property
    def cfg(self) -> SandboxConfig:
        return self.pool.config

    @property
    def namespaces_ok(self) -> bool:
        return self.steps.get("namespaces") == "ok" and self.steps.get("uid_map") == "ok"

    def step(self, name: str, detail: str, fix: str) -> Layer:
        """A layer that holds when the sandbox's setup step `name` reported ok."""
        return Layer(self.steps.get(name) == "ok", f"{detail}: {self.steps.get(name)}", fix)


_NEEDS_USERNS = "needs user namespaces"


def _check_uid_drop(x: _Probe) -> Layer:
    uids = x.pool._uids
    expected = uids.first + x.slot.index if uids else None
    ok = expected is not None and x.p["resuid"] == [expected] * 3 and expected != 0
    why = "" if ok else f" (uid_drop step: {x.steps.get('uid_drop', 'not root')})"
    return Layer(
        ok,
        f"runs as uid {x.p['resuid'][0]}{why}",
        "run trajlab as root (or with CAP_SETUID/CAP_SETGID, e.g. docker --cap-add SETUID "
        "--cap-add SETGID) so every slot gets its own unprivileged uid",
    )


def _check_user_namespace(x: _Probe) -> Layer:
    st = x.steps
    return Layer(
        x.namespaces_ok,
        "user+mount+pid+net+ipc+uts namespaces"
        if x.namespaces_ok
        else f"unshare: {st.get('namespaces')}; uid_map: {st.get('uid_map')}",
        "enable user namespaces (sysctl user.max_user_namespaces=15000, "
        "kernel.unprivileged_userns_clone=1, or docker --security-opt seccomp=unconfined)",
    )


def _check_pid_namespace(x: _Probe) -> Layer:
    pids = x.p["visible_pids"]
    ok = x.namespaces_ok and x.p["pid"] == 1 and len(pids) <= 3
    return Layer(
        ok, f"pid {x.p['pid']}, sees pids {pids[:8]}", f"{_NEEDS_USERNS} (see user_namespace)"
    )


def _check_net_namespace(x: _Probe) -> Layer:
    ifaces = x.p.get("net_ifaces")
    return Layer(ifaces == ["lo"], f"interfaces: {ifaces}", _NEEDS_USERNS)


def _check_seccomp(x: _Probe) -> Layer:
    err = x.slot.info.get("seccomp_error")
    return Layer(
        x.p.get("seccomp_mode") == "2",
        f"Seccomp mode {x.p.get('seccomp_mode')}" + (f"; {err}" if err else ""),
        "install libseccomp2 (apt-get install libseccomp2) and `pip install pyseccomp`",
    )


def _check_socket_filter(x: _Probe) -> Layer:
    inet = x.p.get("inet_socket", "")
    ok = inet.startswith("blocked") or (x.cfg.allow_loopback and x.layers["seccomp"].ok)
    return Layer(ok, f"AF_INET socket: {inet}", "needs the seccomp layer")


def _check_network_blocked(x: _Probe) -> Layer:
    netns = x.layers["net_namespace"].ok
    filtered = x.layers["seccomp_socket_filter"].ok and not x.cfg.allow_loopback
    return Layer(
        netns or filtered,
        "private network namespace" if netns else f"socket filter only ({x.p.get('inet_socket')})",
        "enable user namespaces, or install libseccomp2 + pyseccomp for the socket filter",
    )


def _check_env(x: _Probe) -> Layer:
    allowed = set(_child_env(x.cfg, x.pool.python)) | {"HOME", "PWD", "TMPDIR"}
    seen = set(x.p["env_keys"]) | set(x.p.get("proc_environ_keys") or [])
    leaked = sorted(seen - allowed)
    return Layer(
        not leaked and isinstance(x.p.get("proc_environ_keys"), list),
        "only whitelisted variables" if not leaked else f"unexpected variables {leaked}",
        "the zygote must be started with SandboxPool (explicit env); report a bug",
    )


def _check_tmpfs(x: _Probe) -> Layer:
    p = x.p
    rebound = f"; bound back read-only: {p['rebound']}" if p.get("rebound") else ""
    return Layer(
        x.steps.get("tmpfs") == "ok",
        f"cwd {p.get('cwd')} ({p.get('cwd_bytes', -1) >> 20} MiB tmpfs), /tmp, /var/tmp, "
        f"/dev/shm{rebound}",
        "needs a mount namespace",
    )


def _check_minimal_root(x: _Probe) -> Layer:
    used, visible = bool(x.p.get("minimal_root")), x.p.get("hidden_paths_visible", [])
    detail = (
        "read-only root: /usr, the interpreter prefix, /etc essentials"
        if used
        else f"not used ({x.steps.get('minimal_root', 'disabled')})"
    )
    return Layer(
        used and not visible,
        detail + (f"; VISIBLE: {visible}" if visible else ""),
        "needs a mount namespace and pivot_root; keep the venv outside secret directories",
    )


def _check_cgroup(x: _Probe) -> Layer:
    s, cfg, kind = x.slot, x.cfg, x.pool._cg_kind
    inside, slot = x.p.get("cgroup", ""), f"slot{s.index}"
    # Inside a cgroup namespace the sandbox sees its cgroup as the root ("0::/" on v2, "N:ctrl:/"
    # on v1); the namespace was made by a child of the zygote, which joined the slot's cgroup.
    at_ns_root = bool(inside) and all(ln.endswith(":/") for ln in inside.splitlines() if ln)
    member = slot in inside or (at_ns_root and slot in s.info.get("cgroup", ""))
    ok = bool(s.unit) and "cgroup_error" not in s.info and member
    err = f" ({s.info['cgroup_error']})" if s.info.get("cgroup_error") else ""
    return Layer(
        ok,
        f"{kind} memory {cfg.memory_bytes >> 20} MiB, pids {cfg.pids}"
        if ok
        else "not available: RLIMIT_AS/NPROC only",
        f"run as root with a writable cgroup v1 memory+pids or v2 hierarchy{err}",
    )


def _check_caps(x: _Probe) -> Layer:
    eff, bnd = x.p.get("cap_eff", "x"), x.p.get("cap_bnd", "x")
    ok = eff.strip("0") == "" and bnd.strip("0") == ""
    return Layer(ok, f"CapEff {eff} CapBnd {bnd}", "report a bug")


def _check_interpreter(x: _Probe) -> Layer:
    p, rebind = x.p, x.p.get("rebind_errors")
    return Layer(
        bool(p.get("executable_ok")) and p.get("interpreter_exec") == "ok",
        f"{p.get('executable')}: {p.get('interpreter_exec')}"
        + (f"; not bound back over the scratch tmpfs: {rebind}" if rebind else ""),
        f"the sandbox uid cannot execute {x.pool.python} or read its prefix: create the venv "
        "from a system-wide interpreter (/usr/bin/python3 -m venv /opt/trajlab-venv) or "
        "make each parent directory o+rx (a mode-0700 parent such as /root or a mktemp "
        "directory blocks it; the minimal root works around that)",
    )


def _check_site_packages(x: _Probe) -> Layer:
    writable = x.p.get("writable_sys_path", [])
    return Layer(
        not writable,
        "sys.path not writable" if not writable else f"WRITABLE by the sandbox: {writable}",
        f"make {writable} owned by root and not group/world-writable (chmod -R go-w); "
        "a writable site-packages lets a .pth file run in every later Python process",
    )


def _check_landlock(x: _Probe) -> Layer:
    abi = int(x.slot.info.get("landlock_abi", 0))
    return Layer(abi > 0, f"ABI {abi} present (reported, not used)", "optional")


# Layer name -> its check, in report order (a check may read the verdicts above it).
_LAYER_CHECKS: dict[str, Any] = {
    "process_per_run": lambda x: Layer(True, "each run is forked from a clean zygote"),
    "outside_timeout": lambda x: Layer(
        True, "zygote deadline, SIGKILL of the process group and cgroup"
    ),
    "uid_drop": _check_uid_drop,
    "user_namespace": _check_user_namespace,
    "pid_namespace": _check_pid_namespace,
    "net_namespace": _check_net_namespace,
    "seccomp": _check_seccomp,
    "seccomp_socket_filter": _check_socket_filter,
    "network_blocked": _check_network_blocked,
    "env_scrubbed": _check_env,
    "mount_namespace": lambda x: x.step("private_mounts", "private mounts", _NEEDS_USERNS),
    "private_proc": lambda x: x.step(
        "private_proc", "fresh procfs", "needs user+pid namespaces and a fully visible host /proc"
    ),
    "tmpfs_scratch": _check_tmpfs,
    "minimal_root": _check_minimal_root,
    "cgroup": _check_cgroup,
    "rlimits": lambda x: Layer(
        x.steps.get("rlimits") == "ok", f"{x.p.get('rlimits')}", "report a bug"
    ),
    "caps_dropped": _check_caps,
    "no_new_privs": lambda x: Layer(
        x.p.get("no_new_privs") == "1", f"NoNewPrivs {x.p.get('no_new_privs')}", "report a bug"
    ),
    "interpreter_usable": _check_interpreter,
    "site_packages_readonly": _check_site_packages,
    "landlock": _check_landlock,
}


def _assess(p: dict, pool: SandboxPool, s: _Slot) -> Capabilities:
    """Turn the probe's raw observations into layer verdicts with fixes."""
    probe = _Probe(p, pool, s, {})
    for name, check in _LAYER_CHECKS.items():
        probe.layers[name] = check(probe)
    info = {
        "uid_range": pool.uids()[:1] + pool.uids()[-1:],
        "cgroup": pool._cg_kind,
        "preloaded": s.info.get("preloaded"),
        "seccomp_skipped": s.info.get("seccomp_skipped"),
        "steps": probe.steps,
        "mode": "untrusted" if not pool.config.allow_insecure else "insecure-allowed",
    }
    return Capabilities(probe.layers, info)


def capabilities(config: SandboxConfig | None = None) -> Capabilities:
    """Probe which sandbox layers hold on this machine (starts and stops a 1-slot pool)."""
    cfg = config or SandboxConfig()
    probe_cfg = SandboxConfig(
        **{
            **{f.name: getattr(cfg, f.name) for f in fields(cfg)},
            "slots": 1,
            "allow_insecure": True,
        }
    )
    with SandboxPool(probe_cfg) as pool:
        return pool.capabilities()
