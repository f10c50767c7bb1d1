"""A byte-offset index and compact summary table over trajectories JSONL files.

The viewer must open a file of 100,000 trajectories (over a gigabyte: every token id
and logprob is in it) in under two seconds, so it never loads the file. Instead:

1. `FileIndex` scans the file once, line by line, in a background thread, and keeps
   per line its byte offset and length plus a summary row (example id, step, reward,
   correctness, stop reason, tool calls and errors, token counts, a lower-cased search
   text). Rows are published in chunks, so the first page is served after the first
   few hundred lines, while the rest is still being indexed.
2. A summary is extracted without decoding the long number arrays: arrays of plain
   numbers that are the value of a JSON key are replaced by their length before
   `json.loads` (3x faster than a full parse; see `summarize_line`).
3. A complete index is cached next to the file as `.<name>.viewer-index.npz`,
   invalidated by size and mtime. Files only ever grow by appended lines (the
   harness and trainer append), so a grown file keeps its cached prefix and only
   the new lines are indexed; a shrunk or rewritten file is indexed from scratch.
4. Filters and paging run over numpy columns of the summary table (milliseconds for
   100,000 rows); a page then reads just its lines from disk by offset.

Correctness of a trajectory, in order of precedence: metadata["correct"] if it is a
bool; else a reward component named correct / accuracy / correctness > 0; else
reward.total > 0; else unknown.

The search text holds the example id, prediction, tool arguments and results and the
text of every non-prompt segment plus the last 300 characters of the prompt (where
the question sits), capped at SEARCH_CHARS characters per trajectory.

What this module does not do: validate trajectories (the viewer shows what is there),
or index anything but JSONL trajectory files.
"""

from __future__ import annotations

import json
import math
import os
import queue
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

INDEX_VERSION = 2
SEARCH_CHARS = 2000
PROMPT_TAIL_CHARS = 300
PREDICTION_CHARS = 80
PUBLISH_EVERY = 256  # lines per published chunk
CACHE_MIN_BYTES = 4 << 20  # smaller files index in well under a second: no cache file

# A JSON array of plain numbers that is the value of a key. The look-behind keeps the
# pattern out of string contents: inside a JSON string a quote is always escaped (\").
_NUM_ARRAY = re.compile(rb'(?<!\\)(": ?)\[([-0-9.eE+, ]*)\]')


def _array_to_count(m: re.Match[bytes]) -> bytes:
    body = m.group(2).strip()
    n = body.count(b",") + 1 if body else 0
    return m.group(1) + str(n).encode()


def _count(v: Any) -> int:
    if isinstance(v, list):
        return len(v)
    return int(v) if isinstance(v, (int, float)) else 0


NUM_COLUMNS = {  # name -> numpy dtype
    "offset": np.int64,
    "length": np.int64,
    "step": np.int64,  # -1 when unknown
    "sample_index": np.int64,
    "reward": np.float64,  # nan when absent
    "correct": np.int8,  # 1, 0, or -1 unknown
    "n_calls": np.int32,
    "n_errors": np.int32,
    "n_tokens": np.int32,
    "n_response": np.int32,
}
STR_COLUMNS = ("example_id", "group_id", "stop", "filtered", "prediction", "text")


def summarize_line(raw: bytes, default_step: int = -1) -> dict[str, Any]:
    """The summary row of one JSONL trajectory line (raises ValueError on bad JSON)."""
    d = json.loads(_NUM_ARRAY.sub(_array_to_count, raw))
    if not isinstance(d, dict) or "example_id" not in d:
        raise ValueError("not a trajectory record (no example_id)")
    meta = d.get("metadata") or {}
    train = meta.get("train") if isinstance(meta.get("train"), dict) else {}
    reward = d.get("reward") or None
    total = reward.get("total") if isinstance(reward, dict) else None
    comps = (reward.get("components") or {}) if isinstance(reward, dict) else {}
    calls = d.get("tool_calls") or []
    segs = d.get("segments") or []

    correct = -1
    if isinstance(meta.get("correct"), bool):
        correct = int(meta["correct"])
    else:
        for k in ("correct", "accuracy", "correctness"):
            if isinstance(comps.get(k), (int, float)):
                correct = int(comps[k] > 0)
                break
        else:
            if isinstance(total, (int, float)):
                correct = int(total > 0)

    step = train.get("step", meta.get("step", default_step))
    n_tokens = n_prompt = 0
    in_prompt = True
    texts, prompt_text = [], []
    for s in segs:
        n = _count(s.get("token_ids"))
        n_tokens += n
        if in_prompt and s.get("source") == "prompt":
            n_prompt += n
            prompt_text.append(s.get("text") or "")
        else:
            in_prompt = False
            texts.append(s.get("text") or "")
    pred = d.get("prediction")
    search = [str(d.get("example_id")), str(pred or ""), "".join(prompt_text)[-PROMPT_TAIL_CHARS:]]
    for c in calls:
        search.append(json.dumps(c.get("args"), ensure_ascii=False))
        search.append(str(c.get("result") or ""))
        search.append(str(c.get("error") or ""))
    search.extend(texts)
    return {
        "step": int(step) if isinstance(step, (int, float)) else default_step,
        "sample_index": int(d.get("sample_index") or 0),
        "reward": float(total)
        if isinstance(total, (int, float)) and math.isfinite(total)
        else math.nan,
        "correct": correct,
        "n_calls": len(calls),
        "n_errors": sum(1 for c in calls if c.get("ok") is False or c.get("error")),
        "n_tokens": n_tokens,
        "n_response": n_tokens - n_prompt,
        "example_id": str(d.get("example_id")),
        "group_id": str(d.get("group_id") or ""),
        "stop": str(d.get("stop_reason") or ""),
        "filtered": str(train.get("filtered") or ""),
        "prediction": str(pred)[:PREDICTION_CHARS] if pred is not None else "",
        "text": "\n".join(search).lower()[:SEARCH_CHARS],
    }


def _step_from_name(path: Path) -> int:
    m = re.search(r"step_(\d+)", path.name)
    return int(m.group(1)) if m else -1


class _Indexer:
    """One background thread that indexes files in the order they are requested."""

    def __init__(self) -> None:
        self.q: queue.Queue[FileIndex] = queue.Queue()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def submit(self, fi: FileIndex) -> None:
        self.q.put(fi)
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(
                    target=self._run, name="trajlab-indexer", daemon=True
                )
                self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                fi = self.q.get(timeout=2.0)
            except queue.Empty:
                return
            try:
                fi._build()
            except Exception as e:  # recorded on the index and shown to the user
                fi.error = f"{type(e).__name__}: {e}"
            finally:
                fi._queued = False


INDEXER = _Indexer()


class FileIndex:
    """Offsets and summary rows of one trajectories JSONL file, built incrementally."""

    def __init__(
        self, path: str | Path, cache: bool = True, cache_min_bytes: int = CACHE_MIN_BYTES
    ):
        self.path = Path(path)
        self.cache = cache
        self.cache_min_bytes = cache_min_bytes
        self.default_step = _step_from_name(self.path)
        self.lock = threading.Lock()
        self._reset()
        self._queued = False
        self.error: str | None = None
        self.from_cache = False
        if cache:
            self._load_cache()

    @property
    def cache_path(self) -> Path:
        return self.path.with_name(f".{self.path.name}.viewer-index.npz")

    def _reset(self) -> None:
        # Numeric columns: rows loaded from the disk cache as arrays (`base`), then rows
        # indexed since as lists (`num`); together they are rows 0..n_rows-1.
        self.base: dict[str, np.ndarray] = {k: np.zeros(0, dt) for k, dt in NUM_COLUMNS.items()}
        self.num: dict[str, list[Any]] = {k: [] for k in NUM_COLUMNS}
        self.strs: dict[str, list[str]] = {k: [] for k in STR_COLUMNS}
        self.n_rows = 0
        self.end = 0  # byte offset after the last indexed complete line
        self.bad_lines = 0
        self.stat: tuple[int, int] = (-1, -1)  # (size, mtime_ns) when `end` was reached
        self.version = 0  # bumped whenever rows change, for the caches of readers

    # -- freshness ----------------------------------------------------------
    def refresh(self) -> None:
        """Start (or continue) indexing if the file changed since it was last indexed."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        size, mtime = st.st_size, st.st_mtime_ns
        with self.lock:
            if (size, mtime) == self.stat or self._queued:
                return
            if size < self.end or (size == self.stat[0] and mtime != self.stat[1]):
                self._reset()  # rewritten, not appended: start again
                self.version += 1
            self._queued = True
        INDEXER.submit(self)

    @property
    def complete(self) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return True
        return (st.st_size, st.st_mtime_ns) == self.stat and not self._queued

    def progress(self) -> tuple[int, int]:
        """(bytes indexed, file size)."""
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            size = 0
        return self.end, size

    # -- building -----------------------------------------------------------
    def _build(self) -> None:
        st = os.stat(self.path)
        stat = (st.st_size, st.st_mtime_ns)
        pos = self.end
        chunk_num: dict[str, list[Any]] = {k: [] for k in NUM_COLUMNS}
        chunk_str: dict[str, list[str]] = {k: [] for k in STR_COLUMNS}
        bad = 0
        last_publish = time.perf_counter()
        with open(self.path, "rb") as f:
            f.seek(pos)
            for line in f:
                if not line.endswith(b"\n"):
                    break  # a line still being written: index it next time
                start, pos = pos, pos + len(line)
                if not line.strip():
                    continue
                try:
                    row = summarize_line(line, self.default_step)
                except (ValueError, TypeError, AttributeError):
                    bad += 1
                    continue
                row["offset"], row["length"] = start, len(line)
                for k in NUM_COLUMNS:
                    chunk_num[k].append(row[k])
                for k in STR_COLUMNS:
                    chunk_str[k].append(row[k])
                if (
                    len(chunk_num["offset"]) >= PUBLISH_EVERY
                    or time.perf_counter() - last_publish > 0.05
                ):
                    self._publish(chunk_num, chunk_str, pos, bad)
                    bad = 0
                    last_publish = time.perf_counter()
        # Bytes after `pos` (if any) are an unterminated last line; once the file grows,
        # refresh() sees a new size and indexing continues from `end`.
        self._publish(chunk_num, chunk_str, pos, bad, stat=stat)
        if self.cache and stat[0] >= self.cache_min_bytes:
            self._save_cache()

    def _publish(
        self,
        cnum: dict[str, list[Any]],
        cstr: dict[str, list[str]],
        pos: int,
        bad: int,
        stat: tuple[int, int] | None = None,
    ) -> None:
        with self.lock:
            for k in NUM_COLUMNS:
                self.num[k].extend(cnum[k])
                cnum[k].clear()
            for k in STR_COLUMNS:
                self.strs[k].extend(cstr[k])
                cstr[k].clear()
            self.n_rows = len(self.base["offset"]) + len(self.num["offset"])
            self.end = pos
            self.bad_lines += bad
            if stat is not None:
                self.stat = stat
            self.version += 1

    # -- reading ------------------------------------------------------------
    def columns(self) -> tuple[int, dict[str, np.ndarray], dict[str, list[str]]]:
        """A consistent snapshot: (n_rows, numeric columns as arrays, string columns)."""
        with self.lock:
            n = self.n_rows
            num = {
                k: np.concatenate([self.base[k], np.asarray(self.num[k], dtype=dt)])
                for k, dt in NUM_COLUMNS.items()
            }
            strs = {k: self.strs[k][:n] for k in STR_COLUMNS}
        return n, num, strs

    def read_raw(self, line_no: int, wait_s: float = 60.0) -> bytes:
        """The bytes of indexed line `line_no`, waiting for the indexer to reach it."""
        deadline = time.perf_counter() + wait_s
        while self.n_rows <= line_no and not self.complete and time.perf_counter() < deadline:
            time.sleep(0.01)
        with self.lock:
            if not 0 <= line_no < self.n_rows:
                raise IndexError(f"{self.path}: no indexed line {line_no} (indexed {self.n_rows})")
            nb = len(self.base["offset"])
            src, i = (self.base, line_no) if line_no < nb else (self.num, line_no - nb)
            off, length = int(src["offset"][i]), int(src["length"][i])
        with open(self.path, "rb") as f:
            f.seek(off)
            return f.read(length)

    def read(self, line_no: int) -> dict[str, Any]:
        return json.loads(self.read_raw(line_no))

    # -- disk cache ---------------------------------------------------------
    def _save_cache(self) -> None:
        n, num, strs = self.columns()
        meta = {
            "version": INDEX_VERSION,
            "size": self.stat[0],
            "mtime_ns": self.stat[1],
            "end": self.end,
            "n": n,
            "bad_lines": self.bad_lines,
        }
        arrays: dict[str, np.ndarray] = {
            "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        }
        arrays.update({f"n_{k}": v for k, v in num.items()})
        for k, vals in strs.items():
            # NUL-separated: one encode on save and one decode + split on load (fast at
            # 100,000 rows). A NUL inside a summary string becomes U+FFFD.
            joined = "\x00".join(v.replace("\x00", "\ufffd") for v in vals)
            arrays[f"s_{k}"] = np.frombuffer(joined.encode("utf-8"), dtype=np.uint8)
        for stale in self.cache_path.parent.glob(self.cache_path.name + ".tmp*"):
            stale.unlink(missing_ok=True)  # left by a viewer killed mid-write
        tmp = self.cache_path.with_name(self.cache_path.name + f".tmp{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, self.cache_path)
        except OSError:  # read-only run directory: keep the index in memory only
            tmp.unlink(missing_ok=True)

    def _load_cache(self) -> None:
        p = self.cache_path
        if not p.exists():
            return
        try:
            with np.load(p, allow_pickle=False) as z:
                meta = json.loads(z["meta"].tobytes())
                if meta.get("version") != INDEX_VERSION:
                    return
                st = os.stat(self.path)
                cached = (meta["size"], meta["mtime_ns"])
                if st.st_size < meta["end"] or (
                    st.st_size == cached[0] and st.st_mtime_ns != cached[1]
                ):
                    return  # rewritten since: the cache is stale
                base = {k: z[f"n_{k}"].astype(dt) for k, dt in NUM_COLUMNS.items()}
                strs = {}
                for k in STR_COLUMNS:
                    strs[k] = (
                        z[f"s_{k}"].tobytes().decode("utf-8").split("\x00") if meta["n"] else []
                    )
        except (OSError, ValueError, KeyError):
            return  # unreadable cache: index from the file instead
        self.base, self.strs = base, strs
        self.num = {k: [] for k in NUM_COLUMNS}
        self.n_rows, self.end, self.bad_lines = meta["n"], meta["end"], meta["bad_lines"]
        self.stat = cached
        self.from_cache = True
        self.version += 1


@dataclass
class Filters:
    """Browse filters; None means "any". Text search is a case-insensitive substring match."""

    step: int | None = None
    example: str | None = None  # substring of the example id
    example_id: str | None = None  # exact example id (used by compare)
    sample: int | None = None  # exact sample_index
    correct: bool | None = None
    stop: str | None = None
    tool_errors: bool | None = None  # True: at least one failed call; False: none
    has_tools: bool | None = None
    reward_min: float | None = None
    reward_max: float | None = None
    filtered: str | None = None  # metadata["train"]["filtered"] reason; "none" for unfiltered
    q: str | None = None
    sort: str = ""  # "", "reward", "-reward", "tokens", "-tokens"

    @classmethod
    def from_query(cls, qs: dict[str, str]) -> Filters:
        def opt_bool(v: str | None) -> bool | None:
            if v in (None, ""):
                return None
            if v.lower() in ("1", "true", "yes"):
                return True
            if v.lower() in ("0", "false", "no"):
                return False
            raise ValueError(f"expected true or false, got {v!r}")

        def opt_num(v: str | None, kind: type) -> Any:
            return None if v in (None, "") else kind(v)

        sort = qs.get("sort") or ""
        if sort not in ("", "reward", "-reward", "tokens", "-tokens"):
            raise ValueError(f"sort must be one of reward, -reward, tokens, -tokens; got {sort!r}")
        return cls(
            step=opt_num(qs.get("step"), int),
            example=qs.get("example") or None,
            example_id=qs.get("example_id") or None,
            sample=opt_num(qs.get("sample"), int),
            correct=opt_bool(qs.get("correct")),
            stop=qs.get("stop") or None,
            tool_errors=opt_bool(qs.get("tool_errors")),
            has_tools=opt_bool(qs.get("has_tools")),
            reward_min=opt_num(qs.get("reward_min"), float),
            reward_max=opt_num(qs.get("reward_max"), float),
            filtered=qs.get("filtered") or None,
            q=qs.get("q") or None,
            sort=sort,
        )


class RunIndex:
    """The concatenated summary table of a run's trajectory files (one file, or one per step)."""

    def __init__(
        self,
        files: Sequence[Path | FileIndex],
        cache: bool = True,
        cache_min_bytes: int = CACHE_MIN_BYTES,
    ):
        self.files = [
            f
            if isinstance(f, FileIndex)
            else FileIndex(f, cache=cache, cache_min_bytes=cache_min_bytes)
            for f in files
        ]
        self._table: tuple[tuple[int, ...], dict[str, Any]] | None = None
        self._lock = threading.Lock()

    def refresh(self) -> None:
        for f in self.files:
            f.refresh()

    def status(self) -> dict[str, Any]:
        done = sum(f.progress()[0] for f in self.files)
        size = sum(f.progress()[1] for f in self.files)
        return {
            "indexed_rows": sum(f.n_rows for f in self.files),
            "indexed_bytes": done,
            "total_bytes": size,
            "complete": all(f.complete for f in self.files),
            "bad_lines": sum(f.bad_lines for f in self.files),
            "errors": [f"{f.path}: {f.error}" for f in self.files if f.error],
        }

    def table(self) -> dict[str, Any]:
        """Concatenated columns plus file_no/line_no, rebuilt only when a file changed."""
        key = tuple(f.version for f in self.files)
        with self._lock:
            if self._table is not None and self._table[0] == key:
                return self._table[1]
        parts = [f.columns() for f in self.files]
        t: dict[str, Any] = {}
        for k, dt in NUM_COLUMNS.items():
            t[k] = np.concatenate([p[1][k] for p in parts]) if parts else np.zeros(0, dt)
        for k in STR_COLUMNS:
            t[k] = [s for p in parts for s in p[2][k]]
        t["file_no"] = (
            np.concatenate([np.full(p[0], i, np.int32) for i, p in enumerate(parts)])
            if parts
            else np.zeros(0, np.int32)
        )
        t["line_no"] = (
            np.concatenate([np.arange(p[0], dtype=np.int64) for p in parts])
            if parts
            else np.zeros(0, np.int64)
        )
        t["n"] = len(t["offset"])
        with self._lock:
            self._table = (key, t)
        return t

    def wait_for_rows(self, n: int, timeout: float) -> None:
        """Block until at least n rows are indexed, indexing is complete, or timeout."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            st = self.status()
            if st["indexed_rows"] >= n or st["complete"]:
                return
            time.sleep(0.01)

    def select(self, flt: Filters) -> np.ndarray:
        """Indices into table() of the rows that pass the filters, in browse order."""
        t = self.table()
        n = t["n"]
        keep = np.ones(n, dtype=bool)
        if flt.step is not None:
            keep &= t["step"] == flt.step
        if flt.correct is not None:
            keep &= t["correct"] == int(flt.correct)
        if flt.tool_errors is not None:
            keep &= (t["n_errors"] > 0) == flt.tool_errors
        if flt.has_tools is not None:
            keep &= (t["n_calls"] > 0) == flt.has_tools
        if flt.reward_min is not None:
            keep &= t["reward"] >= flt.reward_min  # nan compares False: rewardless rows drop out
        if flt.reward_max is not None:
            keep &= t["reward"] <= flt.reward_max
        for col, want in (("stop", flt.stop), ("filtered", flt.filtered)):
            if want is not None:
                target = "" if want == "none" else want
                keep &= np.fromiter((s == target for s in t[col]), dtype=bool, count=n)
        if flt.sample is not None:
            keep &= t["sample_index"] == flt.sample
        if flt.example_id is not None:
            keep &= np.fromiter((s == flt.example_id for s in t["example_id"]), dtype=bool, count=n)
        if flt.example:
            keep &= np.fromiter((flt.example in s for s in t["example_id"]), dtype=bool, count=n)
        if flt.q:
            q = flt.q.lower()
            idx = np.flatnonzero(keep)
            texts = t["text"]
            hits = np.fromiter((q in texts[i] for i in idx), dtype=bool, count=len(idx))
            keep = np.zeros(n, dtype=bool)
            keep[idx[hits]] = True
        idx = np.flatnonzero(keep)
        if flt.sort:
            col = t["reward"] if flt.sort.endswith("reward") else t["n_response"]
            vals = col[idx]
            order = np.argsort(-vals if flt.sort.startswith("-") else vals, kind="stable")
            idx = idx[order]
        return idx

    def rows(self, idx: Sequence[int]) -> list[dict[str, Any]]:
        """Summary rows (as JSON-ready dicts) for the given table indices."""
        t = self.table()
        out = []
        for i in idx:
            r = float(t["reward"][i])
            out.append(
                {
                    "ref": f"{int(t['file_no'][i])}:{int(t['line_no'][i])}",
                    "example_id": t["example_id"][i],
                    "group_id": t["group_id"][i],
                    "sample_index": int(t["sample_index"][i]),
                    "step": int(t["step"][i]) if t["step"][i] >= 0 else None,
                    "reward": None if math.isnan(r) else r,
                    "correct": {1: True, 0: False}.get(int(t["correct"][i])),
                    "stop_reason": t["stop"][i] or None,
                    "tool_calls": int(t["n_calls"][i]),
                    "tool_errors": int(t["n_errors"][i]),
                    "tokens": int(t["n_tokens"][i]),
                    "response_tokens": int(t["n_response"][i]),
                    "filtered": t["filtered"][i] or None,
                    "prediction": t["prediction"][i],
                }
            )
        return out

    def page(self, flt: Filters, offset: int = 0, limit: int = 50) -> dict[str, Any]:
        # The status first: indexing may finish while the page is built, and a status taken
        # after it could then say "complete" over a total counted before the last rows.
        status = self.status()
        idx = self.select(flt)
        offset = max(0, offset)
        limit = max(1, min(limit, 500))
        return {
            "total": int(len(idx)),
            "offset": offset,
            "limit": limit,
            "rows": self.rows(idx[offset : offset + limit]),
            "index": status,
        }

    def read(self, ref: str) -> dict[str, Any]:
        try:
            file_no, line_no = (int(x) for x in ref.split(":"))
            fi = self.files[file_no]
        except (ValueError, IndexError):
            raise KeyError(
                f"no trajectory {ref!r}: expected FILE:LINE from the browse API"
            ) from None
        return fi.read(line_no)

    def facets(self) -> dict[str, Any]:
        """Distinct values for the filter controls."""
        t = self.table()
        steps = sorted({int(s) for s in np.unique(t["step"]) if s >= 0})
        count = lambda col: {k: v for k, v in sorted(_counts(t[col]).items())}  # noqa: E731
        return {
            "steps": steps,
            "stop_reasons": count("stop"),
            "filtered": count("filtered"),
            "n": t["n"],
        }

    def stop_fractions_by_step(self) -> dict[int, dict[str, float]]:
        """Per step, the fraction of trajectories by stop reason (for alarms when metrics lack them)."""
        t = self.table()
        out: dict[int, dict[str, int]] = {}
        for s, stop in zip(t["step"].tolist(), t["stop"]):
            d = out.setdefault(s, {})
            d[stop] = d.get(stop, 0) + 1
        return {s: {k: v / sum(d.values()) for k, v in d.items()} for s, d in out.items()}


def _counts(values: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out
