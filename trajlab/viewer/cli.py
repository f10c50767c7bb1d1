"""`trajlab view RUN_DIR [RUN_DIR ...]`: serve the trajectory viewer, or export a report.

    trajlab view runs/my_train_run                 # prints http://127.0.0.1:PORT/
    trajlab view runs/a runs/b --port 8765
    trajlab view runs/a --export report.html       # one self-contained file, no server
    python -m trajlab.viewer runs/a                # the same without the trajlab CLI

`configure(parser)` adds the arguments to an argparse parser and `main(args)` runs
the command and returns an exit code; trajlab/cli.py wires both in as `view`.

The server binds to 127.0.0.1 unless --host says otherwise; binding elsewhere
exposes every trajectory (prompts, model output) to the network, so it warns.
"""

from __future__ import annotations

import argparse
import sys
import webbrowser

from trajlab.viewer.alarms import alarm_config_from_overrides
from trajlab.viewer.index import CACHE_MIN_BYTES
from trajlab.viewer.runs import discover
from trajlab.viewer.server import ViewerApp, make_server

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "runs",
        nargs="+",
        metavar="RUN_DIR",
        help="run directories (eval or train), directories of runs, or trajectories .jsonl files",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    parser.add_argument(
        "--port", type=int, default=0, help="port to serve on; 0 picks a free port (default)"
    )
    parser.add_argument(
        "--export",
        metavar="REPORT.html",
        help="write one self-contained HTML report instead of serving",
    )
    parser.add_argument(
        "--export-limit",
        type=int,
        default=200,
        metavar="N",
        help="trajectories included in an export, spread evenly over runs and steps (default 200)",
    )
    parser.add_argument(
        "--tokenizer",
        metavar="DIR",
        help="tokenizer for per-token text: a local model or tokenizer directory, default, or a .gguf file (default: the run config's model, else token ids)",
    )
    parser.add_argument(
        "--no-index-cache",
        action="store_true",
        help="do not write .<file>.viewer-index.npz next to large trajectory files",
    )
    parser.add_argument(
        "--alarm",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override an alarm threshold, e.g. --alarm tool_rate_drop=0.6 (see docs/viewer.md)",
    )
    parser.add_argument(
        "--open", action="store_true", help="open the viewer in the default browser"
    )
    parser.add_argument("--verbose", action="store_true", help="log every HTTP request")
    return parser


def main(args: argparse.Namespace) -> int:
    try:
        runs = discover(args.runs, cache=not args.no_index_cache, cache_min_bytes=CACHE_MIN_BYTES)
        alarm_cfg = alarm_config_from_overrides(args.alarm)
    except (FileNotFoundError, ValueError) as e:
        print(f"trajlab view: {e}", file=sys.stderr)
        return 2
    app = ViewerApp(runs, tokenizer=args.tokenizer, alarm_config=alarm_cfg)
    if args.export:
        from trajlab.viewer.export import write_report

        n, total = write_report(app, args.export, limit=args.export_limit)
        print(f"wrote {args.export}: {len(runs)} run(s), {n} of {total} trajectories included")
        return 0
    if args.host not in LOOPBACK:
        print(
            f"warning: serving on {args.host}: anyone who can reach this address can read these runs",
            file=sys.stderr,
        )
    try:
        server = make_server(app, args.host, args.port, quiet=not args.verbose)
    except OSError as e:
        print(
            f"trajlab view: cannot listen on {args.host}:{args.port}: {e}; pick another --port (0 picks a free one)",
            file=sys.stderr,
        )
        return 2
    host, port = server.server_address[:2]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    print(f"trajlab viewer: {len(runs)} run(s) at {url}  (Ctrl-C to stop)", flush=True)
    if args.open:
        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
