"""The `search` tool: a query in, the top-k passages (with titles) out, formatted for the model.

    tool = SearchTool.from_config(SearchConfig(search_index="indexes/wiki-bm25", search_k=3))
    tool.run({"query": "who directed Kiss and Tell"})
    # ToolResult(output="Doc 1(Title: Kiss and Tell (1945 film)) Kiss and Tell is a ...\\n...")

Pieces, each replaceable:

* a backend: any `trajlab.retrieval.Retriever` (`load_index(DIR)`: BM25, dense,
  hybrid; `FakeRetriever` in tests) or `WebSearch`, an HTTP JSON client that is off
  by default and needs an explicit URL;
* a `ResultCache` keyed by (normalised query, k, index_version), persisted as JSONL,
  with modes off | rw (read, and append misses) | replay (cache only; a miss raises
  `CacheMissError` naming the query), so evaluations and ablations can be rerun
  exactly and without the index;
* a formatter (FORMATS) writing hits the way each method showed them to its model
  (from each method's released code). The protocol then wraps the text in its
  result markers (<information>, the documents block, <result>, <document>):

    search_r1    Doc 1(Title: T) text\\n                 (Search-R1, generation.py)
    r1_searcher  (1) T\\ntext\\n                          (R1-Searcher: "(1)..." numbering;
                                                           the title line is ours)
    blocks       T\\ntext  joined by a blank line          (Tool-Star's local retriever;
                                                           R1-Searcher++'s <document>
                                                           content is not published)

  `parse_documents` reads each format back (round-trip tests, the viewer).
* per-call truncation: `search_max_chars` keeps the first N characters of the
  formatted observation; `search_max_tokens` keeps the first N tokens of the model's
  tokenizer (Search-R1 cuts observations to max_obs_length=500 tokens this way).
  No marker is added, as in Search-R1. 0 disables each.

Queries are normalised (whitespace collapsed, case folded) and the backend is asked
the normalised query, so a cached answer and a fresh search always agree.

Where the hits are recorded: `ToolResult.metadata["retrieved"] = {"hits": [{id, title,
rank, score}], "cache": hit|miss|off, "index_version": ...}`. The agent loop keeps it as
`ToolCall.metadata`, which is where `trajlab.rewards.qa.retrieval_recall` finds the
retrieved titles; the call's args stay exactly what the model asked.

What this module does not do: build indexes (trajlab/retrieval), rerank, or rewrite
queries. The web backend does not scrape pages; it expects a JSON search API.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from trajlab.config import opt
from trajlab.retrieval.base import Hit
from trajlab.tools.base import ToolResult, function_schema

FORMATS = ("auto", "search_r1", "r1_searcher", "blocks")
CACHE_MODES = ("off", "rw", "replay")
BACKENDS = ("local", "web")
CACHE_FILE = "search_cache.jsonl"

# The format each protocol's paper used; `auto` picks from here.
PROTOCOL_FORMATS = {
    "search_r1": "search_r1",
    "r1_searcher": "r1_searcher",
    "r1_searcher_pp": "blocks",
    "tags": "blocks",
    "native": "search_r1",
    "code": "blocks",
}


@dataclass
class SearchConfig:
    """Settings of the search tool (flags: --search-index, --search-k, ...)."""

    search_index: str = opt("", "index directory built by `trajlab index` (local backend)")
    search_k: int = opt(3, "passages per search call (Search-R1, R1-Searcher: 3)")
    search_format: str = opt(
        "auto", "how passages are written; auto follows the protocol", choices=FORMATS
    )
    search_max_chars: int = opt(0, "keep the first N characters of each observation (0: all)")
    search_max_tokens: int = opt(
        0, "keep the first N tokenizer tokens of each observation (Search-R1: 500; 0: all)"
    )
    search_cache_dir: str = opt("", "directory of the JSONL result cache (empty: no cache)")
    search_cache_mode: str = opt(
        "rw",
        "off, rw (read and fill), replay (cache only, a miss is an error)",
        choices=CACHE_MODES,
    )
    search_backend: str = opt("local", "local index or an HTTP web-search API", choices=BACKENDS)
    search_web_url: str = opt("", "web backend: URL of a JSON search endpoint (POST)")
    search_web_key_env: str = opt(
        "", "web backend: name of the environment variable holding the API key (never the key)"
    )
    search_web_timeout_s: float = opt(10.0, "web backend: HTTP timeout per request")

    def __post_init__(self) -> None:
        if self.search_k < 1:
            raise ValueError(f"search_k must be >= 1, got {self.search_k}")
        if self.search_max_chars < 0 or self.search_max_tokens < 0:
            raise ValueError("search_max_chars and search_max_tokens must be >= 0 (0 disables)")

    def check(self) -> None:
        """What would stop the tool from starting, found before any model loads."""
        from pathlib import Path

        if self.search_backend == "web":
            if not self.search_web_url:
                raise ValueError("search_backend=web needs --search-web-url")
            return
        if self.search_cache_mode == "replay" and not self.search_cache_dir:
            raise ValueError("search_cache_mode=replay needs --search-cache-dir")
        if not self.search_index:
            raise ValueError(
                "the search tool needs an index: build one with "
                "`trajlab index CORPUS.jsonl --kind bm25 --out DIR` and pass --search-index DIR"
            )
        if not Path(self.search_index).is_dir():
            raise ValueError(
                f"search_index {self.search_index!r} is not a directory; build it with "
                f"`trajlab index CORPUS.jsonl --kind bm25 --out {self.search_index}`"
            )


# -- queries and formatting (pure) ---------------------------------------------


def normalise_query(query: str) -> str:
    """The cache key's query: whitespace collapsed, case folded."""
    return " ".join(query.split()).casefold()


def _one_line(s: str) -> str:
    return " ".join(s.split())


def format_hits(hits: list[Hit], fmt: str) -> str:
    """Hits as the observation text of format `fmt` (see the module docstring)."""
    if fmt == "search_r1":
        return "".join(
            f"Doc {h.rank}(Title: {_one_line(h.title)}) {_one_line(h.text)}\n" for h in hits
        )
    if fmt == "r1_searcher":
        return "".join(f"({h.rank}) {_one_line(h.title)}\n{_one_line(h.text)}\n" for h in hits)
    if fmt == "blocks":
        return "\n\n".join(f"{_one_line(h.title)}\n{_one_line(h.text)}" for h in hits)
    raise ValueError(f"unknown search format {fmt!r}; choose one of {', '.join(FORMATS[1:])}")


_SEARCH_R1_DOC = re.compile(r"^Doc (\d+)\(Title: (.*?)\) (.*)$")
_R1S_DOC = re.compile(r"^\((\d+)\) (.*)$")


def parse_documents(text: str, fmt: str) -> list[tuple[str, str]]:
    """Inverse of `format_hits`: the (title, text) pairs in an observation, in order.

    Exact for titles without ") " (search_r1) and texts on one line, which
    `format_hits` guarantees by collapsing whitespace.
    """
    lines = text.split("\n")
    if fmt == "search_r1":
        out = []
        for line in lines:
            if m := _SEARCH_R1_DOC.match(line):
                out.append((m.group(2), m.group(3)))
        return out
    if fmt == "r1_searcher":
        out = []
        for i, line in enumerate(lines[:-1]):
            if (m := _R1S_DOC.match(line)) and not _R1S_DOC.match(lines[i + 1]):
                out.append((m.group(2), lines[i + 1]))
        return out
    if fmt == "blocks":
        blocks = [b for b in text.split("\n\n") if b.strip()]
        return [tuple(b.split("\n", 1)) if "\n" in b else (b, "") for b in blocks]  # type: ignore[misc]
    raise ValueError(f"unknown search format {fmt!r}; choose one of {', '.join(FORMATS[1:])}")


def truncate_chars(text: str, max_chars: int) -> str:
    return text if max_chars <= 0 or len(text) <= max_chars else text[:max_chars]


def truncate_tokens(text: str, max_tokens: int, tokenizer: Any) -> str:
    """The first `max_tokens` tokens of `text`, decoded (Search-R1's observation cut)."""
    if max_tokens <= 0:
        return text
    ids = tokenizer.encode(text, add_special_tokens=False)
    return text if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens])


# -- backends -----------------------------------------------------------------


class Backend(Protocol):
    index_version: str

    def search(self, query: str, k: int = 10) -> list[Hit]: ...


class WebSearchError(RuntimeError):
    """The web-search endpoint failed or answered in an unexpected shape."""


class WebSearch:
    """A JSON web-search API behind the Retriever interface. Off unless configured.

    Request:  POST url, body {"query": q, "k": k}, header `Authorization: Bearer KEY`
              when `key_env` names an environment variable holding the key.
    Response: {"results": [{"title": ..., "text" | "snippet": ..., "id" | "url": ...}, ...]}

    Adapt a provider with a small proxy that speaks this shape. Results are never
    deterministic across days, so evaluations should run it with the cache in `rw`
    mode once and then `replay`.
    """

    def __init__(self, url: str, key_env: str = "", timeout_s: float = 10.0) -> None:
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(
                f"search_web_url must be an http(s) URL, got {url!r}; "
                "set --search-web-url or use --search-backend local"
            )
        self.url = url
        self.timeout_s = timeout_s
        self.key = None
        if key_env:
            self.key = os.environ.get(key_env)
            if not self.key:
                raise ValueError(
                    f"search_web_key_env names ${key_env}, which is not set; export it or "
                    "leave search_web_key_env empty for an endpoint without a key"
                )
        # Keyed by endpoint (not the key): different endpoints never share cache entries.
        self.index_version = f"web-{parsed.netloc}{parsed.path}"

    def search(self, query: str, k: int = 10) -> list[Hit]:
        body = json.dumps({"query": query, "k": k}).encode()
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                data = json.loads(resp.read().decode("utf-8"))
        except (urllib.error.URLError, TimeoutError, json.JSONDecodeError) as e:
            raise WebSearchError(f"web search at {self.url} failed: {e}") from e
        results = data.get("results") if isinstance(data, dict) else None
        if not isinstance(results, list):
            raise WebSearchError(
                f"web search at {self.url} answered without a 'results' list: {str(data)[:200]}"
            )
        hits = []
        for rank, r in enumerate(results[:k], start=1):
            text = r.get("text", r.get("snippet", ""))
            hits.append(
                Hit(
                    str(r.get("id", r.get("url", rank))),
                    str(r.get("title", "")),
                    str(text),
                    0.0,
                    rank,
                )
            )
        return hits


# -- the cache ----------------------------------------------------------------


class CacheMissError(LookupError):
    """Replay mode found no cached result for a query."""


class ResultCache:
    """Search results keyed by (normalised query, k, index_version), persisted as JSONL.

    One line per entry: {"query", "k", "index_version", "hits": [Hit fields]}. Lines
    are appended as misses are filled, so an interrupted run keeps what it fetched;
    a torn last line is ignored on load. Thread-safe: the agent loop runs calls from
    a thread pool.
    """

    def __init__(self, directory: str | Path, mode: str = "rw") -> None:
        if mode not in CACHE_MODES:
            raise ValueError(f"cache mode {mode!r}; choose one of {', '.join(CACHE_MODES)}")
        self.mode = mode
        self.path = Path(directory) / CACHE_FILE
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, int, str], list[Hit]] = {}
        if mode == "replay" and not self.path.exists():
            raise FileNotFoundError(
                f"search cache replay: {self.path} does not exist; run once with "
                "--search-cache-mode rw to fill it"
            )
        if mode != "off" and self.path.exists():
            self._load()

    def _load(self) -> None:
        lines = self.path.read_text(encoding="utf-8").split("\n")
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                if i == len(lines) - 1:
                    continue  # torn final write
                raise ValueError(
                    f"{self.path}:{i + 1}: not a cache entry; delete the file"
                ) from None
            key = (d["query"], int(d["k"]), d["index_version"])
            self._entries[key] = [Hit(**h) for h in d["hits"]]

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, query: str, k: int, index_version: str) -> list[Hit] | None:
        if self.mode == "off":
            return None
        with self._lock:
            hits = self._entries.get((normalise_query(query), k, index_version))
        if hits is None and self.mode == "replay":
            raise CacheMissError(
                f"search cache replay: no entry for query {normalise_query(query)!r} "
                f"(k={k}, index {index_version}) in {self.path}; rerun with "
                "--search-cache-mode rw to fetch it"
            )
        return hits

    def put(self, query: str, k: int, index_version: str, hits: list[Hit]) -> None:
        if self.mode != "rw":
            return
        key = (normalise_query(query), k, index_version)
        line = json.dumps(
            {
                "query": key[0],
                "k": k,
                "index_version": index_version,
                "hits": [asdict(h) for h in hits],
            },
            ensure_ascii=False,
        )
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = list(hits)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")


# -- the tool -----------------------------------------------------------------


class _LazyIndex:
    """Loads a local index on its first search; reads only the manifest before that.

    Replay runs never load the index (its version comes from manifest.json).
    """

    def __init__(self, directory: str) -> None:
        from trajlab.retrieval.manifest import Manifest

        self.directory = directory
        self.index_version = Manifest.read(directory).index_version
        self._retriever: Any = None
        self._lock = threading.Lock()

    def search(self, query: str, k: int = 10) -> list[Hit]:
        with self._lock:
            if self._retriever is None:
                from trajlab.retrieval import load_index

                self._retriever = load_index(self.directory)
        return self._retriever.search(query, k)


class SearchTool:
    name = "search"
    schema = function_schema(
        "search",
        "Search the document collection and return the top passages.",
        {"query": "a short keyword query"},
    )

    def __init__(
        self,
        backend: Backend,
        k: int = 3,
        fmt: str = "search_r1",
        cache: ResultCache | None = None,
        max_chars: int = 0,
        max_tokens: int = 0,
        tokenizer: Any = None,
    ) -> None:
        if fmt not in FORMATS[1:]:
            raise ValueError(f"search format {fmt!r}; choose one of {', '.join(FORMATS[1:])}")
        if max_tokens and tokenizer is None:
            raise ValueError("search_max_tokens needs the model's tokenizer; use search_max_chars")
        self.backend, self.k, self.fmt, self.cache = backend, k, fmt, cache
        self.max_chars, self.max_tokens, self.tokenizer = max_chars, max_tokens, tokenizer

    @classmethod
    def from_config(
        cls, config: SearchConfig, protocol: str = "search_r1", tokenizer: Any = None
    ) -> SearchTool:
        cache = (
            ResultCache(config.search_cache_dir, config.search_cache_mode)
            if config.search_cache_dir and config.search_cache_mode != "off"
            else None
        )
        if config.search_cache_mode == "replay" and cache is None:
            raise ValueError("search_cache_mode=replay needs --search-cache-dir")
        backend: Backend
        if config.search_backend == "web":
            backend = WebSearch(
                config.search_web_url, config.search_web_key_env, config.search_web_timeout_s
            )
        else:
            if not config.search_index:
                raise ValueError(
                    "the search tool needs an index: build one with "
                    "`trajlab index CORPUS.jsonl --kind bm25 --out DIR` and pass --search-index DIR"
                )
            backend = _LazyIndex(config.search_index)
        fmt = config.search_format
        if fmt == "auto":
            fmt = PROTOCOL_FORMATS.get(protocol, "search_r1")
        return cls(
            backend,
            k=config.search_k,
            fmt=fmt,
            cache=cache,
            max_chars=config.search_max_chars,
            max_tokens=config.search_max_tokens,
            tokenizer=tokenizer,
        )

    def search(self, query: str) -> tuple[list[Hit], str]:
        """Hits for `query` and where they came from: hit | miss | off (no cache)."""
        q = normalise_query(query)
        version = self.backend.index_version
        if self.cache is None:
            return self.backend.search(q, self.k), "off"
        cached = self.cache.get(q, self.k, version)
        if cached is not None:
            return cached, "hit"
        hits = self.backend.search(q, self.k)
        self.cache.put(q, self.k, version, hits)
        return hits, "miss"

    def run(self, args: dict[str, Any]) -> ToolResult:
        t0 = time.perf_counter()
        query = args.get("query")
        if not isinstance(query, str) or not query.strip():
            return ToolResult(
                output="Error: the search query is empty; write keywords between the search tags.",
                ok=False,
                status="bad_args",
                error="empty query",
            )
        hits, source = self.search(query)
        retrieved = {
            "hits": [
                {"id": h.id, "title": h.title, "rank": h.rank, "score": h.score} for h in hits
            ],
            "cache": source,
            "index_version": self.backend.index_version,
        }
        if not hits:
            text = f"No passages match the query {normalise_query(query)!r}."
            status = "no_results"
        else:
            text = format_hits(hits, self.fmt)
            status = "ok"
        text = truncate_chars(text, self.max_chars)
        if self.max_tokens:
            text = truncate_tokens(text, self.max_tokens, self.tokenizer)
        return ToolResult(
            output=text,
            ok=True,
            status=status,
            latency_s=time.perf_counter() - t0,
            metadata={"retrieved": retrieved},
        )

    def close(self) -> None:
        pass
