"""Hybrid retrieval: BM25 and dense rankings fused by reciprocal rank (RRF).

    rrf(d) = sum over rankings r containing d of 1 / (rrf_k + rank_r(d)),  rank from 1

as in Cormack, Clarke and Buettcher, "Reciprocal Rank Fusion outperforms Condorcet
and individual rank learning methods" (SIGIR 2009), whose k = 60 is the default.
Each retriever contributes its top `depth` passages (default 100); a passage missing
from one list gets nothing from it. Scores are not mixed, only ranks, so BM25's
unbounded scores and cosine similarities need no calibration. Equal fused scores
are ordered by corpus row, so results are deterministic.

What this module does not do: learned or weighted fusion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from trajlab.retrieval.base import Hit, check_k, make_hits
from trajlab.retrieval.bm25 import BM25Index
from trajlab.retrieval.corpus import Passage
from trajlab.retrieval.dense import DenseIndex


@dataclass
class HybridConfig:
    rrf_k: int = 60  # RRF smoothing constant (Cormack et al. 2009)
    depth: int = 100  # how many hits each retriever contributes before fusion

    def __post_init__(self) -> None:
        if self.rrf_k < 0 or self.depth < 1:
            raise ValueError(
                f"HybridConfig needs rrf_k >= 0 and depth >= 1, got rrf_k={self.rrf_k}, depth={self.depth}"
            )


def rrf_fuse(rankings: list[Sequence[int]], rrf_k: int, k: int) -> list[tuple[int, float]]:
    """Fuse ranked row lists (best first) into the top k (row, rrf score), best first."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, row in enumerate(ranking, start=1):
            fused[int(row)] = fused.get(int(row), 0.0) + 1.0 / (rrf_k + rank)
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:k]


class HybridIndex:
    """BM25 + dense with RRF; satisfies `Retriever`."""

    def __init__(
        self,
        bm25: BM25Index,
        dense: DenseIndex,
        passages: Sequence[Passage],
        config: HybridConfig,
        index_version: str,
    ):
        self.bm25 = bm25
        self.dense = dense
        self.passages = passages
        self.config = config
        self.index_version = index_version

    def _fuse(self, lexical: np.ndarray, semantic: np.ndarray, k: int) -> list[Hit]:
        fused = rrf_fuse([lexical.tolist(), semantic.tolist()], self.config.rrf_k, k)
        return make_hits([self.passages[row] for row, _ in fused], [s for _, s in fused])

    def search(self, query: str, k: int = 10) -> list[Hit]:
        return self.search_batch([query], k)[0]

    def search_batch(self, queries: list[str], k: int = 10) -> list[list[Hit]]:
        depth = max(check_k(k), self.config.depth)
        lexical = self.bm25.search_rows_batch(queries, depth)
        semantic = self.dense.search_rows_batch(queries, depth)
        return [self._fuse(lr, sr, k) for (lr, _), (sr, _) in zip(lexical, semantic)]

    def config_dict(self) -> dict:
        return asdict(self.config)
