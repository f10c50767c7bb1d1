"""Torch CPU threads that follow the machine's load: fast when the machine is idle, a fair
share of it when something else is busy.

    governor = ThreadGovernor(configured=cfg.threads)   # 0: adapt to the load
    governor.adjust()                                     # before each batch or step

torch's OpenMP workers spin at every parallel region's barrier. On a laptop with 2 cores,
one other busy process takes a core from one of trajlab's two threads and the other thread
spins waiting for it: decoding dropped to 27 % of its idle speed and a training step to
21 %, where this governor keeps 71 % and 58 % (benchmarks/bench_contention.py, docs/
performance.md section 6). Passive waiting (OMP_WAIT_POLICY=PASSIVE) fixes contention too
but costs 30-40 % when idle, so the default keeps torch's active waiting and uses one
thread per core that no other process is using: `threads = cores - busy`, at least 1,
measured from /proc/stat (all CPU time) minus this process's own time since the previous
check (so the check costs no sleep after the first one). A configured thread count is
used as it is.

What it does not do: pin threads to cores, or change OpenMP's wait policy.
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger(__name__)

HELP = (
    "torch CPU threads; 0: one per core no other process is using, re-checked as the load changes"
)
RECHECK_S = 5.0  # how often adjust() looks at the load again
OVERSUBSCRIBED = 0.7  # another process using this much of a core counts as busy


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cpu_ticks() -> tuple[int, int]:
    """(busy ticks of the whole machine, ticks of this process and its waited children)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    with open("/proc/self/stat") as f:
        own = f.read().rsplit(")", 1)[1].split()
    return sum(fields[:8]) - idle, int(own[11]) + int(own[12])


class ThreadGovernor:
    """Sets torch's intra-op threads to the cores other processes leave free."""

    def __init__(self, configured: int = 0, recheck_s: float = RECHECK_S) -> None:
        self.configured = configured
        self.recheck_s = recheck_s
        self.cores = usable_cores()
        self.threads = 0
        self.other_busy = 0.0
        self._last: tuple[float, int, int] | None = None
        self._warned = False

    def adjust(self, force: bool = False) -> int:
        """Re-check the load (at most every `recheck_s`) and set torch's threads; returns
        the thread count in use."""
        import torch

        if self.configured > 0:
            if self.threads != self.configured:
                torch.set_num_threads(self.configured)
                self.threads = self.configured
            return self.threads
        now = time.monotonic()
        if self._last is None:
            self._sample(now)
            time.sleep(0.2)  # the first reading needs a window
        elif not force and now - self._last[0] < self.recheck_s:
            return self.threads
        self.other_busy = self._sample(time.monotonic())
        want = max(1, self.cores - int(self.other_busy + (1 - OVERSUBSCRIBED)))
        if want != self.threads:
            torch.set_num_threads(want)
            if self.threads:
                log.info(
                    "torch threads %d -> %d (%.1f cores busy elsewhere)",
                    self.threads,
                    want,
                    self.other_busy,
                )
            self.threads = want
        if self.other_busy >= OVERSUBSCRIBED and not self._warned:
            self._warned = True
            log.warning(
                "the machine is busy: other processes use %.1f of %d cores, so trajlab runs "
                "%d torch thread(s) and will be slower than on an idle machine (set "
                "threads=N to fix the count)",
                self.other_busy, self.cores, want,
            )  # fmt: skip
        return self.threads

    def _sample(self, now: float) -> float:
        """Cores used by other processes since the previous sample."""
        try:
            busy, own = _cpu_ticks()
        except (OSError, ValueError, IndexError):
            return 0.0
        prev, self._last = self._last, (now, busy, own)
        if prev is None or now <= prev[0]:
            return 0.0
        tick = os.sysconf("SC_CLK_TCK")
        other = (busy - prev[1]) - (own - prev[2])
        return max(0.0, other / tick / (now - prev[0]))
