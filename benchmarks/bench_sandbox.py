"""Throughput and latency of the Python sandbox with every isolation layer on.

    .venv/bin/python benchmarks/bench_sandbox.py                 # as root: every layer holds
    .venv/bin/python benchmarks/bench_sandbox.py --n 600 --repeat 5 --slots 2

Scenarios, all with the default SandboxConfig (numpy and sympy preloaded):
  * sequential print(1): one call at a time, the host waits for each result;
  * concurrent print(1): `slots` client threads keep every slot busy; executions per
    second across the pool and the latency of each call (run `--repeat` times, one row
    each, because other work on the machine makes single runs noisy);
  * paced print(1): one call every 50 ms, so each slot's warm spare is ready when the
    code arrives (what an agent loop sees between generation steps);
  * sequential sympy solve (no target; sympy is preloaded in the zygote).

Columns: exec/s (calls / wall time), p50 and p99 of the call's round trip in the host
(`pool.run` in, result out), CPU ms/exec = user+sys of the zygotes and every sandbox they
reaped plus the benchmark process itself (its client threads and the pool's framing),
divided by the calls; the split "sandbox + host" follows in brackets. Kernel work done in
worker threads (network-namespace teardown) is not counted. The load average (1 min) at
the end of each scenario is printed with it: the machine is shared, so compare CPU per
execution first, throughput second.

Targets (issue 6, target 3): >= 200 executions per second across the pool with every
layer on, and p99 latency of print(1) <= 50 ms.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trajlab.tools.sandbox import SandboxConfig, SandboxPool  # noqa: E402

TARGET_RATE = 200.0  # executions per second across the pool
TARGET_P99_MS = 50.0  # p99 latency of print(1)
SYMPY = "import sympy\nx = sympy.Symbol('x')\nprint(sympy.solve(x**2 - 5*x + 6, x))"


@dataclass
class Row:
    name: str
    rate: float | None  # exec/s; None for paced scenarios
    lat_ms: list[float]
    sandbox_cpu_ms: float  # per execution
    host_cpu_ms: float  # per execution
    load1: float
    rate_target: bool = False  # is exec/s held against TARGET_RATE
    p99_target: bool = False  # is p99 held against TARGET_P99_MS

    def met(self) -> str:
        checks = []
        if self.rate_target:
            checks.append(self.rate is not None and self.rate >= TARGET_RATE)
        if self.p99_target:
            checks.append(pct(self.lat_ms, 99) <= TARGET_P99_MS)
        return "-" if not checks else ("yes" if all(checks) else "NO")

    def target(self) -> str:
        parts = []
        if self.rate_target:
            parts.append(f">={TARGET_RATE:.0f}/s")
        if self.p99_target:
            parts.append(f"p99<={TARGET_P99_MS:.0f}")
        return " ".join(parts) or "-"


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def sandbox_cpu_ms(pool: SandboxPool) -> float:
    """CPU time of the zygotes and their children that live on (each zygote's fork
    template, which forks and reaps the sandboxes), plus every sandbox they reaped
    (user+sys, ms)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for zygote in pool.zygote_pids():
        for pid in (zygote, *_children(zygote)):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue  # a sandbox that ended meanwhile: its parent has counted it
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total * 1000 / tick


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def host_cpu_ms() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return (r.ru_utime + r.ru_stime) * 1000


def timed(pool: SandboxPool, code: str) -> float:
    t = time.perf_counter()
    r = pool.run(code)
    if not r.ok:
        raise SystemExit(f"benchmark snippet failed: {r.status} {r.stderr[-300:]}")
    return (time.perf_counter() - t) * 1000


def measure(pool: SandboxPool, name: str, calls, n: int, **targets) -> Row:
    """Run `calls()` (returns latencies in ms) and account wall and CPU time to it."""
    s0, h0, t0 = sandbox_cpu_ms(pool), host_cpu_ms(), time.perf_counter()
    lat, paced = calls()
    wall = time.perf_counter() - t0
    sb, host = (sandbox_cpu_ms(pool) - s0) / n, (host_cpu_ms() - h0) / n
    rate = None if paced else n / wall
    return Row(name, rate, lat, sb, host, os.getloadavg()[0], **targets)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=400, help="calls per scenario")
    ap.add_argument("--repeat", type=int, default=3, help="runs of the concurrent scenario")
    ap.add_argument(
        "--slots", type=int, default=0, help="zygotes (0 = the pool default, 2 per core)"
    )
    ap.add_argument("--preload", default="numpy,sympy", help="modules preloaded in the zygotes")
    ap.add_argument("--quick", action="store_true", help="only the concurrent print(1) scenario")
    args = ap.parse_args()

    t0 = time.perf_counter()
    preload = tuple(m for m in args.preload.split(",") if m)
    pool = SandboxPool(SandboxConfig(slots=args.slots, preload=preload))
    startup = time.perf_counter() - t0
    caps = pool.capabilities()
    held = [k for k, v in caps.layers.items() if v.ok]
    missing = [k for k, v in caps.layers.items() if not v.ok and k != "landlock"]
    rows: list[Row] = []
    n = args.n
    try:
        for _ in range(20):  # warm up every slot and its spare
            timed(pool, "print(1)")
        if not args.quick:
            rows.append(
                measure(
                    pool,
                    "sequential print(1)",
                    lambda: ([timed(pool, "print(1)") for _ in range(n)], False),
                    n,
                    p99_target=True,
                )
            )
        with ThreadPoolExecutor(pool.slots) as ex:
            for i in range(args.repeat):
                rows.append(
                    measure(
                        pool,
                        f"concurrent x{pool.slots} print(1) #{i + 1}",
                        lambda: (list(ex.map(lambda _: timed(pool, "print(1)"), range(n))), False),
                        n,
                        rate_target=True,
                        p99_target=True,
                    )
                )
        if not args.quick:
            m = min(n, 100)

            def paced() -> tuple[list[float], bool]:
                out = []
                for _ in range(m):
                    time.sleep(0.05)
                    out.append(timed(pool, "print(1)"))
                return out, True

            rows.append(measure(pool, "paced 50 ms print(1)", paced, m, p99_target=True))
            rows.append(
                measure(
                    pool,
                    "sequential sympy solve",
                    lambda: ([timed(pool, SYMPY) for _ in range(30)], False),
                    30,
                )
            )
    finally:
        pool.close()
    report(pool, startup, held, missing, rows)


def report(pool, startup, held, missing, rows: list[Row]) -> None:
    load = os.getloadavg()
    print(
        f"\nsandbox benchmark: {pool.slots} slots, {os.cpu_count()} CPU cores, load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1/5/15 min), pool startup {startup:.2f} s"
    )
    print(f"layers holding ({len(held)}): {', '.join(held)}")
    if missing:
        print(f"layers NOT holding: {', '.join(missing)} (run as root for every layer)")
    head = (
        f"| {'scenario':28} | {'exec/s':>7} | {'p50 ms':>7} | {'p99 ms':>7} | "
        f"{'CPU ms/exec (sandbox + host)':>28} | {'target':>17} | {'met':>3} | {'load':>5} |"
    )
    print("\n" + head)
    widths = [30, 9, 9, 9, 30, 19, 5, 7]
    print("|" + "|".join("-" * w for w in widths) + "|")
    for r in rows:
        rate = "-" if r.rate is None else f"{r.rate:7.1f}"
        cpu = f"{r.sandbox_cpu_ms + r.host_cpu_ms:5.1f} ({r.sandbox_cpu_ms:.1f} + {r.host_cpu_ms:.1f})"
        print(
            f"| {r.name:28} | {rate:>7} | {pct(r.lat_ms, 50):7.1f} | {pct(r.lat_ms, 99):7.1f} | "
            f"{cpu:>28} | {r.target():>17} | {r.met():>3} | {r.load1:5.2f} |"
        )
    conc = [r for r in rows if r.rate_target]
    if conc:
        cpu = statistics.median(r.sandbox_cpu_ms + r.host_cpu_ms for r in conc)
        cores = os.cpu_count() or 1
        print(
            f"\nmedian CPU per concurrent print(1): {cpu:.1f} ms, so {cores} otherwise idle cores "
            f"allow about {1000 * cores / cpu:.0f} exec/s (kernel worker threads not counted)"
        )
    print(
        f"targets (issue 6, target 3): >= {TARGET_RATE:.0f} exec/s across the pool, "
        f"p99 of print(1) <= {TARGET_P99_MS:.0f} ms"
    )


if __name__ == "__main__":
    main()
