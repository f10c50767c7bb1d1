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
from trajlab.engines.base import Engine, SamplingParams, check_sampling
from trajlab.eval.metrics import compute_metrics
from trajlab.progress import RolloutProgress
from trajlab.rundir import failure_recorded, read_run_json, start_or_resume, update_run_json
from trajlab.threads import HELP as THREADS_HELP
from trajlab.threads import ThreadGovernor
from trajlab.tools.base import Tool
from trajlab.tools.config import ToolsConfig
from trajlab.types import Example, Trajectory, iter_jsonl, write_jsonl

log = logging.getLogger(__name__)

AUTO_TEMPERATURE = -1.0  # the temperature that means "0 for n=1, else 1.0"
# Keys that may change between an interrupted run and its resumption.
_RESUMABLE_KEYS = {"out", "batch_size", "progress", "threads"}


@dataclass
class EvalConfig:
    model: str = opt("default", "model: 'default', a Hugging Face model directory, or a .gguf file")
    task: str = opt(
        "arith",
        "task: a built-in name (arith, puzzles), a benchmark (gsm8k, math500, aime24, aime25, "
        "hotpotqa, 2wiki, musique, bamboogle, mmath), hf:owner/name, or a JSONL file with "
        "id/question/answer",
    )
    split: str = opt(
        "test",
        "split of a built-in task; for a benchmark, test is its evaluation split",
        choices=("train", "test"),
    )
    data_dir: str = opt("", "directory of local benchmark copies (empty: $TRAJLAB_DATA)")
    task_options: dict[str, Any] = opt(
        {},
        "options of the task: a generator's (arith: word_prob), mmath's lang, or the field "
        "mapping of hf:owner/name (config, question, answer, answers, id)",
    )
    limit: int = opt(0, "evaluate only the first N examples (0: all)")
    n: int = opt(1, "samples per example (pass@k and maj@k use them)")
    reward: str = opt(
        "",
        "reward function name (see trajlab.rewards.REWARDS); empty: the task's own (qa_em for "
        "the QA benchmarks, else math_correct)",
    )
    reward_weights: dict[str, float] = opt(
        {}, "several rewards summed with weights, e.g. {math_correct: 1.0}; replaces `reward`"
    )
    correct: str = opt(
        "",
        "reward component whose value > 0 means correct (empty: a `correct` component, "
        "else the first reward > 0)",
    )
    temperature: float = opt(
        AUTO_TEMPERATURE,
        "sampling temperature, 0 for greedy; -1 (the default) picks 0 for n=1 and 1.0 for n>1",
    )
    top_p: float = opt(1.0, "nucleus sampling threshold")
    top_k: int = opt(0, "top-k sampling (0: off)")
    seed: int = opt(0, "sampling seed")
    task_seed: int = opt(0, "seed of a built-in task's question generator (arith, puzzles)")
    dtype: str = opt("float32", "model weights dtype on CPU", choices=("float32", "bfloat16"))
    batch_size: int = opt(16, "trajectories rolled out together")
    threads: int = opt(0, THREADS_HELP)
    out: str = opt("", "run directory (default: runs/eval-<time>)")
    progress: bool = opt(True, "show a progress bar")
    prompt: str = opt(
        "",
        "prompt template name (tasks/prompts.py); empty: the protocol's own, e.g. tags_qa, "
        "qa_none; question: the question alone",
    )
    decode_dtype: str = opt(
        "float32",
        "dtype the engine samples in (a copy of the weights when it differs); auto: bfloat16 "
        "on CPUs with native bf16 matmul",
        choices=("auto", "float32", "bfloat16"),
    )
    engine: str = opt(
        "hf",
        "hf: the model runs in this process; openai: generation by an OpenAI-compatible "
        "server at engine_url (trajlab serve, vLLM, ...), `model` then only gives the tokenizer",
        choices=("hf", "openai"),
    )
    engine_url: str = opt("", "engine=openai: the server's base URL, e.g. http://127.0.0.1:8000/v1")
    engine_model: str = opt(
        "", "engine=openai: the model name the server knows (empty: the first it lists)"
    )
    engine_concurrency: int = opt(8, "engine=openai: requests in flight at once")
    agent: AgentConfig = field(default_factory=AgentConfig)
    tools: ToolsConfig = field(default_factory=ToolsConfig)
    tool_plugins: dict[str, str] = opt(
        {},
        "tool name -> 'module:factory' built instead of the registered tool, "
        "e.g. python: trajlab.tools.fake:echo_python",
    )

    def __post_init__(self) -> None:
        if self.engine == "openai" and not self.engine_url:
            raise ValueError(
                "engine=openai needs engine_url, the server's base URL "
                "(e.g. --engine-url http://127.0.0.1:8000/v1)"
            )
        for name, lo in (
            ("n", 1), ("batch_size", 1), ("limit", 0), ("top_k", 0), ("engine_concurrency", 1)
        ):  # fmt: skip
            if getattr(self, name) < lo:
                raise ValueError(
                    f"{name} must be >= {lo}, got {getattr(self, name)}"
                    + (" (0 evaluates all examples)" if name == "limit" else "")
                )
        check_sampling(self.temperature, self.top_p, auto=AUTO_TEMPERATURE)
        if self.temperature == AUTO_TEMPERATURE:
            self.temperature = 0.0 if self.n == 1 else 1.0

    def sampling(self) -> SamplingParams:
        return SamplingParams(
            temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, seed=self.seed
        )

    def reward_spec(self) -> dict[str, float]:
        from trajlab.tasks import default_reward

        return dict(self.reward_weights) or {self.reward or default_reward(self.task): 1.0}


Scorer = Callable[[Example, Trajectory], object]


def make_scorer(config: EvalConfig) -> Scorer:
    """The scorer of an evaluation (trajlab.build.build_scorer, as the trainer uses)."""
    from trajlab.build import build_scorer

    return build_scorer(
        config.reward_spec(), correct=config.correct, retrieval="search" in config.agent.tools
    )


def evaluate(
    config: EvalConfig,
    engine: Engine | None = None,
    tools: dict[str, Tool] | None = None,
    examples: list[Example] | None = None,
    scorer: Scorer | None = None,
    argv: list[str] | None = None,
) -> dict[str, Any]:
    """Run an evaluation end to end and return its metrics. Seams are injectable for tests.

    Everything that can be checked without loading the model (the scorer, the prompt, the
    tool names, the model's files, the task's rows) is checked before the run directory is
    written; a failure after that marks the run `failed` with the reason."""
    out = Path(config.out or f"runs/eval-{_dt.datetime.now():%Y%m%d-%H%M%S}")
    cfg_dict = to_dict(config)
    scorer, examples = _check_inputs(config, engine, tools, examples, scorer)
    _prepare_run_dir(out, cfg_dict, argv)
    traj_path = out / "trajectories.jsonl"
    jobs = _pending_jobs(examples, config.n, traj_path, out)

    own_tools = tools is None
    elapsed_before = float(read_run_json(out).get("wall_time_s", 0.0))
    t0 = time.perf_counter()
    status = None
    try:
        with failure_recorded(out):
            if jobs:
                loop, tools = _build_loop(config, engine, tools)
                _roll_out(loop, jobs, scorer, traj_path, config)
        status = "done"
    except KeyboardInterrupt:
        print(f"\ninterrupted; run the same command again to resume {out}", file=sys.stderr)
        raise
    finally:
        wall = elapsed_before + (time.perf_counter() - t0)
        update_run_json(out, **({"status": status} if status else {}), wall_time_s=wall)
        if own_tools and tools:
            for t in tools.values():
                t.close()
    return _report(out, config, cfg_dict, traj_path, wall)


def _check_inputs(
    config: EvalConfig,
    engine: Engine | None,
    tools: dict[str, Tool] | None,
    examples: list[Example] | None,
    scorer: Scorer | None,
) -> tuple[Scorer, list[Example]]:
    """The scorer and the examples, after every check that needs no model."""
    from trajlab.build import check_tools, prompt_builder
    from trajlab.models import check_model_spec

    scorer = scorer or make_scorer(config)
    prompt_builder(config.prompt)
    if tools is None:
        check_tools(config.agent.tools, config.agent.protocol, config.tool_plugins, config.tools)
    if engine is None:
        check_model_spec(config.model, "model")
    examples = (load_examples(config) if examples is None else examples)[: config.limit or None]
    if not examples:
        raise ConfigError(f"task {config.task!r} has no examples to evaluate")
    return scorer, examples


def _build_loop(
    config: EvalConfig, engine: Engine | None, tools: dict[str, Tool] | None
) -> tuple[AgentLoop, dict[str, Tool]]:
    """The agent loop of an evaluation: the engine (loaded unless given) and its tools."""
    from trajlab.build import build_tools, prompt_builder

    engine = engine or load_engine(config)
    if tools is None:
        tools = build_tools(
            config.agent.tools, config.agent, config.tools, engine.tokenizer, config.tool_plugins
        )
    try:
        loop = AgentLoop(
            engine,
            tools or {},
            config.agent,
            sampling=config.sampling(),
            prompt_builder=prompt_builder(config.prompt),
        )
    except BaseException:
        for t in (tools or {}).values():
            t.close()
        raise
    return loop, tools


def load_examples(config: EvalConfig) -> list[Example]:
    """The examples of `config.task` (a built-in task, a benchmark, hf:..., or a JSONL file)."""
    from trajlab.tasks import load_task

    try:
        return load_task(
            config.task,
            split=config.split,
            n=config.limit or None,
            seed=config.task_seed,
            data_dir=config.data_dir or None,
            **config.task_options,
        )
    except TypeError as e:  # an option the task does not take
        raise ConfigError(f"task_options: {e}") from None


def _pending_jobs(
    examples: list[Example], n: int, traj_path: Path, out: Path
) -> list[tuple[Example, int]]:
    """(example, sample index) pairs not yet in the trajectories file (a resumed run keeps
    the finished ones; a torn last line from a crash is dropped first)."""
    done = (
        {(t.example_id, t.sample_index) for t in iter_jsonl(traj_path)}
        if traj_path.exists()
        else set()
    )
    _drop_torn_tail(traj_path)
    jobs = [(ex, i) for ex in examples for i in range(n) if (ex.id, i) not in done]
    if done:
        print(
            f"resuming {out}: {len(done)} trajectories already done, {len(jobs)} to go",
            file=sys.stderr,
        )
    return jobs


def _report(
    out: Path, config: EvalConfig, cfg_dict: dict[str, Any], traj_path: Path, wall: float
) -> dict[str, Any]:
    """metrics.json, summary.md and metrics.png of a finished run; returns the metrics."""
    from trajlab.eval.report import write_plot, write_summary

    trajs = list(iter_jsonl(traj_path)) if traj_path.exists() else []
    metrics = compute_metrics(trajs, wall_time_s=wall)
    metrics["model"] = config.model
    metrics["task"] = config.task
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_summary(out / "summary.md", metrics, cfg_dict)
    write_plot(out / "metrics.png", metrics)
    metrics["run_dir"] = str(out)
    return metrics


def _roll_out(
    loop: AgentLoop, jobs: list[tuple[Example, int]], scorer: Scorer, path: Path, config: EvalConfig
) -> None:
    progress = RolloutProgress(
        len(jobs),
        desc="eval",
        tokens_per_episode=config.agent.max_new_tokens,
        enabled=config.progress,
    )
    correct = 0
    seen = 0
    threads = ThreadGovernor(config.threads)
    try:
        for start in range(0, len(jobs), config.batch_size):
            threads.adjust()
            chunk = jobs[start : start + config.batch_size]
            loop.sampling = batch_sampling(config, chunk)
            trajs = loop.run(chunk, progress=progress)
            for (ex, _), t in zip(chunk, trajs):
                scorer(ex, t)
                correct += t.metadata["correct"]
                seen += 1
            write_jsonl(path, trajs, append=True)
            progress.set(acc=f"{correct / seen:.3f}")
    finally:
        progress.close()


def batch_sampling(config: EvalConfig, chunk: list[tuple[Example, int]]) -> SamplingParams:
    """The sampling of one harness batch: its seed comes from config.seed and the batch's
    first (example, sample) pair. The engine seeds each row from (seed, row position), so
    one seed for every batch would give the rows at the same position in different
    batches the same random draws: samples of different questions would be correlated,
    and intervals over questions too narrow. A resumed run meets the same batches (they
    are written whole), so it samples what the uninterrupted run would have."""
    params = config.sampling()
    if params.greedy or not chunk:
        return params
    ex, i = chunk[0]
    params.seed = keyed_seed(config.seed, f"{ex.id}\x00{i}")
    return params


def keyed_seed(seed: int, key: str) -> int:
    """A sampling seed of its own for the batch `key` names, derived from the run's seed."""
    import zlib

    return (seed * 1_000_003 + zlib.crc32(key.encode())) % (1 << 31)


def load_engine(config: EvalConfig, model: Any = None, tokenizer: Any = None) -> Engine:
    """The evaluation engine: config.model loaded (or the given model), hf, one batch
    together; or, with engine=openai, a client of the server at engine_url.

    Decoding on CPU is bound by reading the weights once per step, so a whole harness
    batch decodes together rather than in the engine's default chunks."""
    from trajlab.build import build_engine, load_policy

    if config.engine == "openai":
        from trajlab.engines.openai_engine import OpenAIEngine
        from trajlab.models import load_tokenizer

        return OpenAIEngine(
            tokenizer or load_tokenizer(config.model),
            config.engine_url,
            model=config.engine_model,
            concurrency=config.engine_concurrency,
        )
    if model is None:
        model, tokenizer = load_policy(config.model, config.dtype)
    decode = None if config.decode_dtype == config.dtype else config.decode_dtype
    return build_engine(
        "hf", model, tokenizer, max_batch_size=config.batch_size, decode_dtype=decode
    )


def _prepare_run_dir(out: Path, cfg: dict[str, Any], argv: list[str] | None) -> None:
    start_or_resume(out, "eval", cfg, "config.json", _RESUMABLE_KEYS, argv)


def _drop_torn_tail(path: Path) -> None:
    """A run killed mid-write can leave half a line; cut it so appends stay valid JSONL."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])
