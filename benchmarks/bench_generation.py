"""Generation: trajlab's hf engine against Hugging Face `generate` (issue 6, target 2).

    .venv/bin/python benchmarks/bench_generation.py                 # batch 16 and 64
    .venv/bin/python benchmarks/bench_generation.py --batches 16 --reps 3 --json runs/gen.json

Workload (what an RL step samples): SmolLM2-135M-Instruct (trajlab's `default` model,
loaded once in fp32), questions of the built-in `arith` task in the model's chat template,
groups of 8 samples per prompt (batch 16 = 2 prompts x 8, batch 64 = 8 prompts x 8),
temperature 1.0, top_p 1.0, no top-k, at most 128 new tokens, EOS ends a sample.

Systems, each timed on the same prompts, one after the other:
  * hf-generate: `model.generate(do_sample=True, num_return_sequences=8, ...)`, the usual
    way to draw a group with transformers; run on the fp32 model and on a bf16 copy;
  * trajlab: `HFEngine.generate` with decode_dtype float32 (same weights as hf-generate
    fp32) and bfloat16 (the trainer's default on CPUs with native bf16, see
    docs/training.md).
Tokens counted: each sample's tokens up to and including its EOS (hf-generate keeps
computing finished rows until the whole batch ends; that work is not counted as tokens).
tok/s = tokens / wall seconds, best of --reps. Ratios: trajlab / hf-generate at the same
dtype, and trajlab's default (bf16 copy) / hf-generate on the model as loaded (fp32).

--context-tokens N puts earlier worked questions before each prompt until it has N tokens:
the long contexts of a multi-turn rollout, where the KV cache is large.

With --concat-kv, trajlab also runs with transformers' concatenating DynamicCache (the
engine before its in-place KV cache, trajlab/engines/kv.py), so the gain of writing the KV
in place is measured in the same run: `trajlab fp32 concat-kv`.
--dtypes fp32 skips the bf16 systems (slow and not what trajlab decodes in on CPUs without
native bf16).

Correctness: under greedy decoding (16 distinct prompts, 64 new tokens) trajlab and
hf-generate must produce identical token ids at the same dtype; the table reports the
number of identical rows.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trajlab.engines.base import SamplingParams  # noqa: E402
from trajlab.engines.hf import HFEngine  # noqa: E402
from trajlab.models import cpu_feature_summary, load_model, load_tokenizer  # noqa: E402
from trajlab.tasks import load_task  # noqa: E402

GROUP = 8


def chat_prompts(tok, n: int, min_tokens: int = 0) -> list[list[int]]:
    """n arith questions rendered with the model's chat template, as token ids. With
    min_tokens, each prompt holds further questions before its own (a worked history, as a
    multi-turn episode's context grows) until it has at least that many tokens."""
    examples = load_task("arith", split="train", n=n, seed=0)
    history = load_task("arith", split="train", n=64, seed=1)
    out = []
    for ex in examples:
        earlier: list[str] = []
        while True:
            content = "\n".join(earlier + [f"{ex.question}\nGive the final answer as a number."])
            messages = [{"role": "user", "content": content}]
            text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            ids = tok.encode(text, add_special_tokens=False)
            if len(ids) >= min_tokens or len(earlier) == len(history):
                break
            h = history[len(earlier)]
            earlier.append(f"{h.question} = {h.answer}")
        out.append(ids)
    return out


def bf16_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The model with bf16 parameters and untouched buffers (what trajlab's engine decodes with)."""
    m = copy.deepcopy(model)
    for p in m.parameters():
        p.requires_grad_(False)
        p.data = p.data.to(torch.bfloat16)
    return m.eval()


def until_eos(row: list[int], eos: set[int], pad: int | None = None) -> list[int]:
    """A generated row cut after its first EOS (kept); trailing padding dropped otherwise."""
    for i, t in enumerate(row):
        if t in eos:
            return row[: i + 1]
    return row


@torch.inference_mode()
def hf_generate(model, tok, prompts, group, max_new, greedy, seed, eos) -> list[list[int]]:
    """model.generate on left-padded distinct prompts, `group` samples each."""
    tok.padding_side = "left"
    enc = tok.pad({"input_ids": prompts}, return_tensors="pt")
    torch.manual_seed(seed)
    kwargs = (
        {"do_sample": False}
        if greedy
        else {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0}
    )
    out = model.generate(
        **enc,
        max_new_tokens=max_new,
        num_return_sequences=group,
        pad_token_id=tok.pad_token_id,
        eos_token_id=sorted(eos),
        **kwargs,
    )
    new = out[:, enc["input_ids"].shape[1] :].tolist()
    return [until_eos(r, eos) for r in new]


def ours(engine, prompts, group, max_new, greedy, seed) -> list[list[int]]:
    batch = [p for p in prompts for _ in range(group)]
    params = SamplingParams(
        temperature=0.0 if greedy else 1.0, top_p=1.0, max_new_tokens=max_new, seed=seed
    )
    return [g.token_ids for g in engine.generate(batch, params)]


@contextlib.contextmanager
def concatenating_kv():
    """The engine as it was before trajlab/engines/kv.py: transformers' DynamicCache."""
    import trajlab.engines.kv as kv

    real = kv.supports_growing
    kv.supports_growing = lambda model: False
    try:
        yield
    finally:
        kv.supports_growing = real


def with_concat_kv(fn):
    def run(*args):
        with concatenating_kv():
            return fn(*args)

    return run


def timed(fn, *args) -> tuple[float, list[list[int]]]:
    t = time.perf_counter()
    rows = fn(*args)
    return time.perf_counter() - t, rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="default", help="model spec (default: SmolLM2-135M)")
    ap.add_argument("--batches", type=int, nargs="+", default=[16, 64], help="batch sizes")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument(
        "--context-tokens", type=int, default=0,
        help="make every prompt at least this long (earlier worked questions before it), "
        "for the long contexts of multi-turn rollouts (default 0: the bare question)",
    )  # fmt: skip
    ap.add_argument("--reps", type=int, default=2, help="timed repetitions; the best is kept")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument(
        "--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"],
        help="dtypes to run (bf16 is emulated, and slow, on CPUs without native bf16)",
    )  # fmt: skip
    ap.add_argument(
        "--concat-kv", action="store_true",
        help="also time trajlab with transformers' concatenating KV cache (the engine "
        "before its in-place cache)",
    )  # fmt: skip
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    model, tok = load_model(args.model), load_tokenizer(args.model)
    engine32 = HFEngine(model, tok, max_batch_size=max(args.batches), decode_dtype="float32")
    eos = set(engine32.eos_token_ids)
    systems = {}
    for dtype in args.dtypes:
        m = model if dtype == "fp32" else bf16_copy(model)
        engine = engine32 if dtype == "fp32" else HFEngine(
            model, tok, max_batch_size=max(args.batches), decode_dtype="bfloat16"
        )  # fmt: skip
        systems[f"hf-generate {dtype}"] = lambda P, g, n, greedy, s, m=m: hf_generate(
            m, tok, P, g, n, greedy, s, eos
        )
        systems[f"trajlab {dtype}"] = lambda P, g, n, greedy, s, e=engine: ours(
            e, P, g, n, greedy, s
        )
        if args.concat_kv:
            systems[f"trajlab {dtype} concat-kv"] = with_concat_kv(systems[f"trajlab {dtype}"])
    prompts = chat_prompts(tok, max(max(args.batches) // GROUP, 16), args.context_tokens)
    print(f"prompt tokens: {min(map(len, prompts))}-{max(map(len, prompts))}")
    for fn in systems.values():  # warm-up: first calls allocate and load kernels
        fn(prompts[:2], 2, 4, False, 0)

    # Correctness: identical greedy outputs at the same dtype.
    identity = {}
    for dtype in args.dtypes:
        ref = systems[f"hf-generate {dtype}"](prompts[:16], 1, 64, True, 0)
        got = systems[f"trajlab {dtype}"](prompts[:16], 1, 64, True, 0)
        identity[dtype] = sum(a == b for a, b in zip(ref, got))
        print(f"greedy, 16 distinct prompts, {dtype}: {identity[dtype]}/16 rows identical")

    results: list[dict] = []
    for batch in args.batches:
        P = prompts[: batch // GROUP]
        for name, fn in systems.items():
            best = None
            for rep in range(args.reps):
                secs, rows = timed(fn, P, GROUP, args.max_new_tokens, False, rep)
                tokens = sum(len(r) for r in rows)
                if best is None or tokens / secs > best["tok_s"]:
                    best = {"seconds": secs, "tokens": tokens, "tok_s": tokens / secs}
            results.append({"system": name, "batch": batch, **best})
            print(
                f"  batch {batch:3d} {name:25s} {best['tokens']:6d} tokens "
                f"{best['seconds']:7.2f} s {best['tok_s']:8.1f} tok/s",
                flush=True,
            )

    def tok_s(system: str, batch: int) -> float:
        return next(r["tok_s"] for r in results if r["system"] == system and r["batch"] == batch)

    print()
    print(
        f"machine: {os.cpu_count()} cores (flags {cpu_feature_summary()}), torch threads "
        f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}, torch "
        f"{torch.__version__}, {platform.processor() or platform.machine()}"
    )
    head = ["batch", "dtype", "hf-generate", "trajlab", "ratio"]
    if args.concat_kv:
        head += ["trajlab concat-kv", "in-place / concat-kv"]
    print("| " + " | ".join(head + ["target"]) + " |")
    print("|" + "---|" * (len(head) + 1))
    summary = []
    for batch in args.batches:
        for dtype in args.dtypes:
            row = {
                "batch": batch,
                "dtype": dtype,
                "hf": tok_s(f"hf-generate {dtype}", batch),
                "ours": tok_s(f"trajlab {dtype}", batch),
            }
            row["ratio"] = row["ours"] / row["hf"]
            cells = [f"{row['hf']:.1f}", f"{row['ours']:.1f}", f"{row['ratio']:.2f}x"]
            if args.concat_kv:
                row["concat_kv"] = tok_s(f"trajlab {dtype} concat-kv", batch)
                row["in_place_gain"] = row["ours"] / row["concat_kv"]
                cells += [f"{row['concat_kv']:.1f}", f"{row['in_place_gain']:.2f}x"]
            summary.append(row)
            print(f"| {batch} | {dtype} | " + " | ".join(cells) + " | >= 3x |")
        if set(args.dtypes) == {"fp32", "bf16"}:
            ratio = tok_s("trajlab bf16", batch) / tok_s("hf-generate fp32", batch)
            print(f"batch {batch}: trajlab default (bf16 decode copy) vs hf-generate fp32 "
                  f"{ratio:.2f}x")  # fmt: skip
    print(
        "greedy identity (16 distinct prompts, 64 tokens): "
        + ", ".join(f"{d} {identity[d]}/16" for d in args.dtypes)
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(
            json.dumps(
                {
                    "results": results,
                    "summary": summary,
                    "greedy_identical_rows": identity,
                    "context_tokens": args.context_tokens,
                    "cores": os.cpu_count(),
                    "threads": torch.get_num_threads(),
                    "load_average": os.getloadavg()[0],
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
