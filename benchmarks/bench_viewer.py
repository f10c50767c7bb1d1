"""Viewer benchmark: time to first page on a run with 100,000 trajectories.

    .venv/bin/python benchmarks/bench_viewer.py                 # 100,000 trajectories
    .venv/bin/python benchmarks/bench_viewer.py --n 20000 --no-browser

Writes an evaluation run directory with N synthetic trajectories (trajlab.types,
the real JSONL format; each with ~150 response tokens, sampling logprobs and the
trainer's per-token overlays, so lines are as heavy as real ones) into a temporary
directory, then measures, each time from server start (run discovery, app, listening
socket) to:

- the first page (50 rows) of the browse API, cold (no index cache on disk) and warm
  (the `.trajectories.jsonl.viewer-index.npz` written by the cold run is present);
- the browse page rendered in headless chromium (table rows visible), cold and warm;
- the full index (cold), and filtered queries over the complete summary table.

The budget in issue 5 is "opens in under two seconds". Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from trajlab.viewer.runs import discover
from trajlab.viewer.server import ViewerApp, serve_in_thread
from trajlab.viewer.synthetic import (
    CHROMIUM,
    LAUNCH_ARGS,
    ToyVocab,
    TrajSpec,
    make_eval_run,
    make_trajectory,
)


def generate(run_dir: Path, n: int, seed: int = 0) -> float:
    """An eval run whose trajectories.jsonl holds n trajectories; returns its size in MB."""
    make_eval_run(run_dir, n_examples=2, samples=1)  # run.json, config.json, metrics.json
    rng = random.Random(seed)
    vocab = ToyVocab()
    templates = []
    for i in range(64):
        spec = TrajSpec(
            "x",
            0,
            10 + i,
            3 + i % 9,
            correct=i % 3 == 0,
            use_tool=i % 5 != 0,
            tool_error=i % 7 == 2,
            stop_reason="length" if i % 11 == 0 else "answer",
            extra_words=120 + i,
            step=1,
        )
        templates.append(make_trajectory(spec, vocab, rng).to_dict())
    with open(run_dir / "trajectories.jsonl", "w", encoding="utf-8") as f:
        for k in range(n):
            d = dict(templates[k % len(templates)])
            d["example_id"] = f"ex{k // 8:06d}"
            d["sample_index"] = k % 8
            d["group_id"] = f"ex{k // 8:06d}/g"
            d["metadata"] = {
                **d["metadata"],
                "train": {**d["metadata"]["train"], "step": 1 + k // 1000},
            }
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    return (run_dir / "trajectories.jsonl").stat().st_size / 1e6


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=120) as r:
        return json.loads(r.read())


def start(run_dir: Path):
    t0 = time.perf_counter()
    srv, url = serve_in_thread(ViewerApp(discover([run_dir])))
    return t0, srv, url


def wait_complete(url: str, timeout: float = 900) -> dict:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        page = get(url + "/api/runs/r0/trajectories?limit=1")
        if page["index"]["complete"]:
            return page
        time.sleep(0.2)
    raise TimeoutError("index did not complete")


def api_first_page(run_dir: Path) -> tuple[float, dict, str, object]:
    t0, srv, url = start(run_dir)
    page = get(url + "/api/runs/r0/trajectories?limit=50")
    return time.perf_counter() - t0, page, url, srv


def browser_first_page(browser, run_dir: Path) -> tuple[float, object, str]:
    ctx = browser.new_context(viewport={"width": 1300, "height": 900})
    pg = ctx.new_page()
    t0, srv, url = start(run_dir)
    pg.goto(url + "/#/browse/r0")
    pg.wait_for_selector("#browse-table tr[data-ref]", timeout=120_000)
    dt = time.perf_counter() - t0
    ctx.close()
    return dt, srv, url


def stop(srv) -> None:
    srv.shutdown()
    srv.server_close()


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--keep", metavar="DIR", help="write the run here and keep it")
    args = ap.parse_args()

    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="trajlab_bench_viewer_"))
    run_dir = tmp / "big_run"
    shutil.rmtree(run_dir, ignore_errors=True)
    results: list[tuple[str, str]] = []
    t = time.perf_counter()
    mb = generate(run_dir, args.n)
    print(
        f"generated {args.n:,} trajectories ({mb:,.0f} MB) in {time.perf_counter() - t:.1f} s",
        flush=True,
    )
    cache = run_dir / ".trajectories.jsonl.viewer-index.npz"

    browser = pw = None
    if not args.no_browser and os.path.exists(CHROMIUM):
        from playwright.sync_api import sync_playwright

        pw = sync_playwright().start()
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)

    try:
        # cold: no cache file
        dt, page, url, srv = api_first_page(run_dir)
        results.append(
            (
                "API first page (50 rows), cold",
                f"{dt:.3f} s  (rows indexed by then: {page['index']['indexed_rows']:,})",
            )
        )
        t0 = time.perf_counter() - dt
        full = wait_complete(url)
        results.append(
            (
                "full index, cold (background)",
                f"{time.perf_counter() - t0:.1f} s  ({full['total']:,} rows)",
            )
        )
        stop(srv)
        if browser:
            cache.unlink(missing_ok=True)
            dt, srv, url = browser_first_page(browser, run_dir)
            results.append(("browse page rendered in chromium, cold", f"{dt:.3f} s"))
            wait_complete(url)  # let it finish (and write the cache) before the warm runs
            stop(srv)
        # warm: the cache written by the cold run
        assert cache.exists(), "no index cache was written"
        dt, page, url, srv = api_first_page(run_dir)
        results.append(
            (
                "API first page (50 rows), warm (index cache)",
                f"{dt:.3f} s  (total {page['total']:,}, complete: {page['index']['complete']})",
            )
        )
        for label, q in (
            ("page 1,000 (offset 50,000)", "offset=50000&limit=50"),
            ("filter step + correct", "step=42&correct=true&limit=50"),
            (
                "filter tool errors + reward range",
                "tool_errors=true&reward_min=0.05&reward_max=2&limit=50",
            ),
            ("text search 'nameerror'", "q=nameerror&limit=50"),
            ("sort by reward", "sort=-reward&limit=50"),
        ):
            t = time.perf_counter()
            page = get(url + "/api/runs/r0/trajectories?" + q)
            results.append(
                (
                    f"API {label}, complete index",
                    f"{time.perf_counter() - t:.3f} s  ({page['total']:,} matches)",
                )
            )
        t = time.perf_counter()
        get(url + f"/api/runs/r0/trajectory?ref=0:{args.n - 1}")
        results.append(
            (f"API open the last trajectory (#{args.n:,})", f"{time.perf_counter() - t:.3f} s")
        )
        stop(srv)
        if browser:
            dt, srv, url = browser_first_page(browser, run_dir)
            results.append(("browse page rendered in chromium, warm", f"{dt:.3f} s"))
            stop(srv)
    finally:
        if browser:
            browser.close()
            pw.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    print(
        f"\n{args.n:,} trajectories, {mb:,.0f} MB, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}\n"
    )
    print("| measurement (from server start) | time |")
    print("|---|---|")
    for k, v in results:
        print(f"| {k} | {v} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
