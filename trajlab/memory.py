"""Give memory back between the stages of a long job (the demo: eval, SFT, eval, RL, eval).

    from trajlab.memory import peak_rss, release_memory, trim_heap
    release_memory()   # after a stage's model, optimizer and engine went out of scope
    trim_heap()        # after a large transient allocation (a micro-batch, a KV cache)
    with peak_rss(memory, "update"):   # memory["update"]: this process's peak in GiB
        ...

Why: a stage's model, optimizer and engine reference each other (schedulers, hooks,
engines holding loops holding engines), so when the stage returns they are cyclic garbage
that Python frees only when its cycle collector happens to run; until then the next stage
stacks its own 1-3 GB on top. And glibc keeps freed heap pages mapped unless asked to trim.
release_memory() runs the collector and then malloc_trim(0), so the next stage starts from
what is really alive (docs/performance.md, section Memory, has what it does and does not
recover in the demo).

What it does not do: free anything still referenced, or trim on non-glibc systems
(malloc_trim is skipped where libc lacks it). Fixing glibc's mmap threshold for the whole
process was tried on the demo and not kept: a few percent lower peak for a slower run.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
from collections.abc import Iterator

GIB = float(2**30)


@functools.lru_cache(maxsize=1)
def _libc():
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def release_memory() -> None:
    """Collect reference cycles, then return freed heap pages to the OS (glibc only)."""
    gc.collect()
    trim_heap()


def trim_heap() -> None:
    """Return the heap's free pages to the OS (glibc's malloc_trim; a no-op elsewhere).

    Cheap enough to call after every large transient allocation (a micro-batch's
    activations, a generate call's KV cache): glibc keeps pages it once handed out
    resident after they are freed, so without it the next phase's allocations land on
    other pages and the freed ones still count in the process's memory."""
    with contextlib.suppress(OSError, AttributeError):
        _libc().malloc_trim(0)


@contextlib.contextmanager
def peak_rss(into: dict[str, float], key: str) -> Iterator[None]:
    """Record in `into[key]` the most memory (GiB, resident set) this process held during
    the block: the kernel's high-water mark (VmHWM), reset when the block starts. Linux
    only; elsewhere, or where /proc cannot be written, nothing is recorded. Other
    processes (the sandbox) are not counted: benchmarks/bench_memory.py measures a whole
    process tree."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # 5: reset the peak resident set to the current one
        reset = True
    except OSError:
        reset = False
    try:
        yield
    finally:
        kib = status_kib("VmHWM") if reset else None
        if kib is not None:
            into[key] = kib * 1024 / GIB


def status_kib(field: str, pid: int | str = "self") -> int | None:
    """A kB field of /proc/<pid>/status (VmRSS, VmHWM, ...); None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None
