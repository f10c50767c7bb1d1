"""Tasks: where Examples come from, and the prompts that present them.

How it is used:

    from trajlab.tasks import load_task, render_messages
    examples = load_task("arith", split="train", n=256, seed=0)       # built-in, generated
    examples = load_task("puzzles", split="test", n=50, scale=2)      # options: PuzzlesConfig fields
    examples = load_task("data/gsm8k_test.jsonl", n=200)              # a JSONL file (jsonl.py)
    messages = render_messages(examples[0], "code")

A task is either a name in TASKS (a generator `(n, split, seed, **options) ->
list[Example]`) or a path to a .jsonl file. Adding a task: one file here with a
generator, one TASKS entry, one test that recomputes its answers.

What it does not do: download datasets from a hub; pass local files instead.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

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
    **options: Any,
) -> list[Example]:
    """Examples of a built-in task (by name) or of a JSONL file (by path).

    Built-in tasks: `split` is train or test, `n` the number of examples
    (DEFAULT_N if None), `seed` picks the sample, `options` set difficulty.
    Files: `n` limits the rows read; `split` and `seed` do not apply (the file is
    the split), and `options` may only be `on_error` ("raise" or "skip").
    """
    name = str(spec)
    if name in TASKS:
        return TASKS[name](n=DEFAULT_N if n is None else n, split=split, seed=seed, **options)
    path = Path(name)
    if path.suffix == ".jsonl" or path.is_file():
        bad = sorted(set(options) - {"on_error"})
        if bad:
            raise ValueError(f"options {bad} do not apply to a JSONL task; only on_error does")
        return load_jsonl_task(path, limit=n, **options)
    raise ValueError(
        f"unknown task {name!r}: built-in tasks are {', '.join(TASKS)}; "
        f"or give the path of a .jsonl file (no file {name!r} exists)"
    )


__all__ = [
    "PROMPTS",
    "PUZZLE_KINDS",
    "ROW_SCHEMA",
    "SPLITS",
    "TASKS",
    "ArithConfig",
    "PromptTemplate",
    "PuzzlesConfig",
    "get_prompt",
    "load_jsonl_task",
    "load_task",
    "make_arith",
    "make_puzzles",
    "render_messages",
    "split_of",
]
