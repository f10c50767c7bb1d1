"""The demo: the default model (SmolLM2-135M-Instruct) learns to use the Python tool.

    python -m trajlab.demo              # what `make demo` runs (timing: see docs/training.md)
    python -m trajlab.demo --quick      # a few-minute version with smaller numbers

Task: `arith`, multi-digit arithmetic (products and sums of 4-6 digit numbers, some as
word problems) where one line of Python gets the exact answer and a 135M model cannot.
Protocol `code`: the model writes ```python ... ```, the sandbox's output comes back in
```output ... ```, and the answer is \\boxed{}.

Stages, each printed as it runs:
  0. held-out evaluation of the untouched model (greedy, N examples of the test split);
  1. cold start data: for training questions, a scripted "teacher" writes the obviously
     right program (built from the question's numbers), the REAL sandbox runs it, and the
     teacher copies the printed number into \\boxed{}. These episodes go through the same
     agent loop as RL rollouts (trajlab.engines.fake.FakeEngine as the engine), so they are
     token-exact trajectories with the tool output masked out of the loss;
  2. `trajlab sft` on them (model tokens only), then held-out evaluation;
  3. `trajlab train`: GRPO on the SFT model with the real sandbox, then held-out evaluation;
  4. a summary table of accuracy and tool-call rate after each stage, where everything was
     written, and the command that opens the viewer.

Honesty notes: the held-out questions come from the test split, which never shares a
question with the training split; evaluation is greedy and identical in every stage.
The SFT data are written by a script, not by a stronger model: this is a cold start in
the call format, as R1-Searcher++ and Tool-Star do with curated trajectories.

What it does not do: tune anything per machine; the budget knobs are the flags below.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from trajlab.agent.loop import AgentConfig, AgentLoop
from trajlab.engines.base import SamplingParams
from trajlab.types import Example, write_jsonl

AGENT = dict(
    protocol="code",
    tools=["python"],
    max_turns=3,
    max_tool_calls=2,
    max_new_tokens_per_turn=80,
    max_new_tokens=200,
)


def say(msg: str) -> None:
    print(msg, flush=True)


# -- the scripted teacher ------------------------------------------------------------


def solution_code(ex: Example) -> str:
    """The program a careful person would write for an arith question, from its numbers."""
    params = ex.meta.get("params", {})
    style = ex.meta.get("style", "expression")
    if style == "expression":
        expr = ""
        for i, (sign, factors) in enumerate(params["terms"]):
            term = " * ".join(str(f) for f in factors)
            expr += term if i == 0 else (" + " if sign > 0 else " - ") + term
        return f"print({expr})"
    n = params["numbers"]
    if style == "word0":
        return f"crates = {n[0]}\nper_crate = {n[1]}\nloose = {n[2]}\nprint(crates * per_crate + loose)"
    if style == "word1":
        return f"per_day = {n[0]}\ndays = {n[1]}\nsold = {n[2]}\nprint(per_day * days - sold)"
    if style == "word2":
        return f"print({n[0]} * {n[1]} + {n[2]} * {n[3]})"
    raise ValueError(f"no scripted solution for arith style {style!r}")


_OUTPUT = re.compile(r"```output\n(.*?)\n```", re.DOTALL)


def teacher(examples: dict[str, Example]):
    """A FakeEngine responder: first turn writes code, second turn boxes the printed result."""

    def respond(context: str) -> str:
        question = context.rsplit("user\n", 1)[-1]  # ChatML: the last user turn
        outputs = _OUTPUT.findall(question)
        if outputs:
            return f"The result is {outputs[-1].strip()}. The answer is \\boxed{{{outputs[-1].strip()}}}."
        for q, ex in examples.items():
            if q in question:
                return f"I will compute this with Python.\n```python\n{solution_code(ex)}\n```\n"
        raise RuntimeError("teacher got a prompt it did not build")

    return respond


def build_sft_data(
    model_dir: Path, examples: list[Example], tools: dict[str, Any], out: Path
) -> Path:
    """Run the scripted teacher through the real agent loop and sandbox; keep correct episodes."""
    from trajlab.build import build_scorer
    from trajlab.engines.fake import FakeEngine
    from trajlab.models import load_tokenizer

    tok = load_tokenizer(model_dir)
    engine = FakeEngine(tok, teacher({ex.question: ex for ex in examples}))
    loop = AgentLoop(engine, tools, AgentConfig(**AGENT), sampling=SamplingParams(temperature=0))
    trajs = loop.run([(ex, 0) for ex in examples])
    score = build_scorer("math_correct")
    for ex, t in zip(examples, trajs):
        score(ex, t)
    good = [t for t in trajs if t.metadata["correct"]]
    path = out / "sft_data.jsonl"
    write_jsonl(path, good)
    say(f"  built {len(good)}/{len(trajs)} correct teacher trajectories -> {path}")
    return path


# -- evaluation ---------------------------------------------------------------------


def held_out_eval(
    model_spec: str, examples: list[Example], tools: dict[str, Any], out: Path, label: str
) -> dict:
    from trajlab.engines.hf import HFEngine
    from trajlab.eval.harness import EvalConfig, evaluate
    from trajlab.models import load_model, load_tokenizer

    t0 = time.perf_counter()
    say(f"[{label}] evaluating {model_spec} on {len(examples)} held-out questions (greedy)")
    engine = HFEngine(
        load_model(model_spec), load_tokenizer(model_spec), max_batch_size=len(examples)
    )
    cfg = EvalConfig(
        model=str(model_spec),
        task="arith",
        split="test",
        limit=len(examples),
        temperature=0.0,
        batch_size=len(examples),
        out=str(out),
        progress=True,
        agent=AgentConfig(**AGENT),
    )
    m = evaluate(cfg, engine=engine, tools=tools, examples=examples)
    say(
        f"[{label}] accuracy {m['accuracy']:.3f} | tool-call rate {m['tool_call_rate']:.3f} | "
        f"{time.perf_counter() - t0:.0f}s"
    )
    return m


def python_tools() -> dict[str, Any]:
    try:
        from trajlab.tools.python import PythonTool
    except ImportError:  # adapter until trajlab.tools.python lands: the same sandbox pool
        return {"python": _SandboxPythonTool()}
    return {"python": PythonTool()}


class _SandboxPythonTool:
    name = "python"

    def __init__(self) -> None:
        from trajlab.tools.sandbox import SandboxConfig, SandboxPool

        self.pool = SandboxPool(SandboxConfig(timeout_s=5))

    def run(self, args: dict[str, Any]):
        from trajlab.tools.base import ToolResult

        r = self.pool.run(args["code"])
        ok = r.status == "ok"
        text = r.stdout if ok else (r.stderr.strip().splitlines() or [r.status])[-1]
        return ToolResult(output=text.strip(), ok=ok, status=r.status, latency_s=r.latency_s)

    def close(self) -> None:
        self.pool.close()


# -- main ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trajlab.demo", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="", help="run directory (default: runs/demo-<time>)")
    p.add_argument("--model", default="default", help="model spec (default: SmolLM2-135M-Instruct)")
    p.add_argument("--eval-size", type=int, default=40, help="held-out questions per evaluation")
    p.add_argument(
        "--sft-size", type=int, default=48, help="teacher trajectories for the cold start"
    )
    p.add_argument("--sft-epochs", type=int, default=1)
    p.add_argument("--rl-steps", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="small numbers: a few minutes, noisier")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = p.parse_args(argv)
    if args.quick:
        args.eval_size, args.sft_size, args.sft_epochs, args.rl_steps = 20, 24, 1, 1

    import torch

    from trajlab.memory import release_memory
    from trajlab.models import resolve_model_dir
    from trajlab.train.config import SFTConfig, load_train_config
    from trajlab.train.rl import load_examples, train
    from trajlab.train.sft import sft

    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    out = Path(args.out or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    base = resolve_model_dir(args.model)
    held_out = load_examples("arith", "test", args.eval_size, 0)
    train_examples = load_examples("arith", "train", 400, 0)
    tools = python_tools()
    results: dict[str, dict] = {}
    timings: dict[str, float] = {}
    try:
        t0 = time.perf_counter()
        results["base model"] = held_out_eval(
            str(base), held_out, tools, out / "eval_base", "0 base"
        )
        timings["eval base"] = time.perf_counter() - t0
        release_memory()  # the stage's model and optimizer are garbage now

        t0 = time.perf_counter()
        say(f"[1 data] scripted teacher + real sandbox on {args.sft_size} training questions")
        data = build_sft_data(base, train_examples[: args.sft_size], tools, out)
        say("[2 sft] supervised cold start on the teacher trajectories (tool output masked)")
        sft_cfg = SFTConfig(
            data=[str(data)],
            out=str(out / "sft"),
            epochs=args.sft_epochs,
            batch_size=8,
            micro_batch_size=4,  # bounds activation memory (peak RSS, docs/performance.md)
            threads=args.threads,
        )
        sft_cfg.model.model = str(base)
        sft_cfg.optim.lr = 5e-5
        sft_cfg.optim.warmup_steps = 2
        sft_cfg.optim.schedule = "linear"
        sft_cfg.optim.min_lr_ratio = 0.1
        sft_result = sft(sft_cfg)
        timings["sft"] = time.perf_counter() - t0
        release_memory()
        sft_model = sft_result["model_dir"]

        t0 = time.perf_counter()
        results["after SFT"] = held_out_eval(sft_model, held_out, tools, out / "eval_sft", "2 sft")
        timings["eval sft"] = time.perf_counter() - t0
        release_memory()

        t0 = time.perf_counter()
        say(f"[3 rl] GRPO for {args.rl_steps} steps with the real sandbox")
        rl_dir = out / "rl"
        overrides = [
            f"out={rl_dir}",
            f"model.model={sft_model}",
            f"steps={args.rl_steps}",
            f"threads={args.threads}",
            "data.task=arith",
            "data.size=400",
            "rollout.prompts_per_step=4",
            "rollout.group_size=4",
            "rollout.temperature=1.0",
            "optim.lr=2e-6",
            "algo.micro_batch_size=4",  # one prompt group: its prompt runs once
            "log.checkpoint_every=1000",
            "log.keep_checkpoints=1",
            "eval.every=0",
            *[f"agent.{k}={json.dumps(v)}" for k, v in AGENT.items()],
        ]
        rl_cfg = load_train_config(None, overrides)
        train(rl_cfg, examples=train_examples[args.sft_size :], tools=tools)
        timings["rl"] = time.perf_counter() - t0
        release_memory()
        ckpt_model = next((rl_dir / "checkpoints").glob("step_*/model"))
        t0 = time.perf_counter()
        results["after SFT + RL"] = held_out_eval(
            str(ckpt_model), held_out, tools, out / "eval_rl", "3 rl"
        )
        timings["eval rl"] = time.perf_counter() - t0
    finally:
        for t in tools.values():
            t.close()

    total = time.perf_counter() - t_start
    say("")
    say(f"held-out arith ({len(held_out)} questions, greedy), {args.model}:")
    say(f"  {'stage':<16} {'accuracy':>9} {'tool-call rate':>15}")
    for label, m in results.items():
        say(f"  {label:<16} {m['accuracy']:>9.3f} {m['tool_call_rate']:>15.3f}")
    say(
        "time: "
        + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items())
        + f"; total {total / 60:.1f} min"
    )
    (out / "demo_results.json").write_text(
        json.dumps(
            {
                "results": {
                    k: {"accuracy": v["accuracy"], "tool_call_rate": v["tool_call_rate"]}
                    for k, v in results.items()
                },
                "timings_s": timings,
                "total_s": total,
            },
            indent=2,
        )
    )
    say(f"run written to {out}")
    from trajlab.cli import trajlab_command

    say(
        f"open it with: {trajlab_command()} view {out / 'rl'} {out / 'eval_base'} {out / 'eval_rl'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
