"""Load a task from a JSONL file: one JSON object per line, one `Example` per row.

How it is used: `load_jsonl_task("data/gsm8k_test.jsonl", limit=200)`, or through
`trajlab.tasks.load_task(path)`.

Row schema (ROW_SCHEMA below): `id` (string or integer, unique in the file),
`question` (non-empty string), and `answer` (a string or number) and/or `answers`
(a non-empty list of strings or numbers; all are accepted references), plus an
optional `meta` object. Any other key is kept in `meta` under its own name, so
extra columns of a dataset are not lost; a typo in a required key still fails
because the required key is then missing. Numbers become strings ("18", not 18)
because references are compared as text first.

A bad row raises ValueError naming the file, the line, the problem and the
schema; with `on_error="skip"` it is logged and skipped instead. Duplicate ids
are bad rows: two rows with one id would merge in every per-example metric.

What it does not do: download datasets, read Parquet/CSV, or shuffle.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from trajlab.types import Example

logger = logging.getLogger(__name__)

ON_ERROR = ("raise", "skip")
ROW_SCHEMA = (
    '{"id": str|int, "question": str, "answer": str|number, "answers": [str|number, ...], '
    '"meta": {...}} with `answer` or `answers` (or both)'
)


class _BadRow(ValueError):
    pass


def _reference(value: Any, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _BadRow(f"`{field}` must be a string or a number, got {type(value).__name__}")
    text = str(value).strip()
    if not text:
        raise _BadRow(f"`{field}` is empty")
    return text


def parse_row(row: Any) -> Example:
    """Validate one decoded JSON row and build its Example; raises _BadRow with the reason."""
    if not isinstance(row, dict):
        raise _BadRow(f"a row must be a JSON object, got {type(row).__name__}")
    if "id" not in row:
        raise _BadRow("missing `id`")
    if isinstance(row["id"], bool) or not isinstance(row["id"], (str, int)) or str(row["id"]) == "":
        raise _BadRow(f"`id` must be a non-empty string or an integer, got {row['id']!r}")
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise _BadRow("missing or empty `question` (a string)")
    answer = _reference(row["answer"], "answer") if row.get("answer") is not None else None
    answers_raw = row.get("answers")
    if answers_raw is not None and not isinstance(answers_raw, list):
        raise _BadRow(f"`answers` must be a list, got {type(answers_raw).__name__}")
    answers = [_reference(a, f"answers[{i}]") for i, a in enumerate(answers_raw or [])]
    if answer is None and not answers:
        raise _BadRow("no reference: give `answer` or a non-empty `answers` list")
    meta = row.get("meta") or {}
    if not isinstance(meta, dict):
        raise _BadRow(f"`meta` must be an object, got {type(meta).__name__}")
    meta = dict(meta)
    for key, value in row.items():
        if key in ("id", "question", "answer", "answers", "meta"):
            continue
        if key in meta:
            raise _BadRow(f"extra key {key!r} clashes with meta[{key!r}]")
        meta[key] = value
    return Example(id=str(row["id"]), question=question, answer=answer, answers=answers, meta=meta)


def load_jsonl_task(
    path: str | Path, limit: int | None = None, on_error: str = "raise"
) -> list[Example]:
    """Read up to `limit` Examples from a JSONL file (blank lines are ignored)."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error={on_error!r}; valid: {', '.join(ON_ERROR)}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"task file {path} does not exist")
    examples: list[Example] = []
    first_line: dict[str, int] = {}
    skipped = 0
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if limit is not None and len(examples) >= limit:
                break
            if not line.strip():
                continue
            try:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise _BadRow(f"not valid JSON ({e.msg} at column {e.colno})") from None
                example = parse_row(row)
                if example.id in first_line:
                    raise _BadRow(
                        f"duplicate id {example.id!r} (first on line {first_line[example.id]})"
                    )
            except _BadRow as e:
                message = f"{path}:{lineno}: {e}; expected one JSON object per line: {ROW_SCHEMA}"
                if on_error == "raise":
                    raise ValueError(message) from None
                logger.warning("skipping bad row: %s", message)
                skipped += 1
                continue
            first_line[example.id] = lineno
            examples.append(example)
    if skipped:
        logger.warning("%s: skipped %d bad row(s), kept %d", path, skipped, len(examples))
    return examples
