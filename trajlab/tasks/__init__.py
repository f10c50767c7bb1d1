"""Tasks: where Examples come from, and the prompts that present them.

How it is used:

    from trajlab.tasks import load_task, render_messages
    examples = load_task("arith", split="train", n=256, seed=0)       # built-in, generated
    examples = load_task("puzzles", split="test", n=50, scale=2)      # options: PuzzlesConfig fields
    examples = load_task("data/gsm8k_test.jsonl", n=200)              # a JSONL file (jsonl.py)
    examples = load_task("gsm8k", n=200, data_dir="data")             # named (benchmarks.py)
    examples = load_task("hf:org/name", question="problem", answer="answer")  # any HF dataset
    messages = render_messages(examples[0], "code")

A task is a name in TASKS (a generator `(n, split, seed, **options) -> list[Example]`),
a named benchmark in BENCHMARKS (gsm8k, math500, ..., hotpotqa, ...: a published dataset,
read from a local copy first, benchmarks.py), `hf:owner/name` with a field mapping, or a
path to a .jsonl file. Adding a generated task: one file here with a generator, one TASKS
entry, one test that recomputes its answers. Adding a benchmark: one BENCHMARKS entry with
a row converter, one test on a fixture in the published format.

What it does not do: download anything when a local copy exists, or when HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from trajlab.tasks.benchmarks import BENCHMARKS, Benchmark, load_benchmark, load_hf_task
from trajlab.tasks.jsonl import ROW_SCHEMA, load_jsonl_task
from trajlab.tasks.prompts import PROMPTS, PromptTemplate, get_prompt, render_messages
from trajlab.tasks.synthetic import (
    PUZZLE_KINDS,
    SPLITS,
    ArithConfig,
    PuzzlesConfig,
    make_arith,
    make_puzzles,
    split_of,
)
from trajlab.types import Example

TASKS: dict[str, Callable[..., list[Example]]] = {
    "arith": make_arith,  # multi-step arithmetic on 4-6 digit numbers
    "puzzles": make_puzzles,  # digit sums of powers, prime counts, modular powers, gcd/lcm, sums
}

DEFAULT_N = 100  # examples generated when a built-in task is loaded without n


def load_task(
    spec: str | Path,
    split: str = "test",
    n: int | None = None,
    seed: int = 0,
    data_dir: str | Path | None = None,
    **options: Any,
) -> list[Example]:
    """Examples of a built-in task or benchmark (by name) or of a JSONL file (by path).

    Built-in tasks: `split` is train or test, `n` the number of examples
    (DEFAULT_N if None), `seed` picks the sample, `options` set difficulty.
    Named benchmarks: the first `n` rows (all if None); `split` "test" is the benchmark's
    evaluation split (hotpotqa: validation), any other value a split of the dataset;
    `data_dir` (else $TRAJLAB_DATA) holds local copies; option `lang` for mmath.
    `hf:owner/name`: options config, question, answer, answers, id map its fields.
    Files: `n` limits the rows read; `split` and `seed` do not apply (the file is
    the split), and `options` may only be `on_error` ("raise" or "skip"), `max_row_bytes`
    and `max_question_chars` (trajlab.tasks.jsonl).
    """
    name = str(spec)
    if name in TASKS:
        return TASKS[name](n=DEFAULT_N if n is None else n, split=split, seed=seed, **options)
    if name in BENCHMARKS:
        bad = sorted(set(options) - ({"lang"} if name == "mmath" else set()))
        if bad:
            raise ValueError(f"options {bad} do not apply to the benchmark {name!r}")
        split = None if split == "test" else split
        return load_benchmark(name, split=split, n=n, data_dir=data_dir, **options)
    if name.startswith("hf:"):
        return load_hf_task(name, split=split, n=n, data_dir=data_dir, **options)
    path = Path(name)
    if path.suffix == ".jsonl" or path.is_file():
        bad = sorted(set(options) - {"on_error", "max_row_bytes", "max_question_chars"})
        if bad:
            raise ValueError(
                f"options {bad} do not apply to a JSONL task; only on_error, max_row_bytes "
                "and max_question_chars do"
            )
        return load_jsonl_task(path, limit=n, **options)
    raise ValueError(
        f"unknown task {name!r}: built-in tasks are {', '.join(TASKS)}; benchmarks "
        f"{', '.join(BENCHMARKS)}; hf:owner/name for another Hugging Face dataset; "
        f"or give the path of a .jsonl file (no file {name!r} exists)"
    )


def default_reward(spec: str | Path) -> str:
    """The reward a task is scored with unless one is given: a benchmark's own, else
    math_correct (the built-in tasks and most JSONL math sets)."""
    bench = BENCHMARKS.get(str(spec))
    return bench.reward if bench else "math_correct"


__all__ = [
    "BENCHMARKS",
    "PROMPTS",
    "PUZZLE_KINDS",
    "ROW_SCHEMA",
    "SPLITS",
    "TASKS",
    "ArithConfig",
    "default_reward",
    "Benchmark",
    "PromptTemplate",
    "PuzzlesConfig",
    "get_prompt",
    "load_benchmark",
    "load_hf_task",
    "load_jsonl_task",
    "load_task",
    "make_arith",
    "make_puzzles",
    "render_messages",
    "split_of",
]
