"""Where a GRPO stage's memory goes: the demo's GRPO stage with a per-phase memory trace
of the trainer process (docs/performance.md, section 4).

    .venv/bin/python benchmarks/bench_rl_memory.py --model runs/demo_s0/sft/model --out runs/rlmem
    .venv/bin/python benchmarks/bench_rl_memory.py --model ... --out ... --adamw8bit   # torchao

It runs `trajlab.demo`'s GRPO stage (the same settings: `trajlab.demo.rl_overrides`; extra
KEY=VALUE arguments override them) from `--model`, normally the demo's SFT model
(`<demo run>/sft/model`). A sampler thread reads, every `--interval` seconds, the
process's PSS (/proc/self/smaps_rollup) and glibc's mallinfo2 (heap bytes in use, free,
and in large mmapped blocks); at each phase boundary the live tensor storage is counted
too (every tensor the garbage collector sees, each storage once). The table shows, per
step, PSS at the step's start and the peak of its rollout and update, with the heap
figures at the update's peak; what is resident but neither in use nor mmapped is the
interpreter, the libraries and freed heap pages glibc still keeps.

`--adamw8bit` swaps AdamW for torchao's AdamW8bit (8-bit moments; torchao is not a
trajlab dependency: `pip install torchao`). Only this process is measured; the sandbox's
processes are not (benchmarks/bench_memory.py measures the whole demo's process tree).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trajlab import demo  # noqa: E402
from trajlab.engines import hf  # noqa: E402
from trajlab.models import cpu_feature_summary  # noqa: E402
from trajlab.train import rl  # noqa: E402
from trajlab.train.config import load_train_config  # noqa: E402
from trajlab.train.policy import lr_lambda  # noqa: E402

GIB = float(2**30)
FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in FIELDS.split()]


def _mallinfo():
    try:
        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = _MallInfo2
        return libc.mallinfo2
    except (OSError, AttributeError):
        return None


def _pss() -> int:
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def _live_tensor_bytes() -> int:
    storages: dict[int, int] = {}
    for o in gc.get_objects():
        try:
            if isinstance(o, torch.Tensor):
                s = o.untyped_storage()
                storages[s.data_ptr()] = s.nbytes()
        except Exception:  # tensor subclasses and meta tensors have no plain storage
            continue
    return sum(storages.values())


class Trace:
    """Samples memory in a thread, tagged with the phase the trainer is in."""

    def __init__(self, interval: float):
        self.interval, self.phase, self.stop = interval, "setup", False
        self.mallinfo = _mallinfo()
        self.peaks: dict[str, dict] = {}
        self.marks: dict[str, dict] = {}
        self.trims: list[float] = []  # seconds of each heap trim
        self.t0 = time.perf_counter()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> dict:
        s = {"t": time.perf_counter() - self.t0, "pss": _pss()}
        if self.mallinfo is not None:
            m = self.mallinfo()
            s.update(in_use=m.uordblks, free=m.fordblks, mmapped=m.hblkhd)
        return s

    def _record(self) -> None:
        with self.lock:
            s = self.sample()
            if s["pss"] > self.peaks.get(self.phase, {"pss": -1})["pss"]:
                self.peaks[self.phase] = s

    def _run(self) -> None:
        while not self.stop:
            self._record()
            time.sleep(self.interval)

    def enter(self, phase: str) -> None:
        """Close the current phase and open the next with a sample each, so a phase shorter
        than the sampling interval still has a peak."""
        self._record()
        with self.lock:
            self.phase = phase
        self._record()

    def mark(self, name: str) -> None:
        gc.collect()
        self.marks[name] = {**self.sample(), "tensors": _live_tensor_bytes()}


def install(trace: Trace, adamw8bit: bool) -> None:
    """Wrap the trainer's rollout and update so the trace knows the phase."""
    collect, update = rl.collect_batch, rl.update_policy

    def traced_collect(run, step, timings):
        trace.mark(f"{step} start")
        trace.enter(f"{step} rollout")
        out = collect(run, step, timings)
        trace.enter(f"{step} logprobs")
        return out

    def traced_update(run, step, rows, advantages):
        trace.enter(f"{step} update")
        out = update(run, step, rows, advantages)
        trace.enter(f"{step} log")
        return out

    rl.collect_batch, rl.update_policy = traced_collect, traced_update
    trim = rl.trim_heap  # the trainer's and the engine's heap trims, timed

    def timed_trim() -> None:
        t = time.perf_counter()
        trim()
        trace.trims.append(time.perf_counter() - t)

    rl.trim_heap = hf.trim_heap = timed_trim
    if adamw8bit:
        from torchao.optim import AdamW8bit

        def adamw(params, o, total):
            opt = AdamW8bit(
                params, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, weight_decay=o.weight_decay
            )
            return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(o, total))

        rl.adamw = adamw


def table(trace: Trace, steps: int) -> str:
    g = lambda v: f"{v / GIB:.2f}" if isinstance(v, (int, float)) else "-"  # noqa: E731
    lines = [
        "| step | PSS at start | live tensors at start | rollout peak | update peak | heap in use / free / mmapped at the update peak |",
        "|---|---|---|---|---|---|",
    ]  # fmt: skip
    for k in range(1, steps + 1):
        start = trace.marks.get(f"{k} start", {})
        roll, upd = trace.peaks.get(f"{k} rollout", {}), trace.peaks.get(f"{k} update", {})
        heap = " / ".join(g(upd.get(f)) for f in ("in_use", "free", "mmapped"))
        lines.append(
            f"| {k} | {g(start.get('pss'))} | {g(start.get('tensors'))} | {g(roll.get('pss'))} "
            f"| {g(upd.get('pss'))} | {heap} |"
        )
    return "\n".join(lines) + "\n(GiB, this process only)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--model", required=True, help="model to train (the demo's SFT model)")
    ap.add_argument("--out", required=True, help="run directory of the GRPO run")
    ap.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    ap.add_argument("--steps", type=int, default=6, help="GRPO steps (default 6, the demo's)")
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    ap.add_argument("--adamw8bit", action="store_true", help="torchao's AdamW8bit for AdamW")
    ap.add_argument("--json", default="", help="write peaks and marks here")
    ap.add_argument("overrides", nargs="*", help="KEY=VALUE overrides of the GRPO config")
    args = ap.parse_args(argv)
    if not Path("/proc/self/smaps_rollup").exists():
        ap.error("this benchmark reads /proc/self/smaps_rollup (Linux only)")
    print(f"machine: {os.cpu_count()} cores (flags {cpu_feature_summary()}), load average "
          f"{os.getloadavg()[0]:.2f}, torch {torch.__version__}", flush=True)  # fmt: skip
    a = dict(
        rl_steps=args.steps, seed=args.seed, threads=0, rl_word_prob=1.0, rl_lora=False,
        argv=["bench_rl_memory"],
    )  # fmt: skip
    cfg = load_train_config(None, demo.rl_overrides(a, args.model, args.out) + args.overrides)
    trace = Trace(args.interval)
    install(trace, args.adamw8bit)
    trace.thread.start()
    rl.train(cfg, argv=["bench_rl_memory"])
    trace.stop = True
    trace.thread.join()
    print(table(trace, args.steps))
    t = trace.trims
    print(f"heap trims: {len(t)} calls, {sum(t):.2f} s in all, at most {max(t, default=0):.3f} s")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        data = {"peaks": trace.peaks, "marks": trace.marks, "trims_s": trace.trims}
        Path(args.json).write_text(json.dumps(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
