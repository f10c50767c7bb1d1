"""The evaluation harness: roll out, score, and write a run directory.

    trajlab eval --model default --task arith --tools python --protocol code -n 4 --out runs/x

Writes (see docs/run_directory.md) run.json, config.json, trajectories.jsonl (appended
as each batch finishes), metrics.json, summary.md and metrics.png. An interrupted
run (Ctrl-C, a kill) is resumed by running the same command again: the
(example, sample) pairs already in trajectories.jsonl are skipped, nothing is
duplicated, and the metrics cover the whole file. A different config on an
existing directory is refused, naming the keys that differ.

What it does not do: train, or pick a checkpoint. It evaluates one model.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trajlab.agent.loop import AgentConfig, AgentLoop
from trajlab.config import ConfigError, opt, to_dict
from trajlab.engines.base import Engine, SamplingParams
from trajlab.eval.metrics import compute_metrics
from trajlab.rundir import update_run_json, write_run_json
from trajlab.tools.base import Tool
from trajlab.tools.kg import KGConfig
from trajlab.tools.search import SearchConfig
from trajlab.types import Example, RewardBreakdown, Trajectory, iter_jsonl, write_jsonl

log = logging.getLogger(__name__)

# Keys that may change between an interrupted run and its resumption.
_RESUMABLE_KEYS = {"out", "batch_size", "progress"}


@dataclass
class EvalConfig:
    model: str = opt("default", "model: 'default', a Hugging Face model directory, or a .gguf file")
    task: str = opt(
        "arith", "task: a built-in name (arith, puzzles) or a JSONL file with id/question/answer"
    )
    split: str = opt("test", "split of a built-in task", choices=("train", "test"))
    limit: int = opt(0, "evaluate only the first N examples (0: all)")
    n: int = opt(1, "samples per example (pass@k and maj@k use them)")
    reward: str = opt("math_correct", "reward function name (see trajlab.rewards.REWARDS)")
    temperature: float = opt(
        -1.0, "sampling temperature; -1 picks 0 (greedy) for n=1 and 1.0 for n>1"
    )
    top_p: float = opt(1.0, "nucleus sampling threshold")
    top_k: int = opt(0, "top-k sampling (0: off)")
    seed: int = opt(0, "sampling seed")
    dtype: str = opt("float32", "model weights dtype on CPU", choices=("float32", "bfloat16"))
    batch_size: int = opt(16, "trajectories rolled out together")
    out: str = opt("", "run directory (default: runs/eval-<time>)")
    progress: bool = opt(True, "show a progress bar")
    prompt: str = opt(
        "",
        "prompt template name (tasks/prompts.py); empty: the protocol's own, e.g. tags_qa, qa_none",
    )
    agent: AgentConfig = field(default_factory=AgentConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    kg: KGConfig = field(default_factory=KGConfig)

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.temperature < 0:
            self.temperature = 0.0 if self.n == 1 else 1.0

    def sampling(self) -> SamplingParams:
        return SamplingParams(
            temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, seed=self.seed
        )


Scorer = Callable[[Example, Trajectory], None]


def make_scorer(reward_name: str, retrieval: bool = False) -> Scorer:
    """A scorer sets trajectory.reward, .prediction and metadata['correct'].

    QA rewards predict with the QA extractor (last <answer>, its box if any). With
    `retrieval`, it also sets metadata['retrieval_recall'] for examples that name
    gold supporting titles (meta.supporting_titles).
    """
    from trajlab.rewards import get_reward
    from trajlab.rewards.math import extract_answer, strip_code
    from trajlab.rewards.qa import QA_REWARDS, extract_qa_answer, retrieval_recall

    reward_fn = get_reward(reward_name)
    predict = (
        (lambda t: extract_qa_answer(t.model_text))
        if reward_name in QA_REWARDS
        # The model's own final answer: code blocks (and what they print) never count.
        else (lambda t: extract_answer(strip_code(t.model_text)))
    )

    def score(example: Example, traj: Trajectory) -> None:
        r = reward_fn(example, traj)
        rb = (
            r
            if isinstance(r, RewardBreakdown)
            else RewardBreakdown(total=float(r), components={reward_name: float(r)})
        )
        traj.reward = rb
        if traj.prediction is None:
            traj.prediction = predict(traj)
        traj.metadata["correct"] = bool(rb.components.get("correct", rb.total > 0))
        if retrieval:
            recall = retrieval_recall(example, traj)
            if recall is not None:
                traj.metadata["retrieval_recall"] = recall

    return score


def build_tools(
    names: list[str],
    agent: AgentConfig,
    config: EvalConfig | None = None,
    tokenizer: Any = None,
) -> dict[str, Tool]:
    """Construct the named tools from trajlab.tools.TOOLS with their config sections.

    `config` supplies `.search` and `.kg` (index directory, k, cache, ...); `tokenizer`
    is the model's, for token-based truncation of search results.
    """
    from trajlab.tools import TOOLS

    tools: dict[str, Tool] = {}
    for name in names:
        if name not in TOOLS:
            raise ConfigError(f"unknown tool {name!r}; available: {', '.join(TOOLS)}")
        try:
            tools[name] = TOOLS[name](config=config, tokenizer=tokenizer, protocol=agent.protocol)
        except (ValueError, FileNotFoundError) as e:
            for t in tools.values():
                t.close()
            raise ConfigError(f"cannot start the {name} tool: {e}") from e
    return tools


def evaluate(
    config: EvalConfig,
    engine: Engine | None = None,
    tools: dict[str, Tool] | None = None,
    examples: list[Example] | None = None,
    scorer: Scorer | None = None,
    argv: list[str] | None = None,
) -> dict[str, Any]:
    """Run an evaluation end to end and return its metrics. Seams are injectable for tests."""
    out = Path(config.out or f"runs/eval-{_dt.datetime.now():%Y%m%d-%H%M%S}")
    cfg_dict = to_dict(config)
    _prepare_run_dir(out, cfg_dict, argv)

    if examples is None:
        from trajlab.tasks import load_task

        examples = load_task(
            config.task, split=config.split, n=config.limit or None, seed=config.seed
        )
    if config.limit:
        examples = examples[: config.limit]
    scorer = scorer or make_scorer(config.reward, retrieval="search" in config.agent.tools)
    traj_path = out / "trajectories.jsonl"
    done = (
        {(t.example_id, t.sample_index) for t in iter_jsonl(traj_path)}
        if traj_path.exists()
        else set()
    )
    _drop_torn_tail(traj_path)
    jobs = [(ex, i) for ex in examples for i in range(config.n) if (ex.id, i) not in done]
    if done:
        print(
            f"resuming {out}: {len(done)} trajectories already done, {len(jobs)} to go",
            file=sys.stderr,
        )

    own_tools = tools is None
    run_info = json.loads((out / "run.json").read_text())
    elapsed_before = float(run_info.get("wall_time_s", 0.0))
    t0 = time.perf_counter()
    status = "failed"
    try:
        if jobs:
            if engine is None:
                engine = _load_engine(config)
            if tools is None:
                tools = build_tools(config.agent.tools, config.agent, config, engine.tokenizer)
            prompt_builder = None
            if config.prompt:
                from trajlab.tasks.prompts import get_prompt, render_messages

                get_prompt(config.prompt)  # an unknown name fails here, before any rollout

                def prompt_builder(ex: Example) -> list[dict[str, str]]:
                    return render_messages(ex, config.prompt)

            loop = AgentLoop(
                engine,
                tools or {},
                config.agent,
                sampling=config.sampling(),
                prompt_builder=prompt_builder,
            )
            _roll_out(loop, jobs, scorer, traj_path, config)
        status = "done"
    except KeyboardInterrupt:
        status = "interrupted"
        print(f"\ninterrupted; run the same command again to resume {out}", file=sys.stderr)
        raise
    finally:
        wall = elapsed_before + (time.perf_counter() - t0)
        update_run_json(out, status=status, wall_time_s=wall)
        if own_tools and tools:
            for t in tools.values():
                t.close()
    trajs = list(iter_jsonl(traj_path)) if traj_path.exists() else []
    metrics = compute_metrics(trajs, wall_time_s=wall)
    metrics["model"] = config.model
    metrics["task"] = config.task
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    from trajlab.eval.report import write_plot, write_summary

    write_summary(out / "summary.md", metrics, cfg_dict)
    write_plot(out / "metrics.png", metrics)
    metrics["run_dir"] = str(out)
    return metrics


def _roll_out(
    loop: AgentLoop, jobs: list[tuple[Example, int]], scorer: Scorer, path: Path, config: EvalConfig
) -> None:
    from tqdm.auto import tqdm

    bar = tqdm(
        total=len(jobs), desc="eval", unit="traj", disable=not config.progress, dynamic_ncols=True
    )
    correct = 0
    seen = 0
    try:
        for start in range(0, len(jobs), config.batch_size):
            chunk = jobs[start : start + config.batch_size]
            trajs = loop.run(chunk)
            for (ex, _), t in zip(chunk, trajs):
                scorer(ex, t)
                correct += t.metadata["correct"]
                seen += 1
            write_jsonl(path, trajs, append=True)
            bar.update(len(chunk))
            bar.set_postfix(acc=f"{correct / seen:.3f}")
    finally:
        bar.close()


def _load_engine(config: EvalConfig) -> Engine:
    import torch

    from trajlab.engines.hf import HFEngine
    from trajlab.models import load_model, load_tokenizer

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[config.dtype]
    model = load_model(config.model, dtype=dtype)
    tok = load_tokenizer(config.model)
    # Decoding on CPU is bound by reading the weights once per step, so a whole harness
    # batch decodes together rather than in the engine's default chunks.
    return HFEngine(model, tok, max_batch_size=config.batch_size)


def _prepare_run_dir(out: Path, cfg: dict[str, Any], argv: list[str] | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "config.json"
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        diff = sorted(
            k for k in set(old) | set(cfg) if k not in _RESUMABLE_KEYS and old.get(k) != cfg.get(k)
        )
        if diff:
            details = ", ".join(f"{k}: {old.get(k)!r} -> {cfg.get(k)!r}" for k in diff)
            raise ConfigError(
                f"{out} holds a run with a different config ({details}). "
                f"Resume it with the same settings, or choose a new --out directory."
            )
        update_run_json(out, status="running")
        return
    cfg_path.write_text(json.dumps(cfg, indent=2))
    write_run_json(out, "eval", argv)


def _drop_torn_tail(path: Path) -> None:
    """A run killed mid-write can leave half a line; cut it so appends stay valid JSONL."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])
