"""BM25 over a passage corpus, built and stored with bm25s (eager sparse scoring).

How: passages ("title\\ntext") are tokenised by bm25s's tokenizer (lower-case,
regex `(?u)\\b\\w\\w+\\b`, i.e. words of two or more characters, NLTK English
stopwords removed, then a PyStemmer Snowball stemmer, `english` by default). bm25s
precomputes every (term, passage) score into a CSC matrix saved as .npy files that
load memory-mapped. A query's scores are bm25s's `get_scores` (a sum of that matrix's
columns for the query's tokens, repeated tokens counted again, as rank_bm25 does).

Scoring (bm25s `method="lucene"`, as Lucene >= 8 and Pyserini):
    score(q, d) = sum_{t in q} idf(t) * tf / (tf + k1 * (1 - b + b * |d| / avgdl))
    idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5))
where |d| counts tokens after stopword removal. Defaults k1=0.9, b=0.4 are Pyserini's
BM25 defaults, which Search-R1's retriever (via FlashRAG) uses.

Departures: top-k selection is ours (`base.top_k_rows`), not bm25s's: its numpy path
runs argpartition over all N scores, and with most of them tied at exactly 0 that took
~5 ms per query on the 51k-passage corpus; selecting among positive scores takes a
fraction of that. Passages with score 0 (no query term) are never returned. The numba
backend is not used (not a dependency).

What this module does not do: phrase queries, fielded search, query expansion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from trajlab.retrieval.base import Hit, check_k, make_hits, top_k_rows
from trajlab.retrieval.corpus import Passage, passages_digest

BM25_DIR = "bm25"
STEMMERS = ("english", "porter", "none")  # PyStemmer algorithm names; "none" disables
METHODS = ("lucene", "robertson", "atire", "bm25l", "bm25+")  # bm25s scoring variants


@dataclass
class BM25Config:
    k1: float = 0.9  # term-frequency saturation (Pyserini default)
    b: float = 0.4  # length normalisation (Pyserini default)
    method: str = "lucene"  # bm25s variant; tf and idf formulas in the module docstring
    stopwords: str = "en"  # bm25s stopword list name ("en" = NLTK English), or "none"
    stemmer: str = "english"  # PyStemmer algorithm: english (Snowball) | porter | none

    def __post_init__(self) -> None:
        if self.stemmer not in STEMMERS:
            raise ValueError(f"BM25Config.stemmer={self.stemmer!r}; choose one of {STEMMERS}")
        if self.method not in METHODS:
            raise ValueError(f"BM25Config.method={self.method!r}; choose one of {METHODS}")
        if self.k1 < 0 or not 0 <= self.b <= 1:
            raise ValueError(
                f"BM25Config needs k1 >= 0 and 0 <= b <= 1, got k1={self.k1}, b={self.b}"
            )


def _import_bm25s():
    try:
        import bm25s
    except ImportError as e:
        raise ImportError(
            "BM25 retrieval needs bm25s: pip install 'trajlab[search]' (or pip install bm25s)"
        ) from e
    return bm25s


def make_stemmer(name: str):
    """The stemmer callable bm25s applies to a list of words, or None."""
    if name == "none":
        return None
    try:
        import Stemmer
    except ImportError as e:
        raise ImportError(
            f"BM25Config.stemmer={name!r} needs PyStemmer: pip install PyStemmer "
            "(part of trajlab[search]), or build with --stemmer none"
        ) from e
    return Stemmer.Stemmer(name).stemWords


class Tokenizer:
    """bm25s tokenisation with this config's stopwords and stemmer; one for corpus and queries."""

    def __init__(self, config: BM25Config):
        self.config = config
        self._stopwords = None if config.stopwords == "none" else config.stopwords
        self._stemmer = make_stemmer(config.stemmer)

    def __call__(self, texts: list[str], show_progress: bool = False) -> list[list[str]]:
        bm25s = _import_bm25s()
        return bm25s.tokenize(
            texts,
            lower=True,
            stopwords=self._stopwords,
            stemmer=self._stemmer,
            return_ids=False,
            show_progress=show_progress,
        )


class BM25Index:
    """BM25 retriever over passages; satisfies `Retriever`."""

    def __init__(self, model, passages: Sequence[Passage], config: BM25Config, index_version: str):
        self.model = model  # bm25s.BM25 with .scores loaded (possibly memory-mapped)
        self.passages = passages
        self.config = config
        self.index_version = index_version
        self.tokenizer = Tokenizer(config)

    @classmethod
    def build(
        cls,
        passages: Sequence[Passage],
        config: BM25Config | None = None,
        show_progress: bool = False,
    ) -> BM25Index:
        bm25s = _import_bm25s()
        config = config or BM25Config()
        tokenizer = Tokenizer(config)
        corpus_tokens = tokenizer([p.contents for p in passages], show_progress=show_progress)
        model = bm25s.BM25(k1=config.k1, b=config.b, method=config.method, backend="numpy")
        model.index(corpus_tokens, show_progress=show_progress)
        version = f"bm25-unsaved-{passages_digest(passages)}"
        return cls(model, passages, config, version)

    def save(self, directory: str | Path) -> None:
        self.model.save(Path(directory) / BM25_DIR, show_progress=False)

    @classmethod
    def load(
        cls,
        directory: str | Path,
        passages: Sequence[Passage],
        config: BM25Config,
        index_version: str,
        mmap: bool = True,
    ) -> BM25Index:
        bm25s = _import_bm25s()
        model = bm25s.BM25.load(Path(directory) / BM25_DIR, mmap=mmap, load_corpus=False)
        if model.scores["num_docs"] != len(passages):
            raise RuntimeError(
                f"{directory}: BM25 matrix has {model.scores['num_docs']} passages but the "
                f"passage store has {len(passages)}; the index is damaged, rebuild it"
            )
        return cls(model, passages, config, index_version)

    def scores(self, tokens: list[str]) -> np.ndarray:
        """BM25 score of every passage for a tokenised query: float32 [N]."""
        if not tokens:
            return np.zeros(self.model.scores["num_docs"], dtype=np.float32)
        return self.model.get_scores(tokens)

    def search_rows(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._rows_for_tokens(self.tokenizer([query])[0], k)

    def _rows_for_tokens(self, tokens: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = self.scores(tokens)
        rows = top_k_rows(scores, k, positive_only=True)
        return rows, scores[rows]

    def search_rows_batch(self, queries: list[str], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        return [self._rows_for_tokens(t, k) for t in self.tokenizer(list(queries))]

    def _hits(self, rows: np.ndarray, scores: np.ndarray) -> list[Hit]:
        return make_hits([self.passages[int(r)] for r in rows], scores.tolist())

    def search(self, query: str, k: int = 10) -> list[Hit]:
        return self._hits(*self.search_rows(query, check_k(k)))

    def search_batch(self, queries: list[str], k: int = 10) -> list[list[Hit]]:
        return [self._hits(r, s) for r, s in self.search_rows_batch(queries, check_k(k))]

    def config_dict(self) -> dict:
        return asdict(self.config)
