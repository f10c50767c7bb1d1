"""The demo: the default model (SmolLM2-135M-Instruct) learns to use the Python tool.

    python -m trajlab.demo              # what `make demo` runs (timing: README, docs/results.md)
    python -m trajlab.demo --seed 1     # another seed of the cold start and of RL
    python -m trajlab.demo --quick      # a few-minute version with smaller numbers

Task: `arith`, multi-digit arithmetic (products and sums of 4-6 digit numbers, as bare
expressions or as short word problems) where one line of Python gets the exact answer
and a 135M model cannot. Protocol `code`: the model writes ```python ... ```, the
sandbox's output comes back in ```output ... ```, and the answer is \\boxed{}.

Stages, each in its own process (so no stage's memory stays behind for the next one) and
each printed as it runs:
  0. held-out evaluation of the untouched model (greedy, the first N questions of the test
     split: about two thirds bare expressions, one third word problems);
  1. a cold start in the call format on bare expressions only: for 32 training questions a
     scripted "teacher" writes print(<the expression>), the REAL sandbox runs it, and the
     teacher copies the printed number into \\boxed{}. The episodes go through the same
     agent loop as RL rollouts (trajlab.engines.fake.FakeEngine as the engine), so they
     are token-exact trajectories with the tool output masked out of the loss. No word
     problem is shown;
  2. `trajlab sft` on them (model tokens only, 4 optimizer steps), then held-out evaluation;
  3. GRPO (`trajlab train`) from the SFT model with the real sandbox on training word
     problems, the part the cold start left out, then held-out evaluation. Why this split
     (docs/results.md, section 2): after the cold start the model calls the tool on every
     question and about half of the word-problem groups mix right and wrong samples, so
     GRPO has signal there; expression groups are all right and would teach nothing;
  4. a table of accuracy with its 95 % interval, tool-call rate, time and right answers by
     kind of question per stage, one line saying which stage produced which gain (paired
     bootstrap over the same held-out questions, trajlab.eval.compare), where everything
     was written, and the command that opens the viewer.

Honesty notes: the held-out questions come from the test split, which never shares a
question with the training split; evaluation is greedy and identical in every stage. The
SFT data are written by a script, not by a stronger model: a cold start in the call
format, as R1-Searcher++ and Tool-Star do with curated trajectories. An interval over
questions says how much the 40 questions could move the number; the spread over seeds is
in docs/results.md (`--seed`).

What it does not do: tune anything per machine; the budget knobs are the flags below.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import re
import sys
import time
from pathlib import Path
from typing import Any

from trajlab.agent.loop import AgentConfig
from trajlab.types import Example

AGENT = dict(
    protocol="code",
    tools=["python"],
    max_turns=3,
    max_tool_calls=2,
    max_new_tokens_per_turn=96,
    max_new_tokens=224,
)
TRAIN_POOL = 600  # training questions drawn from the train split


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
    model_dir: str, examples: list[Example], tools: dict[str, Any], out: Path
) -> Path:
    """Run the scripted teacher through the real agent loop and sandbox; keep correct episodes."""
    from trajlab.agent.loop import AgentLoop
    from trajlab.build import build_scorer
    from trajlab.engines.base import SamplingParams
    from trajlab.engines.fake import FakeEngine
    from trajlab.models import load_tokenizer
    from trajlab.types import write_jsonl

    engine = FakeEngine(load_tokenizer(model_dir), teacher({ex.question: ex for ex in examples}))
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


# -- stages (each runs in its own process) ---------------------------------------------


def eval_config(model: str, out: Path, n: int, threads: int = 0) -> Any:
    from trajlab.eval.harness import EvalConfig
    from trajlab.tools.config import ToolsConfig
    from trajlab.tools.python import PythonToolConfig

    return EvalConfig(
        model=model,
        task="arith",
        split="test",
        limit=n,
        temperature=0.0,
        batch_size=n,
        threads=threads,
        decode_dtype="auto",  # bf16 where the CPU has it: every stage alike, twice as fast
        out=str(out),
        progress=True,
        agent=AgentConfig(**AGENT),
        tools=ToolsConfig(python=PythonToolConfig(timeout_s=5)),
    )


def stage_eval(a: dict[str, Any], model: str, out: str) -> dict[str, Any]:
    from trajlab.eval.harness import evaluate

    m = evaluate(eval_config(model, Path(out), a["eval_size"], a["threads"]), argv=a["argv"])
    keep = ("accuracy", "accuracy_ci", "tool_call_rate", "tool_call_rate_ci")
    return {**{k: m[k] for k in keep}, "by_kind": right_by_kind(Path(out), a["eval_size"])}


def right_by_kind(run: Path, n: int) -> dict[str, list[int]]:
    """[right, asked] per kind of held-out question: bare expressions and word problems."""
    from trajlab.tasks import load_task
    from trajlab.types import iter_jsonl

    kind = {
        ex.id: "expressions" if ex.meta["style"] == "expression" else "word problems"
        for ex in load_task("arith", split="test", n=n, seed=0)
    }
    counts = {k: [0, 0] for k in ("expressions", "word problems")}
    for t in iter_jsonl(run / "trajectories.jsonl"):
        c = counts[kind[t.example_id]]
        c[0] += bool(t.metadata.get("correct"))
        c[1] += 1
    return counts


def stage_sft(a: dict[str, Any], base: str, out: str) -> dict[str, Any]:
    from trajlab.build import build_tools
    from trajlab.tasks import load_task
    from trajlab.tools.config import ToolsConfig
    from trajlab.train.config import SFTConfig
    from trajlab.train.sft import sft

    pool = load_task("arith", split="train", n=TRAIN_POOL, seed=0)
    chosen = [ex for ex in pool if ex.meta["style"] in a["sft_styles"]][: a["sft_size"]]
    tools = build_tools(["python"], AgentConfig(**AGENT), ToolsConfig())
    try:
        data = build_sft_data(base, chosen, tools, Path(out))
    finally:
        for t in tools.values():
            t.close()
    cfg = SFTConfig(
        data=[str(data)],
        out=str(Path(out) / "sft"),
        epochs=a["sft_epochs"],
        batch_size=8,
        micro_batch_size=8,  # one pass over the shared system prompt (models._hidden_states)
        seed=a["seed"],
        threads=a["threads"],
    )
    cfg.model.model = base
    cfg.model.gradient_checkpointing = True  # same gradient, activations recomputed
    cfg.optim.lr = 5e-5
    cfg.optim.warmup_steps = 2
    cfg.optim.schedule = "linear"
    cfg.optim.min_lr_ratio = 0.1
    return {"model_dir": sft(cfg, argv=a["argv"])["model_dir"]}


FULL = [
    "optim.lr=1e-5",
    # Memory (docs/performance.md, target 4): activations are recomputed in the backward
    # pass. A micro-batch is a whole group of 8, whose shared prompt (about 210 of its
    # rows' 300 tokens) runs once (models._hidden_states); the gradient is the same.
    "model.gradient_checkpointing=true",
    "algo.micro_batch_size=8",
]
# --rl-lora (docs/performance.md, section 4): a rank-16 adapter on every linear layer keeps
# no gradient or AdamW moments for the base weights, so activations need no recomputation
# and four rows of a group share one prompt pass; LoRA takes about ten times the learning
# rate of full fine-tuning.
LORA = [
    "model.lora=true",
    "optim.lr=2e-4",
    "model.gradient_checkpointing=false",
    "algo.micro_batch_size=4",
]


def rl_overrides(a: dict[str, Any], model: str, out: str) -> list[str]:
    """GRPO as in configs/zero_rl_arith.yaml, shorter, with smaller micro-batches."""
    return [
        f"out={out}",
        f"model.model={model}",
        f"steps={a['rl_steps']}",
        f"seed={a['seed']}",
        f"threads={a['threads']}",
        "data.task=arith",
        f"data.size={TRAIN_POOL}",
        f"data.options={{word_prob: {a['rl_word_prob']}}}",
        "rollout.prompts_per_step=8",
        "rollout.group_size=8",
        "rollout.temperature=0.6",
        "tools.python.timeout_s=5",
        "reward.weights={math_correct: 1.0}",
        "filters.zero_variance=true",
        *(LORA if a.get("rl_lora") else FULL),
        "log.checkpoint_every=1000",
        "log.keep_checkpoints=1",
        "eval.every=0",
        *[f"agent.{k}={json.dumps(v)}" for k, v in AGENT.items()],
    ]


def stage_rl(a: dict[str, Any], model: str, out: str) -> dict[str, Any]:
    from trajlab.train.config import load_train_config
    from trajlab.train.rl import train

    train(load_train_config(None, rl_overrides(a, model, out)), argv=a["argv"])
    step = next((Path(out) / "checkpoints").glob("step_*"))
    # A LoRA run checkpoints its adapter; trajlab.models merges it into the SFT model.
    return {"model_dir": str(step / ("adapter" if (step / "adapter").is_dir() else "model"))}


STAGES = {"eval": stage_eval, "sft": stage_sft, "rl": stage_rl}


def _child(name: str, a: dict[str, Any], args: tuple, result_path: str) -> None:
    # Threads: every stage's config gets a["threads"] (its ThreadGovernor applies it).
    result = STAGES[name](a, *args)
    Path(result_path).write_text(json.dumps(result))


def run_stage(name: str, a: dict[str, Any], *args: str) -> dict[str, Any]:
    """Run one stage in a fresh process (spawned: nothing of this process's heap is copied)
    and return what it wrote; its exit hands every page it used back to the system."""
    from trajlab import demo  # by module name: `python -m trajlab.demo` runs as __main__

    result = Path(a["out"]) / f".stage-{name}-{time.monotonic_ns()}.json"
    ctx = multiprocessing.get_context("spawn")
    p = ctx.Process(target=demo._child, args=(name, a, args, str(result)), name=f"demo-{name}")
    p.start()
    p.join()
    if p.exitcode != 0 or not result.exists():
        raise RuntimeError(f"demo stage {name!r} failed (exit code {p.exitcode}); see above")
    out = json.loads(result.read_text())
    result.unlink()
    return out


# -- main ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m trajlab.demo", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="", help="run directory (default: runs/demo-<time>)")
    p.add_argument("--model", default="default", help="model spec (default: SmolLM2-135M-Instruct)")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the cold start and of RL (default: 0)"
    )
    p.add_argument(
        "--eval-size", type=int, default=40, help="held-out questions per evaluation (default: 40)"
    )
    p.add_argument(
        "--sft-size",
        type=int,
        default=32,
        help="teacher trajectories for the cold start (default: 32, four SFT steps of 8)",
    )
    p.add_argument(
        "--sft-styles",
        default="expression",
        help="arith styles the teacher solves, comma-separated: expression, word0, word1, word2 "
        "(default: expression)",
    )
    p.add_argument(
        "--sft-epochs", type=int, default=1, help="SFT passes over the data (default: 1)"
    )
    p.add_argument("--rl-steps", type=int, default=6, help="GRPO steps (default: 6)")
    p.add_argument(
        "--rl-word-prob",
        type=float,
        default=1.0,
        help="share of word problems among the RL training questions (default: 1.0: the "
        "part the cold start does not show)",
    )
    p.add_argument(
        "--rl-lora",
        action="store_true",
        help="GRPO trains a LoRA adapter (rank 16, lr 2e-4) instead of every weight: measured "
        "in docs/performance.md, section 4 (default: off)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a plumbing check in a few minutes (20 questions, 8 episodes, 2 RL steps): too "
        "small to show the RL gain",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads (0: one per core no other process is using)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.eval_size, args.sft_size, args.rl_steps = 20, 8, 2
    return args


class Stages:
    """Runs the stages in order, keeping each evaluation's metrics and every stage's time."""

    def __init__(self, a: dict[str, Any], out: Path):
        self.a, self.out = a, out
        self.results: dict[str, dict] = {}
        self.timings: dict[str, float] = {}

    def run(self, label: str, name: str, *args: str) -> dict[str, Any]:
        t0 = time.perf_counter()
        r = run_stage(name, self.a, *args)
        self.timings[label] = time.perf_counter() - t0
        return r

    def evaluate(self, label: str, model: str, folder: str) -> None:
        say(f"[{label}] evaluating on {self.a['eval_size']} held-out questions (greedy)")
        m = self.run(f"eval {label}", "eval", model, str(self.out / folder))
        self.results[label] = {
            **m,
            "run": str(self.out / folder),
            "time_s": self.timings[f"eval {label}"],
        }
        say(f"[{label}] accuracy {_with_ci(m, 'accuracy')} | tool-call rate "
            f"{m['tool_call_rate']:.3f} | {_kinds_text(m['by_kind'])}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from trajlab.eval.compare import compare_runs
    from trajlab.models import resolve_model_dir

    t_start = time.perf_counter()
    out = Path(args.out or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    a = {
        **vars(args),
        "out": str(out),
        "sft_styles": [s.strip() for s in args.sft_styles.split(",") if s.strip()],
        "argv": ["python", "-m", "trajlab.demo", *(argv if argv is not None else sys.argv[1:])],
    }
    base = str(resolve_model_dir(args.model))  # converts the default model once, here
    st = Stages(a, out)
    st.evaluate("base model", base, "eval_base")
    say(
        f"[cold start] scripted teacher + real sandbox on {args.sft_size} training questions "
        f"({', '.join(a['sft_styles'])}), then SFT (tool output masked)"
    )
    sft_model = st.run("sft", "sft", base, str(out))["model_dir"]
    st.evaluate("after SFT", sft_model, "eval_sft")
    say(
        f"[rl] GRPO for {args.rl_steps} steps from the SFT model, real sandbox, on training "
        f"questions that are {args.rl_word_prob:.0%} word problems"
    )
    rl_model = st.run("rl", "rl", sft_model, str(out / "rl"))["model_dir"]
    st.evaluate("after SFT + RL", rl_model, "eval_rl")
    gains = {
        "sft": _gain(compare_runs(out / "eval_base", out / "eval_sft")),
        "rl": _gain(compare_runs(out / "eval_sft", out / "eval_rl")),
    }
    report(args, out, st.results, st.timings, gains, time.perf_counter() - t_start)
    return 0


def report(
    args: argparse.Namespace,
    out: Path,
    results: dict[str, dict],
    timings: dict[str, float],
    gains: dict[str, dict],
    total: float,
) -> None:
    """The per-stage table, the gains, demo_results.json and the commands that open the runs."""
    say("")
    say(f"held-out arith ({args.eval_size} questions, greedy), {args.model}, seed {args.seed}:")
    say(
        f"  {'stage':<16} {'accuracy [95% interval]':>26} {'tool-call rate':>15} {'time':>7}  right by kind"
    )
    stage_time = {"base model": 0.0, "after SFT": timings["sft"], "after SFT + RL": timings["rl"]}
    for label, m in results.items():
        t = stage_time[label] + m["time_s"]
        say(f"  {label:<16} {_with_ci(m, 'accuracy'):>26} {m['tool_call_rate']:>15.3f} "
            f"{t:>6.0f}s  {_kinds_text(m['by_kind'])}")  # fmt: skip
    stages = list(results.values())
    say(
        f"gains (paired over the same questions): cold start {_gain_text(gains['sft'])}"
        f"{_kinds_gain(stages[0], stages[1])}; RL over SFT {_gain_text(gains['rl'])}"
        f"{_kinds_gain(stages[1], stages[2])}"
    )
    say(f"total {total / 60:.1f} min")
    summary = {
        "seed": args.seed,
        "eval_size": args.eval_size,
        "results": results,
        "gains": gains,
        "timings_s": timings,
        "total_s": total,
    }
    (out / "demo_results.json").write_text(json.dumps(summary, indent=2))
    say(f"run written to {out}")
    from trajlab.flags import trajlab_command

    cmd = trajlab_command()
    runs = " ".join(str(out / d) for d in ("rl", "eval_base", "eval_sft", "eval_rl"))
    say(f"open it with: {cmd} view {runs}")
    say(f"compare two stages: {cmd} compare {out / 'eval_sft'} {out / 'eval_rl'}")


def _kinds_text(by_kind: dict[str, list[int]]) -> str:
    return ", ".join(f"{k} {right}/{n}" for k, (right, n) in by_kind.items())


def _kinds_gain(before: dict[str, Any], after: dict[str, Any]) -> str:
    parts = [
        f"{k} {after['by_kind'][k][0] - right:+d}" for k, (right, _) in before["by_kind"].items()
    ]
    return f" ({', '.join(parts)})"


def _with_ci(m: dict[str, Any], key: str) -> str:
    lo, hi = m[f"{key}_ci"]
    return f"{m[key]:.3f} [{lo:.3f}, {hi:.3f}]"


def _gain(comparison: dict[str, Any]) -> dict[str, Any]:
    acc = next(r for r in comparison["metrics"] if r["metric"] == "accuracy")
    return {"diff": acc["diff"], "ci": acc["ci"], "within_noise": acc["within_noise"]}


def _gain_text(g: dict[str, Any]) -> str:
    lo, hi = g["ci"]
    verdict = "within noise" if g["within_noise"] else "a real gain" if g["diff"] > 0 else "a loss"
    return f"{g['diff']:+.3f} [{lo:+.3f}, {hi:+.3f}], {verdict}"


if __name__ == "__main__":
    sys.exit(main())
