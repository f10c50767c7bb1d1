"""`trajlab view RUN_DIR --export report.html`: one self-contained HTML file for sharing.

The report is the viewer's own single-page app (CSS and JS inlined) plus the API
answers it needs, inlined as JSON: every run's summary, metrics, alarms and facets,
and a capped sample of trajectories (default 200 in total). The sample is spread
evenly over each run's trajectories, so a training run shows every part of training,
not only step 1. Browse filters then run in the page over the included trajectories,
and the page says how many of how many are included.

What this module does not do: include every trajectory of a large run (a 100,000
trajectory run is gigabytes; open it with `trajlab view` instead), or load anything
from the network when the file is opened.
"""

from __future__ import annotations

import json
import math
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from trajlab.viewer.index import Filters
from trajlab.viewer.runs import clean
from trajlab.viewer.server import STATIC, ViewerApp

INDEX_TIMEOUT_S = 600.0


def _wait_complete(app: ViewerApp, rid: str) -> None:
    idx = app.runs[rid].index
    deadline = time.perf_counter() + INDEX_TIMEOUT_S
    while not idx.status()["complete"]:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"indexing {app.runs[rid].path} took over {INDEX_TIMEOUT_S:.0f} s")
        time.sleep(0.02)


def build_data(app: ViewerApp, limit: int = 200) -> tuple[dict[str, Any], int, int]:
    """The inlined data: API answers keyed by path, browse rows per run. Returns (data, included, total)."""
    api: dict[str, Any] = {"/api/runs": app.list_runs()}
    rows: dict[str, list[dict[str, Any]]] = {}
    totals: dict[str, int] = {}
    with_traj = [rid for rid in app.order if app.runs[rid].trajectory_files()]
    per_run = math.ceil(limit / len(with_traj)) if with_traj and limit > 0 else 0
    for rid in app.order:
        api[f"/api/runs/{rid}/metrics"] = app.metrics(rid)
        if rid not in with_traj:
            continue
        _wait_complete(app, rid)
        idx = app.runs[rid].index
        api[f"/api/runs/{rid}/facets"] = clean({**idx.facets(), "index": idx.status()})
        table_idx = idx.select(Filters())
        totals[rid] = len(table_idx)
        k = min(per_run, len(table_idx))
        pick = (
            table_idx[np.unique(np.linspace(0, len(table_idx) - 1, k).round().astype(int))]
            if k
            else table_idx[:0]
        )
        page = idx.rows(pick)
        texts = idx.table()["text"]
        for r, i in zip(page, pick):
            r["_text"] = texts[i]
            api[f"/api/runs/{rid}/trajectory?ref={r['ref']}"] = app.trajectory(rid, r["ref"])
        rows[rid] = clean(page)
    # Refresh the run list: index status is known now.
    api["/api/runs"] = app.list_runs()
    included = sum(len(v) for v in rows.values())
    total = sum(totals.values())
    data = {
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "note": f"This report includes {included} of {total} trajectories, spread evenly over each run. Open the runs with `trajlab view` to browse all of them.",
        "api": api,
        "rows": rows,
        "totals": totals,
    }
    return data, included, total


def render_html(data: dict[str, Any]) -> str:
    """index.html with its stylesheet and scripts inlined and the data embedded."""
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    css = (STATIC / "app.css").read_text(encoding="utf-8")
    # "</" inside inlined JSON or JS would end the <script> element early.
    payload = json.dumps(data, ensure_ascii=False, allow_nan=False).replace("</", "<\\/")
    scripts = [f"<script>window.TRAJLAB_EXPORT = {payload};</script>"]
    for name in ("chart.js", "app.js"):
        js = (STATIC / name).read_text(encoding="utf-8").replace("</script", "<\\/script")
        scripts.append(f"<script>{js}</script>")
    html = html.replace('<link rel="stylesheet" href="/static/app.css">', f"<style>{css}</style>")
    html = html.replace('<script src="/static/chart.js"></script>', "").replace(
        '<script src="/static/app.js"></script>', ""
    )
    return html.replace("</body>", "\n".join(scripts) + "\n</body>")


def write_report(app: ViewerApp, out: str | Path, limit: int = 200) -> tuple[int, int]:
    data, included, total = build_data(app, limit)
    Path(out).write_text(render_html(data), encoding="utf-8")
    return included, total
