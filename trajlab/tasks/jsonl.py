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

Bounds: a row over MAX_ROW_BYTES (1 MiB) or a question over MAX_QUESTION_CHARS is a bad
row, found without reading the row whole into memory; a line that is not UTF-8 is a bad
row naming the byte; an empty file is an error. The `max_row_bytes` and
`max_question_chars` options raise the limits.

What it does not do: download datasets, read Parquet/CSV, or shuffle.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trajlab.types import Example

logger = logging.getLogger(__name__)

ON_ERROR = ("raise", "skip")
MAX_ROW_BYTES = 1 << 20  # a JSONL row of a task: 1 MiB
MAX_QUESTION_CHARS = 65_536  # about 16k tokens, twice the default model's context
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
    path: str | Path,
    limit: int | None = None,
    on_error: str = "raise",
    max_row_bytes: int = MAX_ROW_BYTES,
    max_question_chars: int = MAX_QUESTION_CHARS,
) -> list[Example]:
    """Read up to `limit` Examples from a JSONL file (blank lines are ignored).

    Lines are read in bounded pieces: a row over `max_row_bytes` or a question over
    `max_question_chars` is a bad row (never read whole into memory, never tokenised), as
    is a line that is not UTF-8. A file without a single row is an error."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error={on_error!r}; valid: {', '.join(ON_ERROR)}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"task file {path} does not exist")
    examples: list[Example] = []
    first_line: dict[str, int] = {}
    skipped = rows = 0
    with open(path, "rb") as f:
        for lineno, raw in _lines(f, max_row_bytes):
            if limit is not None and len(examples) >= limit:
                break
            if raw is not None and not raw.strip():
                continue
            rows += 1
            try:
                example = _parse_line(raw, max_row_bytes, max_question_chars)
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
    if not rows and limit != 0:
        raise ValueError(
            f"task file {path} has no rows (it is empty or blank); write one JSON object per "
            f"line: {ROW_SCHEMA}"
        )
    if skipped and not examples:
        raise ValueError(f"{path}: all {skipped} rows are bad (see the warnings above)")
    if skipped:
        logger.warning("%s: skipped %d bad row(s), kept %d", path, skipped, len(examples))
    return examples


def _lines(f: Any, max_bytes: int) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) per line; None for a line longer than `max_bytes`, whose rest
    is skipped in pieces rather than read into memory."""
    lineno = 0
    while True:
        raw = f.readline(max_bytes + 1)
        if not raw:
            return
        lineno += 1
        if len(raw) > max_bytes and not raw.endswith(b"\n"):
            while (rest := f.readline(1 << 20)) and not rest.endswith(b"\n"):
                pass
            yield lineno, None
            continue
        yield lineno, raw


def _parse_line(raw: bytes | None, max_bytes: int, max_question: int) -> Example:
    if raw is None:
        raise _BadRow(
            f"row longer than {max_bytes} bytes (task_options.max_row_bytes raises the limit)"
        )
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _BadRow(
            f"not UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1}); save the file as "
            "UTF-8, e.g. iconv -f latin1 -t utf-8 IN > OUT"
        ) from None
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise _BadRow(f"not valid JSON ({e.msg} at column {e.colno})") from None
    example = parse_row(row)
    if len(example.question) > max_question:
        raise _BadRow(
            f"question of {len(example.question)} characters, over the limit of {max_question} "
            "(longer than a small model's context; task_options.max_question_chars raises it)"
        )
    return example
