"""The viewer's HTTP server: static single-page app plus a small JSON API.

Built on the standard library (`http.server.ThreadingHTTPServer`) so the viewer adds
no dependency. It binds to 127.0.0.1 by default; nothing is fetched from the network
(every asset is in trajlab/viewer/static/).

API (all GET, all JSON):
    /api/runs                                 every run: summary, headline metrics, alarms, index status
    /api/runs/<id>/metrics                    metrics.jsonl rows, eval metrics (flattened), eval children, alarms
    /api/runs/<id>/trajectories?<filters>     one page of summary rows (filters: see index.Filters)
    /api/runs/<id>/facets                     steps, stop reasons and filter reasons present
    /api/runs/<id>/trajectory?ref=F:L         one full trajectory plus decoded token pieces if available
    /api/compare?a=<id>&b=<id>                paired per-metric differences with bootstrap intervals

`ViewerApp` holds the logic and is used both by the handler and by `export.py`, so a
report and the live server show the same payloads.

What this module does not do: authentication (it is a loopback tool), writing to runs.
"""

from __future__ import annotations

import json
import mimetypes
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from trajlab.viewer.alarms import AlarmConfig
from trajlab.viewer.index import Filters
from trajlab.viewer.runs import (
    Run,
    clean,
    decode_pieces,
    flatten,
    is_num,
    run_alarms,
    tokenizer_dir,
)

STATIC = Path(__file__).parent / "static"
FIRST_PAGE_WAIT_S = 1.5  # how long a browse request waits for its rows while indexing


class NotFound(Exception):
    pass


class ViewerApp:
    """Answers API requests over a fixed list of runs."""

    def __init__(
        self, runs: list[Run], tokenizer: str | None = None, alarm_config: AlarmConfig | None = None
    ):
        self.runs = {r.id: r for r in runs}
        self.order = [r.id for r in runs]
        self.tokenizer = tokenizer
        self.alarm_config = alarm_config
        # Importing transformers takes seconds: load tokenizers now, off the request path.
        toks = {d for d in (tokenizer_dir(r, tokenizer) for r in runs) if d is not None}
        if toks:
            threading.Thread(
                target=lambda: [decode_pieces(d, []) for d in toks],
                name="trajlab-tokenizers",
                daemon=True,
            ).start()

    def run(self, rid: str) -> Run:
        if rid not in self.runs:
            raise NotFound(f"no run {rid!r}; known runs: {', '.join(self.order)}")
        return self.runs[rid]

    # -- endpoints ----------------------------------------------------------
    def list_runs(self) -> dict[str, Any]:
        out = []
        for rid in self.order:
            r = self.runs[rid]
            s = r.summary()
            s["alarms"] = run_alarms(r, self.runs, self.alarm_config)
            s["index"] = r._index.status() if r._index is not None else None
            out.append(s)
        return {"runs": out}

    def metrics(self, rid: str) -> dict[str, Any]:
        r = self.run(rid)
        evals = []
        for cid in r.children:
            child = self.runs[cid]
            flat = {k: v for k, v in flatten(child.eval_metrics() or {}).items() if is_num(v)}
            evals.append({"id": cid, "step": child.step, "metrics": flat})
        em = r.eval_metrics()
        return clean(
            {
                "id": rid,
                "rows": r.metrics_rows(),
                "eval": flatten(em) if isinstance(em, dict) else None,
                "eval_children": evals,
                "alarms": run_alarms(r, self.runs, self.alarm_config),
            }
        )

    def trajectories(self, rid: str, qs: dict[str, str]) -> dict[str, Any]:
        r = self.run(rid)
        flt = Filters.from_query(qs)
        offset, limit = int(qs.get("offset") or 0), int(qs.get("limit") or 50)
        idx = r.index
        # While a big file is still being indexed, wait (briefly) until this page is full.
        deadline = time.perf_counter() + FIRST_PAGE_WAIT_S
        while True:
            page = idx.page(flt, offset, limit)  # its status was read before its rows
            complete = page["index"]["complete"]
            if complete or page["total"] >= offset + limit or time.perf_counter() > deadline:
                return clean(page)
            time.sleep(0.05)

    def facets(self, rid: str) -> dict[str, Any]:
        r = self.run(rid)
        idx = r.index
        idx.wait_for_rows(1, FIRST_PAGE_WAIT_S)
        out = idx.facets()
        out["index"] = idx.status()
        return clean(out)

    def trajectory(self, rid: str, ref: str) -> dict[str, Any]:
        r = self.run(rid)
        try:
            traj = r.index.read(ref)
        except (KeyError, IndexError) as e:
            raise NotFound(str(e)) from None
        ids = [t for s in traj.get("segments", []) for t in s.get("token_ids", [])]
        tok = tokenizer_dir(r, self.tokenizer)
        pieces = decode_pieces(tok, ids) if tok is not None else None
        return clean(
            {
                "run": rid,
                "ref": ref,
                "trajectory": traj,
                "pieces": pieces,
                "tokenizer": str(tok) if tok else None,
            }
        )

    def compare(self, qs: dict[str, str]) -> dict[str, Any]:
        """Paired comparison of runs a and b (trajlab.eval.compare, as `trajlab compare`)."""
        from trajlab.eval.compare import compare_runs

        if not qs.get("a") or not qs.get("b"):
            raise ValueError("compare needs ?a=RUN&b=RUN (run ids from /api/runs)")
        ra, rb = self.run(qs["a"]), self.run(qs["b"])
        try:
            result = compare_runs(ra.path, rb.path)
        except FileNotFoundError as e:
            raise NotFound(str(e)) from None
        return clean({**result, "a_id": ra.id, "b_id": rb.id, "a_name": ra.name, "b_name": rb.name})

    def route(self, path: str, qs: dict[str, str]) -> dict[str, Any]:
        if path == "/api/runs":
            return self.list_runs()
        if path == "/api/compare":
            return self.compare(qs)
        m = re.match(r"^/api/runs/([^/]+)/(metrics|trajectories|facets|trajectory)$", path)
        if not m:
            raise NotFound(f"no API endpoint {path}")
        rid, what = m.groups()
        if what == "metrics":
            return self.metrics(rid)
        if what == "trajectories":
            return self.trajectories(rid, qs)
        if what == "facets":
            return self.facets(rid)
        if not qs.get("ref"):
            raise ValueError("trajectory needs ?ref=FILE:LINE (from the browse API)")
        return self.trajectory(rid, qs["ref"])


class _Handler(BaseHTTPRequestHandler):
    app: ViewerApp  # set on the subclass made by make_server
    quiet: bool = True

    def log_message(self, format: str, *args: Any) -> None:
        if not self.quiet:
            super().log_message(format, *args)

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, code: int, obj: Any) -> None:
        self._send(
            code,
            json.dumps(obj, ensure_ascii=False, allow_nan=False).encode(),
            "application/json; charset=utf-8",
        )

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        url = urlsplit(self.path)
        qs = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            if url.path.startswith("/api/"):
                self._json(200, self.app.route(url.path, qs))
            elif url.path in ("/", "/index.html"):
                self._static("index.html")
            elif url.path.startswith("/static/"):
                self._static(url.path[len("/static/") :])
            else:
                raise NotFound(url.path)
        except NotFound as e:
            self._json(404, {"error": str(e)})
        except ValueError as e:
            self._json(400, {"error": str(e)})
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:  # a viewer bug must not kill the server; show it
            self._json(500, {"error": f"{type(e).__name__}: {e}"})

    def _static(self, name: str) -> None:
        p = (STATIC / name).resolve()
        if STATIC.resolve() not in p.parents or not p.is_file():
            raise NotFound(name)
        ctype = mimetypes.guess_type(p.name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype.endswith("javascript"):
            ctype += "; charset=utf-8"
        self._send(200, p.read_bytes(), ctype)


def make_server(
    app: ViewerApp, host: str = "127.0.0.1", port: int = 0, quiet: bool = True
) -> ThreadingHTTPServer:
    handler = type("Handler", (_Handler,), {"app": app, "quiet": quiet})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve_in_thread(
    app: ViewerApp, host: str = "127.0.0.1", port: int = 0
) -> tuple[ThreadingHTTPServer, str]:
    """Start a server on a background thread; returns (server, base URL). For tests and benchmarks."""
    server = make_server(app, host, port)
    threading.Thread(target=server.serve_forever, name="trajlab-viewer", daemon=True).start()
    h, p = server.server_address[:2]
    return server, f"http://{h}:{p}"
