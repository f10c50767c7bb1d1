"""Throughput and latency of the Python sandbox with every layer on.

    sudo .venv/bin/python benchmarks/bench_sandbox.py            # defaults: slots = CPU count
    .venv/bin/python benchmarks/bench_sandbox.py --n 400 --slots 2

Measures, for `print(1)`:
  * sequential: one call at a time (the host waits for each result), p50/p99 round trip;
  * concurrent: `slots` client threads keeping every slot busy, executions per second
    across the pool and p50/p99 per call;
  * paced: one call every 50 ms, so each slot's warm spare sandbox is ready when the
    code arrives (the latency an agent loop sees between generation steps);
and p50 for a sympy snippet (sympy is preloaded in the zygote).

Targets (issue 6): >= 200 exec/s across the pool and p99 <= 50 ms. Numbers depend
heavily on machine load: the load average is printed with the table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trajlab.tools.sandbox import SandboxConfig, SandboxPool  # noqa: E402


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def cpu_ms(pool: SandboxPool) -> float:
    """CPU time of the zygotes plus every sandbox they reaped (user+sys, ms)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pool.zygote_pids():
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total * 1000 / tick


def timed(pool: SandboxPool, code: str) -> float:
    t = time.perf_counter()
    r = pool.run(code)
    if not r.ok:
        raise SystemExit(f"benchmark snippet failed: {r.status} {r.stderr[-300:]}")
    return (time.perf_counter() - t) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=300, help="calls per scenario")
    ap.add_argument("--slots", type=int, default=0, help="zygotes (0 = CPU count)")
    ap.add_argument("--preload", default="numpy,sympy", help="modules preloaded in the zygotes")
    ap.add_argument("--quick", action="store_true", help="only the concurrent print(1) scenario")
    args = ap.parse_args()

    t0 = time.perf_counter()
    preload = tuple(m for m in args.preload.split(",") if m)
    pool = SandboxPool(SandboxConfig(slots=args.slots, preload=preload))
    startup = time.perf_counter() - t0
    caps = pool.capabilities()
    held = [k for k, v in caps.layers.items() if v.ok]
    rows = []
    try:
        for _ in range(20):  # warm up every slot and its spare
            timed(pool, "print(1)")

        if not args.quick:
            seq = [timed(pool, "print(1)") for _ in range(args.n)]
            rows.append(("sequential print(1)", 1000 / statistics.mean(seq), seq))

        with ThreadPoolExecutor(pool.slots) as ex:
            c0 = cpu_ms(pool)
            t = time.perf_counter()
            conc = list(ex.map(lambda _: timed(pool, "print(1)"), range(args.n)))
            wall = time.perf_counter() - t
            per_exec_cpu = (cpu_ms(pool) - c0) / args.n
        rows.append((f"concurrent x{pool.slots} print(1)", args.n / wall, conc))

        if args.quick:
            return report(pool, startup, held, rows, per_exec_cpu)
        paced = []
        for _ in range(min(args.n, 100)):
            time.sleep(0.05)
            paced.append(timed(pool, "print(1)"))
        rows.append(("paced (warm spare) print(1)", float("nan"), paced))

        code = "import sympy\nx = sympy.Symbol('x')\nprint(sympy.solve(x**2 - 5*x + 6, x))"
        sym = [timed(pool, code) for _ in range(20)]
        rows.append(("sequential sympy solve", 1000 / statistics.mean(sym), sym))
    finally:
        pool.close()
    report(pool, startup, held, rows, per_exec_cpu)


def report(pool, startup, held, rows, per_exec_cpu) -> None:
    pool.close()

    load = os.getloadavg()
    print(f"\nsandbox benchmark: {pool.slots} slots, {os.cpu_count()} CPUs, load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, pool startup {startup:.2f} s")  # fmt: skip
    print(f"layers holding: {', '.join(held)}\n")
    print(f"| {'scenario':32} | {'exec/s':>7} | {'p50 ms':>7} | {'p99 ms':>7} | {'n':>4} |")
    print(f"|{'-' * 34}|{'-' * 9}|{'-' * 9}|{'-' * 9}|{'-' * 6}|")
    for name, rate, xs in rows:
        r = "-" if rate != rate else f"{rate:7.1f}"
        print(f"| {name:32} | {r:>7} | {pct(xs, 50):7.1f} | {pct(xs, 99):7.1f} | {len(xs):4d} |")
    print(
        f"\nCPU per print(1) execution (zygote + sandbox, user+sys): {per_exec_cpu:.1f} ms, "
        f"so an idle {os.cpu_count()}-CPU machine could do about "
        f"{1000 * (os.cpu_count() or 1) / per_exec_cpu:.0f} exec/s (kernel work done in "
        "worker threads, e.g. network-namespace teardown, is not counted)"
    )
    print("targets (issue 6): >= 200 exec/s across the pool, p99 <= 50 ms")


if __name__ == "__main__":
    main()
