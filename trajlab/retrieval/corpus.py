"""Passage corpora: read a JSONL corpus, fingerprint it, and store passages for an index.

A corpus is one JSON object per line. Two row shapes are accepted (the second is
FlashRAG's, which Search-R1's retriever uses):

    {"id": "p1", "title": "Paris", "text": "Paris is the capital of France."}
    {"id": "p1", "contents": "\"Paris\"\nParis is the capital of France."}

`contents` is "title\\ntext": when a row has no `text`, the first line of `contents`
is the title (one pair of surrounding double quotes is stripped, as FlashRAG writes
them) and the rest is the text. When a row has both, `text` wins and `title` comes
from the row if present. Every other field is ignored. A bad row raises
`CorpusError` naming the file, the line, the problem and the expected schema:
nothing is skipped silently, because a silently dropped passage is a recall bug no
metric will point at.

`PassageStore` is the index's own copy of the passages (the source file may move or
change): `passages.jsonl` plus `passages.offsets.npy` (int64 byte offsets, [N + 1]),
both read through memory maps, so loading costs nothing and a lookup decodes one line.

What this module does not do: tokenise, embed or search.
"""

from __future__ import annotations

import hashlib
import json
import mmap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

EXPECTED_SCHEMA = (
    "expected one JSON object per line with 'id' (string or integer), 'title' (string) "
    "and 'text' (string), or 'id' and 'contents' (string, \"title\\ntext\")"
)
PASSAGES_FILE = "passages.jsonl"
OFFSETS_FILE = "passages.offsets.npy"


class CorpusError(ValueError):
    """A corpus file that cannot be read as passages; the message names file, line and fix."""


@dataclass(frozen=True)
class Passage:
    id: str
    title: str
    text: str

    @property
    def contents(self) -> str:
        """What gets indexed: the title on the first line, then the text."""
        return f"{self.title}\n{self.text}" if self.title else self.text


@dataclass(frozen=True)
class CorpusFingerprint:
    """Identifies the corpus an index was built from."""

    path: str  # absolute path at build time (informational; the hash is what is checked)
    sha256: str  # of the whole file's bytes, even when --limit indexed a prefix
    size_bytes: int
    rows: int  # passages indexed
    limit: int | None  # --limit used at build time, None for the whole file

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "rows": self.rows,
            "limit": self.limit,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CorpusFingerprint:
        return cls(d["path"], d["sha256"], int(d["size_bytes"]), int(d["rows"]), d.get("limit"))


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _bad_row(path: Path, line_no: int, problem: str) -> CorpusError:
    return CorpusError(f"{path}:{line_no}: {problem}; {EXPECTED_SCHEMA}.")


def parse_row(row: Any, path: Path, line_no: int) -> Passage:
    """One decoded JSON value -> Passage, or CorpusError saying what is wrong with it."""
    if not isinstance(row, dict):
        raise _bad_row(path, line_no, f"row is a JSON {type(row).__name__}, not an object")
    if "id" not in row:
        raise _bad_row(path, line_no, "missing field 'id'")
    pid = row["id"]
    if isinstance(pid, bool) or not isinstance(pid, (str, int)) or pid == "":
        raise _bad_row(path, line_no, f"'id' must be a non-empty string or an integer, got {pid!r}")
    title = row.get("title")
    if title is not None and not isinstance(title, str):
        raise _bad_row(path, line_no, f"'title' must be a string, got {type(title).__name__}")
    if "text" in row:
        text = row["text"]
        if not isinstance(text, str):
            raise _bad_row(path, line_no, f"'text' must be a string, got {type(text).__name__}")
        if title is None:
            raise _bad_row(path, line_no, "has 'text' but no 'title'")
        return Passage(str(pid), title, text)
    if "contents" in row:
        contents = row["contents"]
        if not isinstance(contents, str):
            raise _bad_row(
                path, line_no, f"'contents' must be a string, got {type(contents).__name__}"
            )
        head, _, rest = contents.partition("\n")
        if title is None:
            title = head[1:-1] if len(head) >= 2 and head[0] == head[-1] == '"' else head
        return Passage(str(pid), title, rest)
    raise _bad_row(path, line_no, "has neither 'text' nor 'contents'")


def iter_corpus(path: str | Path, limit: int | None = None) -> Iterator[Passage]:
    """Passages of a JSONL corpus in file order; blank lines are skipped, bad rows raise."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"corpus file {path} does not exist; {EXPECTED_SCHEMA}.")
    seen: dict[str, int] = {}
    count = 0
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if limit is not None and count >= limit:
                return
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise _bad_row(path, line_no, f"invalid JSON ({e.msg} at column {e.colno})") from e
            passage = parse_row(row, path, line_no)
            if passage.id in seen:
                raise _bad_row(
                    path,
                    line_no,
                    f"duplicate id {passage.id!r} (first seen on line {seen[passage.id]})",
                )
            seen[passage.id] = line_no
            count += 1
            yield passage


def read_corpus(path: str | Path, limit: int | None = None) -> list[Passage]:
    passages = list(iter_corpus(path, limit))
    if not passages:
        raise CorpusError(f"{path}: no passages found; {EXPECTED_SCHEMA}.")
    return passages


def fingerprint(path: str | Path, rows: int, limit: int | None) -> CorpusFingerprint:
    p = Path(path).resolve()
    return CorpusFingerprint(str(p), file_sha256(p), p.stat().st_size, rows, limit)


def passages_digest(passages: Sequence[Passage]) -> str:
    """Content hash, the index_version of indexes that were never saved."""
    h = hashlib.sha256()
    for p in passages:
        h.update(f"{p.id}\x00{p.title}\x00{p.text}\x01".encode())
    return h.hexdigest()[:12]


class PassageStore:
    """Passages by row number, read lazily from a memory-mapped JSONL file."""

    def __init__(self, directory: str | Path):
        directory = Path(directory)
        self.offsets = np.load(directory / OFFSETS_FILE, mmap_mode="r")  # int64 [N + 1]
        self._file = open(directory / PASSAGES_FILE, "rb")  # noqa: SIM115 - lives with the store
        size = directory.joinpath(PASSAGES_FILE).stat().st_size
        self._mm = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if size else b""

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, row: int) -> Passage:
        start, end = int(self.offsets[row]), int(self.offsets[row + 1])
        d = json.loads(self._mm[start:end])
        return Passage(d["id"], d["title"], d["text"])

    def close(self) -> None:
        if isinstance(self._mm, mmap.mmap):
            self._mm.close()
        self._file.close()

    @staticmethod
    def write(directory: str | Path, passages: list[Passage]) -> None:
        directory = Path(directory)
        offsets = np.zeros(len(passages) + 1, dtype=np.int64)
        with open(directory / PASSAGES_FILE, "wb") as f:
            for i, p in enumerate(passages):
                line = json.dumps(
                    {"id": p.id, "title": p.title, "text": p.text}, ensure_ascii=False
                )
                data = (line + "\n").encode("utf-8")
                f.write(data)
                offsets[i + 1] = offsets[i] + len(data)
        np.save(directory / OFFSETS_FILE, offsets)
