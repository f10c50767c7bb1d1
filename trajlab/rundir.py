"""run.json: the status file every run directory has (docs/run_directory.md).

    write_run_json(out, kind="eval")          # a new run
    update_run_json(out, status="done")       # later; atomic, keeps the other fields

What it does not do: decide whether a run may resume (the harness and the trainer
compare their own configs).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def write_run_json(out: Path, kind: str, argv: Sequence[str] | None = None) -> None:
    """Start run.json for a new run of `kind` (eval or train), status running."""
    from trajlab import __version__

    now = _now()
    info = {
        "kind": kind,
        "status": "running",
        "created": now,
        "updated": now,
        "command": list(argv if argv is not None else sys.argv),
        "trajlab_version": __version__,
    }
    _write(out / "run.json", info)


def update_run_json(out: Path, **fields: Any) -> None:
    """Set fields of run.json (status, wall_time_s, ...) and its `updated` time, atomically."""
    p = out / "run.json"
    info = json.loads(p.read_text()) if p.exists() else {}
    info.update(fields, updated=_now())
    _write(p, info)


def _write(path: Path, info: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=2))
    os.replace(tmp, path)
