"""The Retriever seam: a query in, ranked passages out.

Every index (BM25, dense, hybrid) and the in-memory `FakeRetriever` satisfy

    search(query, k) -> list[Hit]          # best first, rank 1 is the best
    search_batch(queries, k) -> list[list[Hit]]
    index_version: str                     # changes whenever results could change

`index_version` is what a result cache keys on (with the query and k): two indexes
with the same version return the same hits for the same query.

Ranking is deterministic: equal scores are ordered by corpus row, so a cache replay
and a fresh search agree. A search may return fewer than k hits (BM25 returns only
passages sharing at least one term with the query).

What this module does not do: format hits for a model (that is the search tool's job).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from trajlab.retrieval.corpus import Passage


@dataclass(frozen=True)
class Hit:
    id: str
    title: str
    text: str
    score: float  # retriever-specific: BM25 score, cosine similarity, or RRF score
    rank: int  # 1-based position in the result list


@runtime_checkable
class Retriever(Protocol):
    index_version: str

    def search(self, query: str, k: int = 10) -> list[Hit]: ...

    def search_batch(self, queries: list[str], k: int = 10) -> list[list[Hit]]: ...


def check_k(k: int) -> int:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return k


def top_k_rows(scores: np.ndarray, k: int, positive_only: bool = False) -> np.ndarray:
    """Rows of the k highest scores, best first; ties broken by lower row.

    scores: [N] float. Returns int64 [min(k, candidates)]. With positive_only, rows
    scoring <= 0 are never returned (BM25: no query term in the passage).
    """
    candidates = np.flatnonzero(scores > 0) if positive_only else np.arange(len(scores))
    if len(candidates) == 0:
        return candidates.astype(np.int64)
    cand_scores = scores[candidates]
    if len(candidates) > k:
        # Why not argpartition on the full vector: with many tied zeros it degrades badly
        # (5 ms per query on 51k BM25 scores); the candidate set here is small. Keep every
        # row tied with the k-th score so the tie-break below stays by row.
        kth = np.partition(cand_scores, len(cand_scores) - k)[len(cand_scores) - k]
        keep = cand_scores >= kth
        candidates, cand_scores = candidates[keep], cand_scores[keep]
    order = np.lexsort((candidates, -cand_scores.astype(np.float64)))[:k]
    return candidates[order].astype(np.int64)


def make_hits(passages: list[Passage], scores: list[float]) -> list[Hit]:
    return [
        Hit(p.id, p.title, p.text, float(s), rank)
        for rank, (p, s) in enumerate(zip(passages, scores), start=1)
    ]


_WORD = re.compile(r"\w+")


class FakeRetriever:
    """In-memory retriever for tests of tools and agents: scores = count of shared words.

    Deterministic, dependency-free and instant. Not a ranking model: use BM25Index for
    anything that measures retrieval quality.
    """

    def __init__(self, passages: list[Passage], index_version: str = "fake-1"):
        self.passages = list(passages)
        self.index_version = index_version
        self._words = [set(_WORD.findall(p.contents.lower())) for p in self.passages]

    def search(self, query: str, k: int = 10) -> list[Hit]:
        check_k(k)
        q = set(_WORD.findall(query.lower()))
        scores = np.array([len(q & w) for w in self._words], dtype=np.float64)
        rows = top_k_rows(scores, k, positive_only=True)
        return make_hits([self.passages[r] for r in rows], [scores[r] for r in rows])

    def search_batch(self, queries: list[str], k: int = 10) -> list[list[Hit]]:
        return [self.search(q, k) for q in queries]
