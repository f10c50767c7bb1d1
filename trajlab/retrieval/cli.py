"""`trajlab index`: build a BM25, dense or hybrid index from a JSONL corpus.

    trajlab index CORPUS.jsonl --kind bm25|dense|hybrid --out DIR [--batch-size N] [--limit N]
    python -m trajlab.retrieval.cli CORPUS.jsonl --kind bm25 --out DIR      # same, standalone

Dense encoding shows a progress bar with rate and ETA. At the end it prints the
passage count, size on disk, build time and index_version. Exit status 0 on success,
2 on a bad corpus or an existing --out (the message says what to do), as argparse does
for bad flags.

What this module does not do: search (see trajlab.retrieval.load_index).
"""

from __future__ import annotations

import argparse
import sys

from trajlab.retrieval.bm25 import STEMMERS, BM25Config
from trajlab.retrieval.corpus import CorpusError
from trajlab.retrieval.dense import DenseConfig
from trajlab.retrieval.hybrid import HybridConfig
from trajlab.retrieval.index import KINDS, build_index


def configure(parser: argparse.ArgumentParser) -> None:
    bm25, dense, hybrid = BM25Config(), DenseConfig(), HybridConfig()
    parser.add_argument(
        "corpus", help="JSONL corpus: one {id, title, text} or {id, contents} per line"
    )
    parser.add_argument("--kind", choices=KINDS, default="bm25", help="index type (default: bm25)")
    parser.add_argument("--out", required=True, help="index directory to create")
    parser.add_argument("--limit", type=int, default=None, help="index only the first N passages")
    parser.add_argument("--force", action="store_true", help="replace an existing index at --out")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=dense.batch_size,
        help=f"dense encoding batch (default {dense.batch_size})",
    )
    parser.add_argument(
        "--model",
        default=dense.model,
        help=f"dense model name or local directory (default {dense.model})",
    )
    parser.add_argument("--k1", type=float, default=bm25.k1, help=f"BM25 k1 (default {bm25.k1})")
    parser.add_argument("--b", type=float, default=bm25.b, help=f"BM25 b (default {bm25.b})")
    parser.add_argument(
        "--stemmer",
        choices=STEMMERS,
        default=bm25.stemmer,
        help=f"BM25 stemmer (default {bm25.stemmer})",
    )
    parser.add_argument(
        "--rrf-k",
        type=int,
        default=hybrid.rrf_k,
        help=f"hybrid RRF constant (default {hybrid.rrf_k})",
    )
    parser.add_argument(
        "--depth",
        type=int,
        default=hybrid.depth,
        help=f"hybrid hits per retriever before fusion (default {hybrid.depth})",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError("unreachable")


def main(args: argparse.Namespace) -> int:
    try:
        manifest = build_index(
            args.corpus,
            args.kind,
            args.out,
            bm25=BM25Config(k1=args.k1, b=args.b, stemmer=args.stemmer),
            dense=DenseConfig(model=args.model, batch_size=args.batch_size),
            hybrid=HybridConfig(rrf_k=args.rrf_k, depth=args.depth),
            limit=args.limit,
            overwrite=args.force,
            show_progress=not args.quiet,
        )
    except (CorpusError, FileExistsError, ValueError) as e:
        print(f"trajlab index: error: {e}", file=sys.stderr)
        return 2
    print(
        f"{manifest.kind} index of {manifest.corpus.rows} passages -> {args.out}\n"
        f"  size on disk   {_human(manifest.size_bytes)}\n"
        f"  build time     {manifest.build_time_s:.1f} s\n"
        f"  index_version  {manifest.index_version}"
    )
    return 0


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trajlab index", description=__doc__.split("\n")[0])
    configure(parser)
    return main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(run())
