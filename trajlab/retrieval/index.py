"""Build an index directory from a JSONL corpus, and load it back as a Retriever.

    manifest = build_index("wiki.jsonl", "bm25", "indexes/wiki-bm25")
    retriever = load_index("indexes/wiki-bm25", corpus="wiki.jsonl")  # corpus optional
    retriever.search("who wrote Hamlet", k=5)

Directory layout (the same for every kind; a hybrid index holds both parts):

    manifest.json            see manifest.py
    passages.jsonl           the indexed passages, row order = index row
    passages.offsets.npy     byte offsets into passages.jsonl, int64 [N + 1]
    bm25/                    bm25s files (*.npy, memory-mapped on load)   bm25, hybrid
    dense/index.faiss        faiss IndexFlatIP (memory-mapped on load)    dense, hybrid

A build writes into a hidden sibling directory and renames it into place at the end,
so an interrupted build never leaves a half-written index behind a valid name.
Passing `corpus` to `load_index` checks the file's sha256 against the manifest and
refuses a mismatch with the rebuild command.

What this module does not do: incremental updates (rebuild instead; BM25 over 51k
passages takes seconds), sharding.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from trajlab.retrieval.base import Retriever
from trajlab.retrieval.bm25 import BM25Config, BM25Index
from trajlab.retrieval.corpus import PassageStore, fingerprint, read_corpus
from trajlab.retrieval.dense import DenseConfig, DenseIndex, Encoder
from trajlab.retrieval.hybrid import HybridConfig, HybridIndex
from trajlab.retrieval.manifest import (
    MANIFEST_FILE,
    IndexMismatchError,
    Manifest,
    check_corpus,
    directory_size,
    library_versions,
)

KINDS = ("bm25", "dense", "hybrid")
_LIBRARIES = {
    "bm25": ["trajlab", "numpy", "bm25s", "PyStemmer"],
    "dense": ["trajlab", "numpy", "faiss-cpu", "sentence-transformers", "transformers", "torch"],
}


def _libraries(kind: str) -> list[str]:
    parts = ["bm25", "dense"] if kind == "hybrid" else [kind]
    return sorted({name for part in parts for name in _LIBRARIES[part]})


def _prepare_out(out: Path, overwrite: bool) -> None:
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not (out / MANIFEST_FILE).is_file():
        raise FileExistsError(
            f"{out} exists and is not a trajlab index; choose another --out (nothing was deleted)"
        )
    if not overwrite:
        raise FileExistsError(f"{out} already holds an index; pass --force to replace it")


def build_index(
    corpus: str | Path,
    kind: str,
    out: str | Path,
    bm25: BM25Config | None = None,
    dense: DenseConfig | None = None,
    hybrid: HybridConfig | None = None,
    limit: int | None = None,
    overwrite: bool = False,
    show_progress: bool = False,
    encoder: Encoder | None = None,
) -> Manifest:
    """Build a `kind` index of `corpus` (first `limit` passages) into directory `out`."""
    if kind not in KINDS:
        raise ValueError(f"index kind {kind!r} is not one of {KINDS}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of passages, got {limit}")
    out = Path(out)
    _prepare_out(out, overwrite)
    started = time.perf_counter()
    passages = read_corpus(corpus, limit)
    tmp = out.parent / f".{out.name}.building-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        PassageStore.write(tmp, passages)
        config: dict[str, Any] = {}
        if kind in ("bm25", "hybrid"):
            bm25 = bm25 or BM25Config()
            BM25Index.build(passages, bm25, show_progress=show_progress).save(tmp)
            config["bm25"] = asdict(bm25)
        if kind in ("dense", "hybrid"):
            dense = dense or DenseConfig()
            index = DenseIndex.build(passages, dense, encoder=encoder, show_progress=show_progress)
            index.save(tmp)
            config["dense"] = asdict(dense) | {
                "model_sha256": getattr(index.encoder, "digest", None)
            }
        if kind == "hybrid":
            config["hybrid"] = asdict(hybrid or HybridConfig())
        manifest = Manifest(
            kind=kind,
            corpus=fingerprint(corpus, len(passages), limit),
            config=config,
            libraries=library_versions(_libraries(kind)),
            built_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        )
        manifest.size_bytes = directory_size(tmp)
        manifest.build_time_s = round(time.perf_counter() - started, 3)
        manifest.write(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def load_index(
    directory: str | Path,
    corpus: str | Path | None = None,
    mmap: bool = True,
    encoder: Encoder | None = None,
) -> Retriever:
    """The Retriever stored in `directory`; with `corpus`, refuse if it is not the indexed file.

    The returned object also carries `.manifest` (size, build time, versions).
    """
    directory = Path(directory)
    manifest = Manifest.read(directory)
    if corpus is not None:
        check_corpus(manifest, corpus, directory)
    store = PassageStore(directory)
    if len(store) != manifest.corpus.rows:
        raise IndexMismatchError(
            f"{directory}: manifest says {manifest.corpus.rows} passages but the store holds "
            f"{len(store)}; the index is damaged, rebuild it"
        )
    cfg, version = manifest.config, manifest.index_version
    bm25 = dense = None
    if manifest.kind in ("bm25", "hybrid"):
        bm25 = BM25Index.load(directory, store, BM25Config(**cfg["bm25"]), version, mmap=mmap)
    if manifest.kind in ("dense", "hybrid"):
        dense_cfg = dict(cfg["dense"])
        sha = dense_cfg.pop("model_sha256", None)
        dense = DenseIndex.load(
            directory, store, DenseConfig(**dense_cfg), version, sha, mmap=mmap, encoder=encoder
        )
    if manifest.kind == "bm25":
        retriever: Any = bm25
    elif manifest.kind == "dense":
        retriever = dense
    elif manifest.kind == "hybrid":
        retriever = HybridIndex(bm25, dense, store, HybridConfig(**cfg["hybrid"]), version)
    else:
        raise IndexMismatchError(
            f"{directory}: unknown index kind {manifest.kind!r}; one of {KINDS}"
        )
    retriever.manifest = manifest
    return retriever
