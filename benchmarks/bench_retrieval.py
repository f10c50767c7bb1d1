"""Retrieval speed benchmark: trajlab BM25 vs rank_bm25, and dense top-10, one machine, one run.

    .venv/bin/python benchmarks/bench_retrieval.py PASSAGES.jsonl --queries QUESTIONS.jsonl           # 51k passages: ~45 min, 2 busy cores
    .venv/bin/python benchmarks/bench_retrieval.py PASSAGES.jsonl --queries QUESTIONS.jsonl --limit 2000   # quick check
    .venv/bin/python benchmarks/bench_retrieval.py PASSAGES.jsonl --queries QUESTIONS.jsonl --reuse   # keep indexes built earlier

PASSAGES.jsonl: a corpus as `trajlab index` reads it (docs/retrieval.md); QUESTIONS.jsonl: one
JSON object per line with "question" and "meta": {"supporting_titles": [...]} (the gold titles).

What it measures (the published numbers: HotpotQA dev questions over their Wikipedia passages):
- build: each index is built by the real CLI (`python -m trajlab.retrieval.cli`) in a
  child process; wall time and that child's peak RSS (os.wait4). With --reuse an
  index built by an earlier run of this script is kept, with the numbers it recorded.
- serving memory: RSS growth of this process from loading the index and running the
  queries (the dense figure includes importing torch and sentence-transformers).
- single-query latency: p50 and p99 of `search(q, k=10)`, one query at a time, after
  a 20-query warm-up. Dense includes embedding the query.
- batched throughput: `search_batch` over all queries (chunks of 64), queries per second.
- rank_bm25 (BM25Okapi, same tokens as trajlab, k1 and b equal): built in this process,
  top-10 by `get_scores` + argsort. It scans every passage in Python for every query
  term (about 0.1 s per query here), so it runs only the first --rank-bm25-queries
  queries (default 50); it has no batch API, so its "batched" rate is sequential.
- recall@10: share of each question's gold supporting titles among the top-10 titles.

Prints a markdown table with the machine's core count and load. Timings on a shared
machine are noisy: rerun before trusting a small difference.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trajlab.memory import status_kib  # noqa: E402
from trajlab.retrieval import load_index  # noqa: E402
from trajlab.retrieval.corpus import read_corpus  # noqa: E402
from trajlab.retrieval.dense import query_threads  # noqa: E402
from trajlab.retrieval.hybrid import HybridConfig, HybridIndex  # noqa: E402

SIDECAR = "bench_build.json"


def rss_bytes() -> int:
    kib = status_kib("VmRSS")
    if kib is None:
        raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")
    return kib * 1024


def build(
    corpus: Path, kind: str, out: Path, limit: int | None, batch_size: int, reuse: bool
) -> dict:
    sidecar = out / SIDECAR
    if reuse and sidecar.is_file():
        return json.loads(sidecar.read_text()) | {"reused": True}
    cmd = [sys.executable, "-m", "trajlab.retrieval.cli", str(corpus), "--kind", kind]
    cmd += ["--out", str(out), "--force", "--batch-size", str(batch_size)]
    if limit:
        cmd += ["--limit", str(limit)]
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"building the {kind} index failed (command above)")
    manifest = json.loads((out / "manifest.json").read_text())
    record = {
        "kind": kind,
        "wall_s": wall,
        "build_time_s": manifest["build_time_s"],
        "peak_rss_bytes": usage.ru_maxrss * 1024,  # Linux reports KiB
        "size_bytes": manifest["size_bytes"],
        "rows": manifest["corpus"]["rows"],
    }
    sidecar.write_text(json.dumps(record, indent=2))
    return record | {"reused": False}


def latencies(search, queries: list[str], warmup: int = 20) -> np.ndarray:
    for q in queries[:warmup]:
        search(q)
    out = []
    for q in queries:
        t = time.perf_counter()
        search(q)
        out.append(time.perf_counter() - t)
    return np.array(out) * 1e3  # ms


def throughput(search_batch, queries: list[str], chunk: int = 64) -> float:
    start = time.perf_counter()
    for i in range(0, len(queries), chunk):
        search_batch(queries[i : i + chunk])
    return len(queries) / (time.perf_counter() - start)


def recall_at_10(results: list[list[str]], gold: list[list[str]]) -> float:
    return float(np.mean([len(set(g) & set(r)) / len(set(g)) for r, g in zip(results, gold)]))


def run_rank_bm25(corpus: Path, limit: int | None, queries: list[str], n: int, tokenizer) -> dict:
    try:
        from rank_bm25 import BM25Okapi
    except ImportError as e:
        raise SystemExit("pip install rank-bm25 (a dev dependency) to run the comparison") from e
    before = rss_bytes()
    start = time.perf_counter()
    passages = read_corpus(corpus, limit)
    tokens = tokenizer([p.contents for p in passages])
    cfg = tokenizer.config
    okapi = BM25Okapi(tokens, k1=cfg.k1, b=cfg.b)
    build_s = time.perf_counter() - start
    q_tokens = tokenizer(queries[:n])

    def search(i: int) -> np.ndarray:
        return np.argsort(okapi.get_scores(q_tokens[i]))[::-1][:10]

    lat = latencies(search, list(range(n)), warmup=2)
    return {"build_s": build_s, "rss": rss_bytes() - before, "lat": lat, "n": n}


def faiss_search_only(n_rows: int, dim: int, n_queries: int) -> np.ndarray:
    """Latency (ms) of one-query IndexFlatIP searches over n_rows random unit vectors.

    Exact search cost does not depend on the vectors' values, so this measures the
    search part of a dense query at full corpus size when the dense index is a subset.
    """
    import faiss

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n_rows, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(dim)
    index.add(vectors)
    q = vectors[rng.integers(0, n_rows, size=n_queries)]
    return latencies(lambda i: index.search(q[i : i + 1], 10), list(range(n_queries)))


def fmt_mb(n: float) -> str:
    return f"{n / 2**20:.0f} MB"


def ms(x: np.ndarray, q: float) -> str:
    v = float(np.percentile(x, q))
    return f"{v:.2f} ms" if v < 10 else f"{v:.1f} ms"


def report(builds: dict, res: dict, okapi: dict, ours_same: np.ndarray, n_queries: int) -> str:
    b, d, h = res["bm25"], res.get("dense"), res.get("hybrid")
    bb, db = builds["bm25"], builds.get("dense")
    na = "n/a"
    okapi_qps = 1e3 / float(np.mean(okapi["lat"]))
    n = okapi["n"]
    rows = [
        (
            "p50 latency, top-10",
            ms(b["lat"], 50),
            f"{ms(okapi['lat'], 50)} (first {n} queries; trajlab on them: {ms(ours_same, 50)})",
            f"{np.median(okapi['lat']) / np.median(ours_same):.0f}x",
            ms(d["lat"], 50) if d else na,
            ms(h["lat"], 50) if h else na,
        ),
        (
            "p99 latency, top-10",
            ms(b["lat"], 99),
            f"{ms(okapi['lat'], 99)} (trajlab on them: {ms(ours_same, 99)})",
            f"{np.percentile(okapi['lat'], 99) / np.percentile(ours_same, 99):.0f}x",
            ms(d["lat"], 99) if d else na,
            ms(h["lat"], 99) if h else na,
        ),
        (
            "batched throughput",
            f"{b['qps']:.0f} q/s",
            f"{okapi_qps:.1f} q/s (no batch API: sequential)",
            f"{b['qps'] / okapi_qps:.0f}x",
            f"{d['qps']:.0f} q/s" if d else na,
            f"{h['qps']:.0f} q/s" if h else na,
        ),
        (
            "build time",
            f"{bb['build_time_s']:.1f} s (CLI wall {bb['wall_s']:.1f} s)",
            f"{okapi['build_s']:.1f} s (in memory, not saved)",
            "",
            f"{db['build_time_s']:.0f} s (CLI wall {db['wall_s']:.0f} s)" if db else na,
            "= both builds",
        ),
        (
            "build peak RSS (whole CLI process)",
            fmt_mb(bb["peak_rss_bytes"]),
            "",
            "",
            fmt_mb(db["peak_rss_bytes"]) if db else na,
            "",
        ),
        (
            "serving RSS growth (load + all queries)",
            fmt_mb(b["rss"]),
            fmt_mb(okapi["rss"]),
            "",
            f"{fmt_mb(d['rss'])} (incl. torch import)" if d else na,
            "shares both",
        ),
        (
            "index size on disk",
            fmt_mb(bb["size_bytes"]),
            "",
            "",
            fmt_mb(db["size_bytes"]) if db else na,
            "",
        ),
        (
            "recall@10 of gold titles",
            f"{b['recall']:.3f}",
            "",
            "",
            (f"{d['recall']:.3f}" if d["recall"] is not None else "n/a (subset)") if d else na,
            f"{h['recall']:.3f}" if h else na,
        ),
    ]
    if d:
        rows += [
            ("dense: query encoding only, p50", "", "", "", ms(d["encode"], 50), ""),
            (
                f"dense: faiss flat search only at {bb['rows']} vectors (synthetic), p50",
                "",
                "",
                "",
                ms(d["faiss_full"], 50),
                "",
            ),
        ]
    dense_rows = f", {db['rows']} passages" if db and db["rows"] != bb["rows"] else ""
    lines = [
        f"## Retrieval benchmark: {bb['rows']} passages, {n_queries} HotpotQA dev questions",
        "",
        f"Machine: {os.cpu_count()} cores (affinity {len(os.sched_getaffinity(0))}), "
        f"load average {os.getloadavg()[0]:.2f} at the end, python {sys.version.split()[0]}.",
        "",
        f"| | trajlab BM25 (bm25s) | rank_bm25 BM25Okapi | ratio | trajlab dense (MiniLM + faiss flat{dense_rows}) | hybrid (RRF) |",
        "|---|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    reused = [k for k, v in builds.items() if v.get("reused")]
    if reused:
        lines.append(
            f"\nBuild numbers for {', '.join(reused)} were recorded by an earlier run (--reuse)."
        )
    targets = [
        ("BM25 p50 <= 5 ms", float(np.median(b["lat"])) <= 5),
        ("BM25 batched >= 500 q/s", b["qps"] >= 500),
    ]
    if d:
        targets.append(("dense p50 <= 20 ms", float(np.median(d["lat"])) <= 20))
    lines.append(
        "\nTargets: " + ", ".join(f"{t}: {'met' if ok else 'MISSED'}" for t, ok in targets)
    )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("corpus", help="passages JSONL (id, title, text), as `trajlab index` reads it")
    ap.add_argument(
        "--queries",
        required=True,
        help='JSONL with "question" and meta.supporting_titles',
    )
    ap.add_argument(
        "--work", default="/tmp/trajlab-bench-retrieval", help="where indexes are built"
    )
    ap.add_argument("--limit", type=int, default=None, help="index only the first N passages")
    ap.add_argument("--batch-size", type=int, default=64, help="dense encoding batch")
    ap.add_argument(
        "--reuse", action="store_true", help="keep indexes an earlier run built in --work"
    )
    ap.add_argument("--rank-bm25-queries", type=int, default=50)
    ap.add_argument("--skip-dense", action="store_true")
    ap.add_argument(
        "--dense-limit",
        type=int,
        default=None,
        help="build the dense index over only the first N passages (when the full build is too slow)",
    )
    args = ap.parse_args()

    corpus, work = Path(args.corpus).resolve(), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    with open(args.queries) as f:
        rows = [json.loads(line) for line in f]
    queries = [r["question"] for r in rows]
    gold = [r["meta"]["supporting_titles"] for r in rows]
    kinds = ["bm25"] if args.skip_dense else ["bm25", "dense"]
    limits = {"bm25": args.limit, "dense": args.dense_limit or args.limit}
    if args.limit and args.dense_limit:
        limits["dense"] = min(args.limit, args.dense_limit)
    builds = {k: build(corpus, k, work / k, limits[k], args.batch_size, args.reuse) for k in kinds}
    dense_subset = "dense" in builds and builds["dense"]["rows"] < builds["bm25"]["rows"]

    res: dict[str, dict] = {}
    indexes = {}
    for kind in kinds:
        before = rss_bytes()
        index = load_index(work / kind, corpus=corpus)
        lat = latencies(lambda q, ix=index: ix.search(q, 10), queries)
        qps = throughput(lambda qs, ix=index: ix.search_batch(qs, 10), queries)
        hits = index.search_batch(queries, 10)
        res[kind] = {
            "lat": lat,
            "qps": qps,
            "rss": rss_bytes() - before,
            "recall": recall_at_10([[h.title for h in hs] for hs in hits], gold),
        }
        indexes[kind] = index
    if "dense" in indexes:
        encoder, threads = indexes["dense"].encoder, indexes["dense"].config.query_threads
        with query_threads(threads):  # as DenseIndex does for its queries
            res["dense"]["encode"] = latencies(lambda q: encoder.encode([q]), queries)
            res["dense"]["faiss_full"] = faiss_search_only(
                builds["bm25"]["rows"], encoder.dim, len(queries)
            )
    if dense_subset:
        res["dense"]["recall"] = None  # gold passages may lie outside the subset
    if "dense" in indexes and not dense_subset:
        hybrid = HybridIndex(
            indexes["bm25"], indexes["dense"], indexes["bm25"].passages, HybridConfig(), "bench"
        )
        lat = latencies(lambda q: hybrid.search(q, 10), queries)
        hits = hybrid.search_batch(queries, 10)
        res["hybrid"] = {
            "lat": lat,
            "qps": throughput(lambda qs: hybrid.search_batch(qs, 10), queries),
            "recall": recall_at_10([[h.title for h in hs] for hs in hits], gold),
        }
    okapi = run_rank_bm25(
        corpus,
        args.limit,
        queries,
        min(args.rank_bm25_queries, len(queries)),
        indexes["bm25"].tokenizer,
    )

    ours_same = latencies(lambda q: indexes["bm25"].search(q, 10), queries[: okapi["n"]], warmup=2)
    print(report(builds, res, okapi, ours_same, len(queries)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
