"""A full RL step (generate, reward, train): trajlab's trainer against TRL's GRPOTrainer.

    .venv/bin/python benchmarks/bench_rl_step.py                          # 4 steps, the first is warm-up
    .venv/bin/python benchmarks/bench_rl_step.py --steps 6 --json runs/bench_rl_step.json
    .venv/bin/python benchmarks/bench_rl_step.py --trl-python /path/to/venv/bin/python
    .venv/bin/python benchmarks/bench_rl_step.py --trajlab-set optim.autocast=bf16

What is measured (issue 6, target 1): completion tokens per second of wall time of a whole
RL step on both systems, with the same workload:

  * model: SmolLM2-135M-Instruct, the local directory of trajlab's `default` model
    (`python -m trajlab.models path default`); nothing is downloaded, HF_HUB_OFFLINE=1;
  * prompts: questions of trajlab's built-in `arith` task, in the order trajlab's prompt
    sampler draws them, rendered as the same chat messages (trajlab's prompt for a run
    without tools) through the model's chat template on both sides;
  * 2 prompts x 8 samples per step, at most 128 new tokens, temperature 1.0, top_p 1.0,
    no top-k, no KL (TRL beta=0; trajlab algo.kl=none), one optimizer step per batch
    (TRL num_iterations=1; trajlab epochs=1, mini_batches=1), full fine-tuning, AdamW at
    the same learning rate, constant schedule, same gradient clipping;
  * reward: 1.0 if the last number in the completion equals the gold answer, else 0.0
    (`exact_answer_reward` below, called by both sides);
  * the loss normaliser and advantage scaling follow trajlab's resolved config
    (token-mean -> TRL loss_type=dapo; grpo -> scale_rewards=group); bf16 is on for TRL
    only when trajlab's config uses bf16 (autocast or weights; `auto` resolved on this CPU, see
    trajlab.models.native_bf16), and gradient checkpointing
    (TRL's default is on) follows trajlab's config, so both sides run the same precision.

Each system runs in its own subprocess, one after the other (never together), with the same
torch thread count. TRL lives in its own virtualenv (TRL pins its own transformers): by
default benchmarks/.trl-venv, created on first use with pinned versions (torch stays at
2.13.0: a looser pin pulls gigabytes of CUDA wheels); `--trl-python` reuses an interpreter.

Step time: trajlab's `time/step` from metrics.jsonl (rollout, reward, logprobs, update,
log; the checkpoint after the last step is outside it); TRL's wall time from a
TrainerCallback's on_step_begin to on_step_end (generation, reward, loss, optimizer step).
Completion tokens: trajlab's `generated_tokens`; for TRL, the completion ids the reward
function receives (EOS included, as trajlab counts it), checked against TRL's logged
`completions/mean_length`. The first `--warmup` steps of each side are excluded.
tok/s = sum(tokens) / sum(seconds) over the timed steps; ratio = trajlab / TRL.

Departures: trajlab keeps its defaults for everything the workload does not fix (engine,
micro-batch size, entropy logging, trajectory files); `--trajlab-set key=value` changes
them, and TRL follows where it has an equivalent (precision, checkpointing, loss). TRL keeps
its own defaults otherwise (model.generate, one forward/backward over the 16 completions).

Non-goals: a timed unit test (timings are noisy on shared machines: the load average is
printed with the table), GPU runs, multi-turn or tool rollouts (that is trajlab's own work,
TRL's GRPOTrainer has nothing equivalent on this workload).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VENV = ROOT / "benchmarks" / ".trl-venv"
# The TRL environment: torch pinned to trajlab's version (the CPU wheel); TRL and the
# transformers it was measured with pinned so reruns compare like with like.
TRL_PACKAGES = (
    "torch==2.13.0",
    "trl==1.16.0",
    "transformers==5.23.0",
    "accelerate",
    "datasets",
)
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}
# trajlab config keys the workload fixes; set them with this script's flags, so both sides change.
FIXED_KEYS = (
    "out",
    "steps",
    "seed",
    "threads",
    "model.model",
    "model.lora",
    "data.task",
    "data.split",
    "data.size",
    "rollout.prompts_per_step",
    "rollout.group_size",
    "rollout.temperature",
    "rollout.top_p",
    "rollout.top_k",
    "agent.tools",
    "agent.max_turns",
    "agent.max_new_tokens_per_turn",
    "agent.max_new_tokens",
    "reward.weights",
    "algo.kl",
    "algo.epochs",
    "algo.mini_batches",
    "optim.lr",
    "optim.schedule",
    "optim.warmup_steps",
    "eval.every",
)
LOSS_TYPE = {
    "token-mean": "dapo",
    "seq-mean-token-mean": "grpo",
    "seq-mean-token-sum-norm": "dr_grpo",
}
SCALE_REWARDS = {"grpo": "group", "dr_grpo": "none"}


# ---------------------------------------------------------------------------------------
# Pure helpers (tests/test_bench_rl_step.py)
# ---------------------------------------------------------------------------------------

# An integer or decimal not glued to a word, with optional sign and thousands commas.
_NUMBER = re.compile(r"(?<![\w.])(-?)(\d{1,3}(?:,\d{3})+(?!\d)|\d+)(\.\d+)?")


def last_number(text: str) -> Fraction | None:
    """The value of the last number in `text` ("-1,234.5" -> -2469/2), or None if there is none."""
    found = _NUMBER.findall(text.replace("\u2212", "-"))
    if not found:
        return None
    sign, whole, frac = found[-1]
    return Fraction(sign + whole.replace(",", "") + frac)


def exact_answer_reward(completion: str, gold: str) -> float:
    """1.0 if the last number in the completion equals the gold answer, else 0.0."""
    value = last_number(completion)
    return 1.0 if value is not None and value == Fraction(gold.replace(",", "")) else 0.0


def trajlab_reward(example: Any, trajectory: Any) -> float:
    """The benchmark reward as a trajlab reward plugin (`bench_rl_step:trajlab_reward`)."""
    return exact_answer_reward(trajectory.model_text, example.answer)


def summarize(steps: list[dict[str, float]], warmup: int) -> dict[str, float]:
    """Throughput of the steps after the first `warmup` ones.

    steps: [{"step": k, "seconds": s, "tokens": n}, ...] in step order.
    """
    timed = steps[warmup:]
    if not timed:
        raise ValueError(f"{len(steps)} steps recorded, none left after {warmup} warm-up step(s)")
    seconds = sum(s["seconds"] for s in timed)
    tokens = sum(s["tokens"] for s in timed)
    return {
        "steps_timed": len(timed),
        "mean_s_per_step": seconds / len(timed),
        "tokens_per_step": tokens / len(timed),
        "tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
    }


def trajlab_steps(metrics_lines: list[str]) -> list[dict[str, float]]:
    """Per-step records from trajlab's metrics.jsonl lines (evaluation-only rows skipped)."""
    out = []
    for line in metrics_lines:
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("step", 0) < 1 or "time/step" not in row:
            continue
        rec = {
            "step": row["step"],
            "seconds": float(row["time/step"]),
            "tokens": float(row["generated_tokens"]),
        }
        rec.update(
            {k: float(v) for k, v in row.items() if k.startswith("time/") and k != "time/step"}
        )
        out.append(rec)
    return out


def check_overrides(overrides: list[str]) -> None:
    """Refuse --trajlab-set keys the workload fixes (they would make the two sides differ)."""
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if "=" not in item:
            raise SystemExit(f"--trajlab-set {item!r} must look like key=value")
        if key in FIXED_KEYS or any(key.startswith(k + ".") for k in FIXED_KEYS):
            raise SystemExit(
                f"--trajlab-set {key} is fixed by the workload; use this script's flags "
                "(--steps, --prompts, --group-size, --max-new-tokens, --lr, --threads, --seed) "
                "so both systems change together"
            )


def format_table(results: dict[str, Any]) -> str:
    """The table printed at the end: one row per system, then the machine."""
    lines = [
        f"{'system':<10} {'precision':<10} {'steps':>5} {'s/step':>8} {'tok/step':>9} "
        f"{'tok/s':>8} {'vs TRL':>7}"
    ]
    trl = results["systems"].get("trl")
    for name, r in results["systems"].items():
        s = r["summary"]
        ratio = (
            f"{s['tokens_per_s'] / trl['summary']['tokens_per_s']:.2f}x"
            if trl and trl["summary"]["tokens_per_s"] > 0
            else "-"
        )
        lines.append(
            f"{name:<10} {r['precision']:<10} {s['steps_timed']:>5} {s['mean_s_per_step']:>8.2f} "
            f"{s['tokens_per_step']:>9.1f} {s['tokens_per_s']:>8.1f} {ratio:>7}"
        )
    m = results["machine"]
    lines.append("")
    if results.get("ratio") is not None:
        lines.append(f"ratio trajlab/TRL: {results['ratio']:.2f}x (target >= 10x)")
    lines.append(
        f"cores: {m['cpu_count']} ({m['cpu_model']}; avx512f {m['avx512f']}, amx {m['amx']}), "
        f"torch threads: {results['workload']['threads']}"
    )
    loads = ", ".join(
        f"{name} {r['load_before'][0]:.2f}->{r['load_after'][0]:.2f}"
        for name, r in results["systems"].items()
    )
    lines.append(f"load average (1 min) before->after: {loads}")
    for name, r in results["systems"].items():
        v = ", ".join(f"{k} {x}" for k, x in r["versions"].items())
        lines.append(f"{name}: {v}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# The parent: workload, environments, subprocesses, table
# ---------------------------------------------------------------------------------------


def workload_overrides(args: argparse.Namespace, out: Path) -> list[str]:
    """trajlab config overrides that fix the workload, then the user's --trajlab-set."""
    return [
        f"out={out}",
        f"steps={args.steps}",
        f"seed={args.seed}",
        f"threads={args.threads}",
        "model.model=default",
        "model.lora=false",
        "data.task=arith",
        "data.split=train",
        f"data.size={args.prompts * args.steps}",
        f"rollout.prompts_per_step={args.prompts}",
        f"rollout.group_size={args.group_size}",
        "rollout.temperature=1.0",
        "rollout.top_p=1.0",
        "rollout.top_k=0",
        "agent.tools=[]",
        "agent.max_turns=1",
        f"agent.max_new_tokens_per_turn={args.max_new_tokens}",
        f"agent.max_new_tokens={args.max_new_tokens}",
        'reward.weights={"bench_rl_step:trajlab_reward": 1.0}',
        "algo.kl=none",
        "algo.epochs=1",
        "algo.mini_batches=1",
        f"optim.lr={args.lr}",
        "optim.schedule=constant",
        "optim.warmup_steps=0",
        "eval.every=0",
        "log.plots=false",  # written after the loop; not timed, but slow to import
        *args.trajlab_set,
    ]


def build_workload(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Resolve trajlab's config and derive everything both workers need from it."""
    sys.path.insert(0, str(ROOT))
    from trajlab.models import native_bf16, resolve_model_dir
    from trajlab.tasks import load_task, render_messages
    from trajlab.train.config import load_train_config
    from trajlab.train.rl import PromptSampler

    overrides = workload_overrides(args, workdir / "trajlab-run")
    cfg = load_train_config(None, overrides)
    if cfg.algo.loss_agg not in LOSS_TYPE:
        raise SystemExit(f"algo.loss_agg={cfg.algo.loss_agg} has no TRL loss_type equivalent")
    if cfg.algo.advantage not in SCALE_REWARDS:
        raise SystemExit(
            f"algo.advantage={cfg.algo.advantage} has no TRL equivalent; use one of {list(SCALE_REWARDS)}"
        )
    pool = load_task(cfg.data.task, split=cfg.data.split, n=cfg.data.size, seed=cfg.data.seed)
    order = PromptSampler(pool, cfg.data.seed).next(args.prompts * args.steps)

    def messages(ex: Any) -> list[dict[str, str]]:  # AgentLoop's prompt builder, no tools
        if cfg.data.prompt == "question":
            return [{"role": "user", "content": ex.question}]
        return render_messages(ex, cfg.agent.protocol if cfg.agent.tools else "none")

    autocast = cfg.optim.autocast == "bf16" or (cfg.optim.autocast == "auto" and native_bf16())
    bf16 = autocast or cfg.model.dtype == "bfloat16"
    return {
        "model_path": str(resolve_model_dir("default")),
        "steps": args.steps,
        "prompts_per_step": args.prompts,
        "group_size": args.group_size,
        "max_new_tokens": args.max_new_tokens,
        "temperature": 1.0,
        "top_p": 1.0,
        "threads": args.threads,
        "seed": args.seed,
        "lr": args.lr,
        "trajlab_overrides": overrides,
        "pool": [ex.to_dict() for ex in pool],
        "prompts": [{"id": ex.id, "messages": messages(ex), "answer": ex.answer} for ex in order],
        "trl": {
            "loss_type": LOSS_TYPE[cfg.algo.loss_agg],
            "scale_rewards": SCALE_REWARDS[cfg.algo.advantage],
            "epsilon": cfg.algo.clip_low,
            "epsilon_high": cfg.algo.clip_high,
            "bf16": bf16,
            "dtype": cfg.model.dtype,
            "gradient_checkpointing": cfg.model.gradient_checkpointing,
            "max_grad_norm": cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else 1e9,
            "weight_decay": cfg.optim.weight_decay,
            "adam_beta1": cfg.optim.beta1,
            "adam_beta2": cfg.optim.beta2,
            "adam_epsilon": cfg.optim.eps,
        },
        "trajlab_precision": precision_name(cfg.model.dtype, autocast),
    }


def precision_name(dtype: str, autocast: bool) -> str:
    if dtype == "bfloat16":
        return "bf16"
    return "fp32+bf16ac" if autocast else "fp32"


def ensure_trl_python(trl_python: str | None, venv: Path) -> str:
    """The interpreter of the TRL environment; creates `venv` with pinned packages if missing."""
    if trl_python:
        if not Path(trl_python).exists():
            raise SystemExit(f"--trl-python {trl_python} does not exist")
        return trl_python
    py = venv / "bin" / "python"
    probe = [str(py), "-c", "import trl, torch, transformers, datasets, accelerate"]
    if py.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return str(py)
    print(f"creating the TRL environment in {venv} ({', '.join(TRL_PACKAGES)}) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    log = venv / "install.log"
    with open(log, "w") as f:
        rc = subprocess.run(
            [str(py), "-m", "pip", "install", *TRL_PACKAGES], stdout=f, stderr=subprocess.STDOUT
        ).returncode
    if rc != 0 or subprocess.run(probe, capture_output=True).returncode != 0:
        raise SystemExit(
            f"installing TRL into {venv} failed (log: {log}); fix it, or pass --trl-python "
            "with an interpreter that has trl, torch==2.13.0, transformers, datasets, accelerate"
        )
    return str(py)


def run_worker(
    system: str, python: str, workload_path: Path, workdir: Path, threads: int
) -> dict[str, Any]:
    """Run one system's worker subprocess; returns its result dict with load averages."""
    result_path = workdir / f"{system}.result.json"
    log_path = workdir / f"{system}.log"
    env = {**os.environ, **OFFLINE_ENV, "OMP_NUM_THREADS": str(threads)}
    env.pop("PYTHONPATH", None)
    cmd = [python, str(Path(__file__).resolve()), "--worker", system]
    cmd += ["--workload", str(workload_path), "--result", str(result_path)]
    load_before = os.getloadavg()
    print(f"{system}: running ({python}; log {log_path}) ...", flush=True)
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
    wall = time.perf_counter() - t0
    if rc != 0 or not result_path.exists():
        tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-40:])
        raise SystemExit(f"{system} worker failed (exit {rc}); last lines of {log_path}:\n{tail}")
    result = json.loads(result_path.read_text())
    result["load_before"] = list(load_before)
    result["load_after"] = list(os.getloadavg())
    result["process_wall_s"] = wall
    print(f"{system}: done in {wall:.0f} s", flush=True)
    return result


def machine_info() -> dict[str, Any]:
    model, flags = "unknown", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "unknown":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1]
    except OSError:
        pass
    flag_set = set(flags.split())
    return {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": model,
        "avx512f": "avx512f" in flag_set,
        "amx": "amx_tile" in flag_set,
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


def git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=ROOT,
        ).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", type=int, default=4, help="RL steps per system (default 4)")
    ap.add_argument("--warmup", type=int, default=1, help="first steps left out (default 1)")
    ap.add_argument("--prompts", type=int, default=2, help="prompts per step (default 2)")
    ap.add_argument("--group-size", type=int, default=8, help="samples per prompt (default 8)")
    ap.add_argument("--max-new-tokens", type=int, default=128, help="default 128")
    ap.add_argument("--lr", type=float, default=1e-6, help="AdamW learning rate (default 1e-6)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--threads", type=int, default=0, help="torch threads on both sides (0: torch's default)"
    )
    ap.add_argument(
        "--trl-python", help="python of an environment with TRL (default: create --trl-venv)"
    )
    ap.add_argument("--trl-venv", type=Path, default=DEFAULT_VENV, help=f"default {DEFAULT_VENV}")
    ap.add_argument(
        "--trajlab-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="trajlab config override (repeatable), e.g. optim.autocast=bf16",
    )
    ap.add_argument("--only", choices=("trajlab", "trl"), help="run one system (no ratio)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, run dir)")
    # internal: the worker subprocesses
    ap.add_argument("--worker", choices=("trajlab", "trl"), help=argparse.SUPPRESS)
    ap.add_argument("--workload", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        workload = json.loads(args.workload.read_text())
        fn = trajlab_worker if args.worker == "trajlab" else trl_worker
        args.result.write_text(json.dumps(fn(workload), indent=1))
        return

    if args.steps <= args.warmup:
        ap.error(f"--steps must exceed --warmup ({args.warmup}) so some steps are timed")
    check_overrides(args.trajlab_set)
    if args.threads <= 0:
        import torch

        args.threads = torch.get_num_threads()
    systems = [args.only] if args.only else ["trajlab", "trl"]
    trl_python = ensure_trl_python(args.trl_python, args.trl_venv) if "trl" in systems else None

    workdir = Path(tempfile.mkdtemp(prefix="bench_rl_step-"))
    try:
        workload = build_workload(args, workdir)
        workload_path = workdir / "workload.json"
        workload_path.write_text(json.dumps(workload, indent=1))
        results: dict[str, Any] = {
            "benchmark": "rl_step",
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "trajlab_commit": git_commit(),
            "machine": machine_info(),
            "workload": {
                k: workload[k]
                for k in (
                    "model_path",
                    "steps",
                    "prompts_per_step",
                    "group_size",
                    "max_new_tokens",
                    "temperature",
                    "top_p",
                    "threads",
                    "seed",
                    "lr",
                    "trajlab_overrides",
                )
            }
            | {"warmup": args.warmup, "prompt_ids": [p["id"] for p in workload["prompts"]]},
            "systems": {},
        }
        for system in systems:
            python = sys.executable if system == "trajlab" else trl_python
            r = run_worker(system, python, workload_path, workdir, args.threads)
            r["summary"] = summarize(r["steps"], args.warmup)
            results["systems"][system] = r
        if "trajlab" in results["systems"]:
            seen = results["systems"]["trajlab"].get("prompt_ids")
            if seen is not None and seen != results["workload"]["prompt_ids"]:
                raise SystemExit(
                    f"trajlab trained on prompts {seen}, not the workload's "
                    f"{results['workload']['prompt_ids']}: the prompt order mirror is out of date"
                )
        s = results["systems"]
        if len(s) == 2:
            a, b = ([x.get("prompt_tokens") for x in s[k]["steps"]] for k in ("trajlab", "trl"))
            if None not in a and None not in b and a != b:
                raise SystemExit(
                    f"prompt tokens per step differ (trajlab {a}, TRL {b}): the two systems "
                    "did not see the same prompts"
                )
        results["ratio"] = (
            s["trajlab"]["summary"]["tokens_per_s"] / s["trl"]["summary"]["tokens_per_s"]
            if len(s) == 2 and s["trl"]["summary"]["tokens_per_s"] > 0
            else None
        )
        print()
        print(format_table(results))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=1))
            print(f"results: {args.json}")
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# Workers (each in its own subprocess and environment)
# ---------------------------------------------------------------------------------------


def trajlab_worker(w: dict[str, Any]) -> dict[str, Any]:
    """trajlab.train.rl.train on the workload; step times and tokens from metrics.jsonl."""
    sys.path.insert(0, str(ROOT))
    import torch
    import transformers

    from trajlab.train.config import load_train_config
    from trajlab.train.rl import train
    from trajlab.types import Example

    cfg = load_train_config(None, w["trajlab_overrides"])
    pool = [Example.from_dict(d) for d in w["pool"]]
    train(cfg, examples=pool, argv=["benchmarks/bench_rl_step.py"])
    out = Path(cfg.out)
    steps = trajlab_steps((out / "metrics.jsonl").read_text().splitlines())
    # The prompts trajlab trained on, checked against the workload TRL gets: the same
    # examples in the same order, and prompt text equal to the workload's messages through
    # the chat template (as TRL renders them). Needs log.save_trajectories (the default).
    tok = transformers.AutoTokenizer.from_pretrained(w["model_path"])
    by_id = {p["id"]: p["messages"] for p in w["prompts"]}
    prompt_ids: list[str] = []
    for f, rec in zip(sorted((out / "trajectories").glob("step_*.jsonl")), steps):
        rec["prompt_tokens"] = 0.0
        for line in f.read_text().splitlines():
            t = json.loads(line)
            if t["example_id"] not in prompt_ids:
                prompt_ids.append(t["example_id"])
            prompt = t["segments"][0]
            rendered = tok.apply_chat_template(
                by_id[t["example_id"]], tokenize=False, add_generation_prompt=True
            )
            if prompt["source"] != "prompt" or prompt["text"] != rendered:
                raise SystemExit(
                    f"trajlab's prompt for {t['example_id']} differs from the workload's "
                    f"messages through the chat template:\n{prompt['text']!r}\nvs\n{rendered!r}"
                )
            rec["prompt_tokens"] += len(prompt["token_ids"])
    a = cfg.algo
    return {
        "steps": steps,
        "prompt_ids": prompt_ids or None,  # None: log.save_trajectories=false
        "precision": w["trajlab_precision"],
        "settings": {
            "engine": cfg.rollout.engine,
            "max_batch_size": cfg.rollout.max_batch_size,
            "micro_batch_size": a.micro_batch_size,
            "loss_agg": a.loss_agg,
            "advantage": a.advantage,
            "dtype": cfg.model.dtype,
            "autocast": cfg.optim.autocast,
            "gradient_checkpointing": cfg.model.gradient_checkpointing,
            "log.entropy": cfg.log.entropy,
            "log.save_trajectories": cfg.log.save_trajectories,
            "torch_threads": torch.get_num_threads(),
        },
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": sys.version.split()[0],
        },
    }


def trl_worker(w: dict[str, Any]) -> dict[str, Any]:
    """TRL's GRPOTrainer on the workload; a callback times each step, the reward counts tokens."""
    import torch

    torch.set_num_threads(w["threads"])
    import accelerate
    import datasets
    import transformers
    import trl
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    completion_tokens: list[int] = []  # one entry per reward call (one per step here)

    def exact_answer(completions, answer, completion_ids, **_):
        completion_tokens.append(sum(len(ids) for ids in completion_ids))
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [exact_answer_reward(t, a) for t, a in zip(texts, answer)]

    steps: list[dict[str, float]] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()
            self.calls = len(completion_tokens)
            self.seen = state.num_input_tokens_seen  # prompt + completion tokens so far

        def on_step_end(self, args, state, control, **kwargs):
            seconds = time.perf_counter() - self.t0
            new = completion_tokens[self.calls :]
            if len(new) != 1:
                raise RuntimeError(f"step {state.global_step}: {len(new)} reward calls, expected 1")
            prompt_tokens = state.num_input_tokens_seen - self.seen - new[0]
            steps.append(
                {
                    "step": state.global_step,
                    "seconds": seconds,
                    "tokens": float(new[0]),
                    "prompt_tokens": float(prompt_tokens),
                }
            )

    t = w["trl"]
    batch = w["prompts_per_step"] * w["group_size"]
    data = datasets.Dataset.from_list(
        [{"prompt": p["messages"], "answer": p["answer"]} for p in w["prompts"]]
    )
    with tempfile.TemporaryDirectory(prefix="trl-out-") as out:
        config = GRPOConfig(
            output_dir=out,
            max_steps=w["steps"],
            per_device_train_batch_size=batch,  # counts completions
            gradient_accumulation_steps=1,
            num_generations=w["group_size"],
            max_completion_length=w["max_new_tokens"],
            temperature=w["temperature"],
            top_p=w["top_p"],
            top_k=0,
            beta=0.0,
            num_iterations=1,
            loss_type=t["loss_type"],
            scale_rewards=t["scale_rewards"],
            epsilon=t["epsilon"],
            epsilon_high=t["epsilon_high"],
            learning_rate=w["lr"],
            lr_scheduler_type="constant",
            warmup_steps=0,
            weight_decay=t["weight_decay"],
            adam_beta1=t["adam_beta1"],
            adam_beta2=t["adam_beta2"],
            adam_epsilon=t["adam_epsilon"],
            max_grad_norm=t["max_grad_norm"],
            bf16=t["bf16"],
            gradient_checkpointing=t["gradient_checkpointing"],
            model_init_kwargs={"dtype": t["dtype"]},
            use_cpu=True,
            shuffle_dataset=False,  # the workload's order is trajlab's sampler order
            seed=w["seed"],
            report_to="none",
            logging_steps=1,
            save_strategy="no",
            disable_tqdm=True,
            log_completions=False,
        )
        trainer = GRPOTrainer(
            model=w["model_path"],
            reward_funcs=exact_answer,
            args=config,
            train_dataset=data,
            callbacks=[StepTimer()],
        )
        trainer.train()
        logged = [
            h["completions/mean_length"] * batch
            for h in trainer.state.log_history
            if "completions/mean_length" in h
        ]
        trl_step_time = [h["step_time"] for h in trainer.state.log_history if "step_time" in h]
    if len(trl_step_time) == len(steps):  # TRL's own timer, for reference (not used)
        for s, x in zip(steps, trl_step_time):
            s["trl_step_time"] = float(x)
    if len(logged) == len(steps):
        for s, n in zip(steps, logged):
            if abs(s["tokens"] - n) > 0.5:
                raise RuntimeError(
                    f"step {s['step']}: counted {s['tokens']} tokens, TRL logged {n}"
                )
    return {
        "steps": steps,
        "precision": precision_name(t["dtype"], t["bf16"]),
        "settings": {
            "loss_type": t["loss_type"],
            "scale_rewards": t["scale_rewards"],
            "bf16": t["bf16"],
            "dtype": t["dtype"],
            "gradient_checkpointing": t["gradient_checkpointing"],
            "per_device_train_batch_size": batch,
            "generation": "model.generate (TRL default)",
            "torch_threads": torch.get_num_threads(),
        },
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "trl": trl.__version__,
            "accelerate": accelerate.__version__,
            "python": sys.version.split()[0],
        },
    }


if __name__ == "__main__":
    main()
