"""Local retrieval: BM25, dense and hybrid indexes over a JSONL passage corpus.

    trajlab index CORPUS.jsonl --kind bm25 --out DIR        # build (see cli.py)
    retriever = load_index(DIR)                             # memory-mapped
    retriever.search("query", k=5) -> list[Hit]             # id, title, text, score, rank

Every index satisfies the `Retriever` protocol (base.py); `FakeRetriever` is the
in-memory stand-in for tests of tools and agents. Heavy libraries (bm25s, faiss,
sentence-transformers) are imported only when an index of that kind is built or loaded.
Details and measured speed: docs/retrieval.md.
"""

from trajlab.retrieval.base import FakeRetriever, Hit, Retriever
from trajlab.retrieval.bm25 import BM25Config, BM25Index
from trajlab.retrieval.corpus import CorpusError, Passage, read_corpus
from trajlab.retrieval.dense import DenseConfig, DenseIndex
from trajlab.retrieval.hybrid import HybridConfig, HybridIndex, rrf_fuse
from trajlab.retrieval.index import KINDS, build_index, load_index
from trajlab.retrieval.manifest import IndexMismatchError, Manifest

__all__ = [
    "KINDS",
    "BM25Config",
    "BM25Index",
    "CorpusError",
    "DenseConfig",
    "DenseIndex",
    "FakeRetriever",
    "Hit",
    "HybridConfig",
    "HybridIndex",
    "IndexMismatchError",
    "Manifest",
    "Passage",
    "Retriever",
    "build_index",
    "load_index",
    "read_corpus",
    "rrf_fuse",
]
