"""Roofline (issue 6, target 5): the machine's matmul peak, and how close generation and training get.

    .venv/bin/python benchmarks/bench_roofline.py             # the full run (see below)
    .venv/bin/python benchmarks/bench_roofline.py --quick     # smaller shapes, fewer reps
    .venv/bin/python benchmarks/bench_roofline.py --quick --threads 1 --json roofline.json

On a shared machine pass --threads 1: with torch's default of one thread per core, every
parallel matmul waits for its slowest thread, and a thread that another process has
descheduled stalls it (measured: skinny GEMMs at 0.1-20 GFLOP/s with 2 threads under
load 8, a steady 10-50 with 1 thread). Under load 5-8 the --quick run took 37 min with
2 threads and about 6 min with 1.

What it measures, with torch on the CPU, all threads torch uses by default:
  1. matmul throughput (GFLOP/s) in fp32 and bf16: a large square GEMM, whose best rep
     (measured at the start and again before generation and before training; the best
     seen) is the peak every utilisation below is divided by (the best, not the median: on a
     shared machine the median understates what the hardware does and so would flatter
     the MFU; both are printed), and the skinny GEMMs of decoding SmolLM2-135M,
     x[rows, k] @ W[k, n] with rows = batch 16 and 64 and W the model's weight shapes
     (576x576 q/o, 576x192 k/v, 576x1536 gate/up, 1536x576 down, 576x49152 lm_head),
     each as F.linear the way nn.Linear runs it; warm-up, then the median of several reps,
     each rep looping the call for at least 50 ms.
     From the skinny GEMMs it also derives the GEMM-only bound of one decode step (the
     step time if the model were nothing but its matmuls at these measured speeds);
  2. generation: trajlab's HFEngine (`HFEngine.from_spec("default", dtype=...)`) on batch
     16 and 64 chat prompts for 128 new tokens (temperature 1, fixed seed), with fp32
     weights, bf16 weights, and fp32 weights decoding with a bf16 copy (the engine's
     decode_dtype, the trainer's configuration on bf16 CPUs), timed as a
     whole, with forward hooks timing the decoder stack (prefill calls, those over more
     than one position, apart) and the LM head; the rest is sampling, cache bookkeeping
     and Python. Decode GFLOP/s = decode FLOPs / (total - prefill time);
  3. training: forward and backward of trajlab.models.token_logprobs on a [16, 256] batch
     of random tokens with a 64-token prompt (the LM head runs over the 192 positions
     after it, as trainer.micro_loss does with start=prompt length), every parameter
     trainable, in fp32 and under bf16 autocast (the trainer's optim.autocast=bf16).
     One AdamW step is timed too, but its FLOPs are not counted.

FLOP counting (useful model FLOPs, the MFU convention: recomputation is not counted):
  per layer, matmul parameters P_layer = 2*h*a + 2*h*kv + 3*h*i (q, o, k, v, gate, up,
  down), with h = hidden, a = heads*head_dim, kv = kv_heads*head_dim, i = intermediate;
  P_head = h*vocab (the LM head, tied to the embedding in SmolLM2; the embedding lookup
  itself does no FLOPs). A forward pass over `tokens` positions, `rows` of which go
  through the LM head, where the queries attend to `keys` (query, key) pairs in total:
      F_fwd = 2*L*P_layer*tokens + 2*P_head*rows + 4*L*a*keys
  (4*a per pair: q.k and p.v, 2 FLOPs per multiply-add). Causal attention counts only
  the pairs the mask keeps: n new positions after `past` cached ones attend to
  n*past + n*(n+1)/2 keys. Norms, RoPE, softmax and activations are elementwise and left
  out (under 1% here). So:
      generation of n tokens after a P-token prompt: the prefill runs P positions (one
      LM-head row, as the engine asks for logits_to_keep=1), then n-1 decode steps of one
      position each (the last sampled token is never fed back):
          F_gen = F_fwd(P, 1, P(P+1)/2) + F_fwd(n-1, n-1, (n-1)P + (n-1)n/2)
      training on [B, T] with LM head from position `start`:
          F_train = 3 * F_fwd(B*T, B*(T - max(start, 1)), B*T(T+1)/2)   (backward = 2x forward)
  For SmolLM2-135M: L*P_layer = 106.2M, P_head = 28.3M, so a decode token costs 269 MFLOP
  plus 0.069 MFLOP per token of context.
  MFU = achieved FLOP/s / the measured large-GEMM peak of the dtype the matmuls ran in.

Numbers depend on machine load: the load average and core count are printed with every
table. What it does not do: profile below the module level (use torch.profiler for that),
or count padding: FLOPs spent on pad positions are waste and lower the MFU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


# -- FLOP counting (pure) ---------------------------------------------------------------


@dataclass(frozen=True)
class ModelShape:
    """The dimensions of a Llama-style decoder that the FLOP count needs."""

    layers: int
    hidden: int  # h
    attn: int  # a = heads * head_dim (query and output projection width)
    kv: int  # kv_heads * head_dim (key and value projection width)
    intermediate: int  # i
    vocab: int

    @classmethod
    def from_config(cls, config) -> ModelShape:
        head_dim = getattr(config, "head_dim", None) or (
            config.hidden_size // config.num_attention_heads
        )
        kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        return cls(
            layers=config.num_hidden_layers,
            hidden=config.hidden_size,
            attn=config.num_attention_heads * head_dim,
            kv=kv_heads * head_dim,
            intermediate=config.intermediate_size,
            vocab=config.vocab_size,
        )

    @property
    def layer_params(self) -> int:
        """Matmul weights of one decoder layer: q, o, k, v, gate, up, down."""
        h = self.hidden
        return 2 * h * self.attn + 2 * h * self.kv + 3 * h * self.intermediate

    @property
    def head_params(self) -> int:
        return self.hidden * self.vocab

    def step_gemms(self) -> list[tuple[int, int, int]]:
        """(k, n, calls per decode step) of every matmul in one forward step, LM head last."""
        h, L = self.hidden, self.layers
        return [
            (h, self.attn, L),  # q
            (self.attn, h, L),  # o
            (h, self.kv, 2 * L),  # k and v
            (h, self.intermediate, 2 * L),  # gate and up
            (self.intermediate, h, L),  # down
            (h, self.vocab, 1),  # LM head
        ]


def causal_keys(past: int, n: int) -> int:
    """(query, key) pairs when n new positions follow `past` cached ones under a causal mask."""
    return n * past + n * (n + 1) // 2


def forward_flops(s: ModelShape, tokens: int, head_rows: int, keys: int) -> int:
    """F_fwd: `tokens` positions through the layers, `head_rows` through the LM head."""
    return (
        2 * s.layers * s.layer_params * tokens
        + 2 * s.head_params * head_rows
        + 4 * s.layers * s.attn * keys
    )


def generation_flops(s: ModelShape, prompt_len: int, new_tokens: int) -> tuple[int, int]:
    """(prefill, decode) FLOPs of generating new_tokens >= 1 after a prompt (see docstring)."""
    prefill = forward_flops(s, prompt_len, 1, causal_keys(0, prompt_len))
    n = new_tokens - 1
    return prefill, forward_flops(s, n, n, causal_keys(prompt_len, n))


def training_flops(s: ModelShape, batch: int, seq: int, start: int) -> int:
    """Forward + backward FLOPs of token_logprobs on [batch, seq] with the LM head from `start`."""
    head_rows = batch * max(0, seq - max(start, 1))
    return 3 * forward_flops(s, batch * seq, head_rows, batch * causal_keys(0, seq))


# -- timing helpers -----------------------------------------------------------------------


def rep_times(fn: Callable[[], object], reps: int, min_s: float = 0.05) -> list[float]:
    """Seconds per call of `reps` timings, each looping fn until it takes at least min_s.

    Two warm-up calls, then the loop count doubles until one batch of calls lasts min_s,
    so short calls are not timed one at a time.
    """
    fn()
    inner = 1
    while True:
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        if time.perf_counter() - t >= min_s or inner >= 1 << 16:
            break
        inner *= 2
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t) / inner)
    return times


def gemm_gflops(m: int, k: int, n: int, dtype: torch.dtype, reps: int) -> tuple[float, float]:
    """Throughput of F.linear(x[m, k], W[n, k]) (nn.Linear's layout): (median, best) GFLOP/s."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(m, k, generator=g).to(dtype)
    w = torch.randn(n, k, generator=g).to(dtype)
    with torch.inference_mode():
        times = rep_times(lambda: F.linear(x, w), reps)
    flops = 2 * m * k * n
    return flops / statistics.median(times) / 1e9, flops / min(times) / 1e9


class ModuleTimer:
    """Wall time spent inside named modules' forward calls (forward hooks; CPU is synchronous).

    A module called inside another timed module is counted in both; pick disjoint ones.
    `prefill_seconds` holds the share of calls whose input_ids had more than one position
    (a prefill, as opposed to a one-token decode step).
    """

    def __init__(self, modules: dict[str, torch.nn.Module | list[torch.nn.Module]]) -> None:
        self.seconds = dict.fromkeys(modules, 0.0)
        self.prefill_seconds = dict.fromkeys(modules, 0.0)
        self.calls = dict.fromkeys(modules, 0)
        self._start: dict[str, tuple[float, bool]] = {}
        self._handles = []
        for name, ms in modules.items():
            for m in ms if isinstance(ms, list) else [ms]:
                self._handles.append(m.register_forward_pre_hook(self._pre(name), with_kwargs=True))
                self._handles.append(m.register_forward_hook(self._post(name)))

    def _pre(self, name):
        def hook(module, args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            prefill = isinstance(ids, torch.Tensor) and ids.dim() == 2 and ids.shape[1] > 1
            self._start[name] = (time.perf_counter(), prefill)

        return hook

    def _post(self, name):
        def hook(module, args, out):
            t0, prefill = self._start.pop(name)
            dt = time.perf_counter() - t0
            self.seconds[name] += dt
            self.prefill_seconds[name] += dt if prefill else 0.0
            self.calls[name] += 1

        return hook

    def reset(self) -> None:
        self.seconds = dict.fromkeys(self.seconds, 0.0)
        self.prefill_seconds = dict.fromkeys(self.seconds, 0.0)
        self.calls = dict.fromkeys(self.calls, 0)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


# -- 1. matmul throughput ------------------------------------------------------------------


def bench_gemms(shape: ModelShape, square: int, batches: list[int], reps: int) -> dict:
    """GFLOP/s per dtype: 'peak' (best rep of the square GEMM), 'square_median', and per
    skinny shape the median; 'step_bound_s': GEMM-only decode step time from the medians."""
    out: dict = {"square_n": square, "peak": {}, "square_median": {}, "skinny": {}}
    out["step_bound_s"] = {}
    for name, dtype in DTYPES.items():
        out["square_median"][name], out["peak"][name] = gemm_gflops(
            square, square, square, dtype, reps
        )
        for rows in batches:
            step = 0.0
            for k, n, calls in shape.step_gemms():
                key = f"{name} {rows}x{k}x{n}"
                if key not in out["skinny"]:  # q and o share a shape
                    out["skinny"][key] = gemm_gflops(rows, k, n, dtype, reps)[0]
                gf = out["skinny"][key]
                step += calls * 2 * rows * k * n / (gf * 1e9)
            out["step_bound_s"][f"{name} {rows}"] = step
    return out


# -- 2. generation ----------------------------------------------------------------------------


def chat_prompts(tokenizer, n: int, seed: int = 0) -> list[list[int]]:
    """n chat prompts asking arithmetic questions of slightly different lengths."""
    import random

    rng = random.Random(seed)
    prompts = []
    for _ in range(n):
        a, b = rng.randint(1000, 999999), rng.randint(100, 99999)
        q = f"What is {a} * {b}? Write a short Python program that prints the answer, then state it."
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True
        )
        if isinstance(ids, dict) or hasattr(ids, "keys"):  # BatchEncoding in newer transformers
            ids = ids["input_ids"]
        prompts.append(list(ids))
    return prompts


def _decode_copy(engine) -> torch.nn.Module | None:
    """The weight copy an engine decodes with, if any (HFEngine's decode_dtype; private)."""
    return getattr(getattr(engine, "_decoder", None), "copy", None)


def bench_generation(engine, shape: ModelShape, batch: int, new_tokens: int) -> dict:
    from trajlab.engines.base import SamplingParams

    prompts = chat_prompts(engine.tokenizer, batch)
    params = SamplingParams(temperature=1.0, max_new_tokens=new_tokens, seed=0)
    # Warm up first: an engine that decodes with a copy of the weights in another dtype
    # makes the copy on its first call, and the copy must not inherit our hooks.
    engine.generate(prompts[: min(2, batch)], SamplingParams(max_new_tokens=4, seed=0))
    dtype = getattr(engine, "decode_dtype", None) or next(engine.model.parameters()).dtype
    models = [m for m in (engine.model, _decode_copy(engine)) if m is not None]
    timer = ModuleTimer(
        {
            "layers": [m.get_decoder() for m in models],
            "lm_head": [m.get_output_embeddings() for m in models],
        }
    )
    try:
        t = time.perf_counter()
        gens = engine.generate(prompts, params)
        total_s = time.perf_counter() - t
        split = dict(timer.seconds)
        prefill_s = timer.prefill_seconds["layers"]  # decoder calls over whole prompts
    finally:
        timer.remove()
    prefill_f = decode_f = 0
    for p, g in zip(prompts, gens):
        pf, df = generation_flops(shape, len(p), len(g.token_ids))
        prefill_f += pf
        decode_f += df
    tokens = sum(len(g.token_ids) for g in gens)
    decode_s = max(total_s - prefill_s, 1e-9)
    return {
        "batch": batch,
        "dtype": str(dtype).removeprefix("torch."),  # what the matmuls ran in
        "weights": str(next(engine.model.parameters()).dtype).removeprefix("torch."),
        "prompt_tokens": sum(len(p) for p in prompts),
        "new_tokens": tokens,
        "total_s": total_s,
        "prefill_s": prefill_s,
        "tokens_per_s": tokens / total_s,
        "gflops_total": (prefill_f + decode_f) / total_s / 1e9,
        "gflops_decode": decode_f / decode_s / 1e9,
        "flops_prefill": prefill_f,
        "flops_decode": decode_f,
        "layers_s": split["layers"],
        "lm_head_s": split["lm_head"],
        "other_s": total_s - split["layers"] - split["lm_head"],
    }


# -- 3. training -------------------------------------------------------------------------------


def bench_training(
    model, shape: ModelShape, batch: int, seq: int, start: int, autocast: str, reps: int
) -> dict:
    import contextlib

    from trajlab.models import token_logprobs

    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, shape.vocab, (batch, seq), generator=g)
    attn = torch.ones_like(ids)
    mask = torch.zeros(batch, seq)
    mask[:, start:] = 1.0
    opt = torch.optim.AdamW(model.parameters(), lr=1e-7)
    timer = ModuleTimer({"layers": model.get_decoder(), "lm_head": model.get_output_embeddings()})

    def ctx():
        if autocast == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    rows = []
    try:
        for i in range(reps + 1):  # the first is a warm-up
            opt.zero_grad(set_to_none=True)
            timer.reset()
            t0 = time.perf_counter()
            with ctx():
                lp = token_logprobs(model, ids, attn, 1.0, start=start)  # [B, T]
            loss = -(lp * mask).sum() / mask.sum()
            t1 = time.perf_counter()
            fwd_split = dict(timer.seconds)
            loss.backward()
            t2 = time.perf_counter()
            opt.step()
            t3 = time.perf_counter()
            if i > 0:
                rows.append(
                    (
                        t1 - t0,
                        t2 - t1,
                        t3 - t2,
                        fwd_split["layers"],
                        fwd_split["lm_head"],
                        timer.seconds["lm_head"],
                    )
                )
    finally:
        timer.remove()
        model.eval()
    fwd, bwd, step, layers, head, head_all = (statistics.median(c) for c in zip(*rows))
    flops = training_flops(shape, batch, seq, start)
    return {
        "autocast": autocast,
        "matmul_dtype": "bfloat16" if autocast == "bf16" else "float32",
        "batch": batch,
        "seq": seq,
        "start": start,
        "forward_s": fwd,
        "backward_s": bwd,
        "optimizer_s": step,
        "fwd_layers_s": layers,
        "fwd_lm_head_s": head,
        "bwd_lm_head_recompute_s": head_all - head,
        "flops": flops,
        "gflops": flops / (fwd + bwd) / 1e9,
        "tokens_per_s": batch * seq / (fwd + bwd),
    }


# -- report ---------------------------------------------------------------------------------


def load_line() -> str:
    a, b, c = os.getloadavg()
    return (
        f"cores: {os.cpu_count()}   torch threads: {torch.get_num_threads()}   "
        f"load average: {a:.2f} {b:.2f} {c:.2f}"
    )


def print_gemms(r: dict, batches: list[int]) -> None:
    print(f"\n1. matmul throughput (GFLOP/s, median)   {load_line()}")
    print(f"{'shape (rows x k x n)':<28} {'float32':>9} {'bfloat16':>9} {'bf16/fp32':>10}")
    n = r["square_n"]
    fp, bf = r["peak"]["float32"], r["peak"]["bfloat16"]
    print(f"{f'square {n}^3, best = peak':<28} {fp:>9.1f} {bf:>9.1f} {bf / fp:>10.2f}")
    fp, bf = r["square_median"]["float32"], r["square_median"]["bfloat16"]
    print(f"{f'square {n}^3, median':<28} {fp:>9.1f} {bf:>9.1f} {bf / fp:>10.2f}")
    for key in r["skinny"]:
        if key.startswith("float32 "):
            shape = key.removeprefix("float32 ")
            fp, bf = r["skinny"][key], r["skinny"]["bfloat16 " + shape]
            print(f"{shape:<28} {fp:>9.1f} {bf:>9.1f} {bf / fp:>10.2f}")
    for rows in batches:
        fp, bf = r["step_bound_s"][f"float32 {rows}"], r["step_bound_s"][f"bfloat16 {rows}"]
        print(
            f"GEMM-only decode step, batch {rows}: fp32 {fp * 1e3:.1f} ms ({rows / fp:.0f} tok/s), "
            f"bf16 {bf * 1e3:.1f} ms ({rows / bf:.0f} tok/s)"
        )


def _gen_label(g: dict) -> str:
    return g["dtype"] if g["weights"] == g["dtype"] else f"{g['weights']}:{g['dtype']}"


def print_generation(rows: list[dict], peaks: dict, bounds: dict, model: str) -> None:
    print(f"\n2. generation, HFEngine, model {model!r}   {load_line()}")
    print(
        f"{'weights:decode':<17} {'batch':>5} {'tokens':>6} {'tok/s':>7} {'GFLOP/s':>8} {'MFU %':>6} "
        f"{'decode GF/s':>11} {'dec MFU %':>9} {'bound tok/s':>11} "
        f"{'prefill s':>9} {'layers s':>8} {'head s':>7} {'other s':>7}"
    )
    for g in rows:
        peak = peaks[g["dtype"]]
        g["mfu"] = g["gflops_total"] / peak
        bound = bounds.get(f"{g['dtype']} {g['batch']}")
        bound_tps = f"{g['batch'] / bound:.0f}" if bound else "-"
        print(
            f"{_gen_label(g):<17} {g['batch']:>5} {g['new_tokens']:>6} {g['tokens_per_s']:>7.1f} "
            f"{g['gflops_total']:>8.1f} {100 * g['gflops_total'] / peak:>6.1f} "
            f"{g['gflops_decode']:>11.1f} {100 * g['gflops_decode'] / peak:>9.1f} {bound_tps:>11} "
            f"{g['prefill_s']:>9.2f} {g['layers_s']:>8.2f} {g['lm_head_s']:>7.2f} {g['other_s']:>7.2f}"
        )
    print(
        "MFU: against the best square-GEMM rep so far of the dtype decoding ran in; bound tok/s: batch / GEMM-only "
        "decode step; layers/head/other split the whole generate call (other = sampling, "
        "cache bookkeeping, Python)."
    )


def print_training(rows: list[dict], peaks: dict) -> None:
    print(f"\n3. training: token_logprobs forward + backward, full fine-tuning   {load_line()}")
    print(
        f"{'autocast':<8} {'[B, T]':>9} {'tok/s':>7} {'GFLOP/s':>8} {'MFU %':>6} {'fwd s':>6} "
        f"{'layers':>6} {'head':>5} {'bwd s':>6} {'head recomp':>11} {'AdamW s':>7}"
    )
    for t in rows:
        peak = peaks[t["matmul_dtype"]]
        t["mfu"] = t["gflops"] / peak
        bt = f"[{t['batch']}, {t['seq']}]"
        print(
            f"{t['autocast']:<8} {bt:>9} {t['tokens_per_s']:>7.1f} "
            f"{t['gflops']:>8.1f} {100 * t['gflops'] / peak:>6.1f} {t['forward_s']:>6.2f} "
            f"{t['fwd_layers_s']:>6.2f} {t['fwd_lm_head_s']:>5.2f} {t['backward_s']:>6.2f} "
            f"{t['bwd_lm_head_recompute_s']:>11.2f} {t['optimizer_s']:>7.2f}"
        )
    print(
        "FLOPs = 3 x forward (see docstring), start=prompt length so the LM head skips the "
        "prompt; MFU against the square-GEMM peak of the matmul dtype; the AdamW step is "
        "timed but not in the FLOPs or the MFU."
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="smaller shapes and fewer reps (~2 min)")
    ap.add_argument(
        "--model", default="default", help="model spec (default: SmolLM2-135M-Instruct)"
    )
    ap.add_argument(
        "--gen-dtypes",
        default="float32,bfloat16,float32:bfloat16",
        help="engine weight dtypes; W:D = weights in W, decoding with a D copy (decode_dtype)",
    )
    ap.add_argument("--train-autocast", default="none,bf16", help="trainer autocast variants")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: gemm,gen,train")
    ap.add_argument("--json", default="", help="write every number here")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from trajlab.engines.hf import HFEngine
    from trajlab.models import load_model

    quick = args.quick
    square, reps = (2048, 3) if quick else (4096, 5)
    batches = [16, 64]
    new_tokens = 32 if quick else 128
    train_batch, train_seq, train_start, train_reps = (4, 256, 64, 1) if quick else (16, 256, 64, 2)
    skip = set(filter(None, args.skip.split(",")))

    model = load_model(args.model)
    shape = ModelShape.from_config(model.config)
    print(
        f"roofline: {args.model}: {shape.layers} layers, hidden {shape.hidden}, vocab {shape.vocab}; "
        f"matmul params {shape.layers * shape.layer_params / 1e6:.1f}M layers + "
        f"{shape.head_params / 1e6:.1f}M LM head{' (quick)' if quick else ''}"
    )
    print(load_line(), flush=True)
    results: dict = {
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "quick": quick,
    }
    results["shape"] = asdict(shape)

    if "gemm" in skip:
        raise SystemExit("the GEMM peak is what every MFU is divided by; it cannot be skipped")
    gem = bench_gemms(shape, square, batches, reps)
    results["gemm"] = gem
    print_gemms(gem, batches)

    def refresh_peak() -> None:
        """The peak is the best square GEMM seen in the run: load on a shared machine changes."""
        for name, dtype in DTYPES.items():
            best = gemm_gflops(square, square, square, dtype, max(2, reps // 2))[1]
            gem["peak"][name] = max(gem["peak"][name], best)

    if "gen" not in skip:
        refresh_peak()
        gen_rows = []
        for name in args.gen_dtypes.split(","):
            weights, _, decode = name.partition(":")  # "float32:bfloat16" = bf16 decode copy
            kw = {"decode_dtype": decode} if decode else {}
            engine = HFEngine.from_spec(
                args.model, dtype=DTYPES[weights], max_batch_size=max(batches), **kw
            )
            for b in batches:
                gen_rows.append(bench_generation(engine, shape, b, new_tokens))
                print(
                    f"  generation {name} batch {b}: {gen_rows[-1]['tokens_per_s']:.1f} tok/s",
                    flush=True,
                )
            del engine
        results["generation"] = gen_rows
        print_generation(gen_rows, gem["peak"], gem["step_bound_s"], args.model)

    if "train" not in skip:
        refresh_peak()
        train_rows = []
        for ac in args.train_autocast.split(","):
            train_rows.append(
                bench_training(model, shape, train_batch, train_seq, train_start, ac, train_reps)
            )
            print(
                f"  training autocast={ac}: {train_rows[-1]['tokens_per_s']:.1f} tok/s", flush=True
            )
        results["training"] = train_rows
        print_training(train_rows, gem["peak"])

    over = [
        r
        for r in results.get("generation", []) + results.get("training", [])
        if r.get("mfu", 0) > 1
    ]
    if over:
        print(
            "warning: an MFU above 100% means the load changed between measuring the peak and "
            "the model: rerun on an idle machine (or with --threads 1 on a shared one)."
        )
    peaks = gem["peak"]
    print(
        f"\nsummary: MFU against the best square GEMM seen in the whole run "
        f"(fp32 {peaks['float32']:.1f}, bf16 {peaks['bfloat16']:.1f} GFLOP/s)   {load_line()}"
    )
    print(f"{'part':<40} {'GFLOP/s':>8} {'MFU %':>6}")
    for g in results.get("generation", []):
        g["mfu_final"] = g["gflops_total"] / peaks[g["dtype"]]
        label = f"generation {_gen_label(g)} batch {g['batch']}"
        print(f"{label:<40} {g['gflops_total']:>8.1f} {100 * g['mfu_final']:>6.1f}")
    for t in results.get("training", []):
        t["mfu_final"] = t["gflops"] / peaks[t["matmul_dtype"]]
        label = f"training autocast={t['autocast']} [{t['batch']}, {t['seq']}]"
        print(f"{label:<40} {t['gflops']:>8.1f} {100 * t['mfu_final']:>6.1f}")
    results["loadavg_end"] = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
