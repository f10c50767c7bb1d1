"""The index manifest: what an index directory holds, what built it, and from which corpus.

`manifest.json` at the top of every index directory:

    format_version   int, bumped when the on-disk layout changes (loaders refuse others)
    kind             bm25 | dense | hybrid
    index_version    "<kind>-<12 hex>": hash of everything that determines results
                     (kind, corpus sha256 and rows, configs, model digest, library
                     versions); build time and paths are left out, so an identical
                     rebuild keeps its cached results valid
    corpus           path, sha256, size_bytes, rows, limit (CorpusFingerprint)
    config           the per-kind configs (dataclass fields)
    build_time_s     wall time of the build, seconds
    built_at         UTC timestamp
    size_bytes       bytes on disk of everything in the directory except the manifest
    libraries        versions of python, numpy and the retrieval libraries used

What this module does not do: load index data.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from trajlab.retrieval.corpus import CorpusFingerprint, file_sha256

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"


class IndexMismatchError(RuntimeError):
    """The index was not built from the corpus the caller passed (or is unreadable)."""


@dataclass
class Manifest:
    kind: str
    corpus: CorpusFingerprint
    config: dict[str, Any]
    libraries: dict[str, str]
    build_time_s: float = 0.0
    built_at: str = ""
    size_bytes: int = 0
    format_version: int = FORMAT_VERSION
    index_version: str = field(default="")

    def __post_init__(self) -> None:
        if not self.index_version:
            self.index_version = compute_index_version(
                self.kind, self.corpus, self.config, self.libraries
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "kind": self.kind,
            "index_version": self.index_version,
            "corpus": self.corpus.to_dict(),
            "config": self.config,
            "build_time_s": self.build_time_s,
            "built_at": self.built_at,
            "size_bytes": self.size_bytes,
            "libraries": self.libraries,
        }

    def write(self, directory: str | Path) -> None:
        path = Path(directory) / MANIFEST_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def read(cls, directory: str | Path) -> Manifest:
        path = Path(directory) / MANIFEST_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{directory} is not a trajlab index: {MANIFEST_FILE} is missing. "
                "Build one with: trajlab index CORPUS.jsonl --kind bm25 --out " + str(directory)
            )
        d = json.loads(path.read_text())
        if d.get("format_version") != FORMAT_VERSION:
            raise IndexMismatchError(
                f"{path}: index format_version {d.get('format_version')} but this trajlab reads "
                f"{FORMAT_VERSION}; rebuild it with: "
                + rebuild_command(
                    d.get("corpus", {}).get("path", "CORPUS.jsonl"),
                    d.get("kind", "bm25"),
                    directory,
                )
            )
        return cls(
            kind=d["kind"],
            corpus=CorpusFingerprint.from_dict(d["corpus"]),
            config=d["config"],
            libraries=d["libraries"],
            build_time_s=float(d["build_time_s"]),
            built_at=d["built_at"],
            size_bytes=int(d["size_bytes"]),
            format_version=d["format_version"],
            index_version=d["index_version"],
        )


def compute_index_version(
    kind: str, corpus: CorpusFingerprint, config: dict[str, Any], libraries: dict[str, str]
) -> str:
    identity = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "corpus": [corpus.sha256, corpus.rows],
        "config": config,
        "libraries": libraries,
    }
    blob = json.dumps(identity, sort_keys=True, default=str).encode()
    return f"{kind}-{hashlib.sha256(blob).hexdigest()[:12]}"


def library_versions(names: list[str]) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def directory_size(directory: str | Path) -> int:
    return sum(
        p.stat().st_size
        for p in Path(directory).rglob("*")
        if p.is_file() and p.name != MANIFEST_FILE
    )


def rebuild_command(corpus: str | Path, kind: str, out: str | Path) -> str:
    return f"trajlab index {corpus} --kind {kind} --out {out}"


def check_corpus(manifest: Manifest, corpus: str | Path, directory: str | Path) -> None:
    """Refuse an index that was not built from `corpus` (by content hash)."""
    corpus = Path(corpus)
    if not corpus.is_file():
        raise FileNotFoundError(f"corpus {corpus} does not exist")
    sha = file_sha256(corpus)
    if sha != manifest.corpus.sha256:
        raise IndexMismatchError(
            f"index {directory} was built from a different corpus: its manifest records "
            f"{manifest.corpus.path} (sha256 {manifest.corpus.sha256[:16]}..., "
            f"{manifest.corpus.rows} passages) but {corpus} has sha256 {sha[:16]}.... "
            "Searching it would return passages that are not in your corpus. Rebuild with: "
            + rebuild_command(corpus, manifest.kind, directory)
        )
