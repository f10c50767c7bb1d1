"""run.json: the status file every run directory has (docs/run_directory.md).

    write_run_json(out, kind="eval")          # a new run
    update_run_json(out, status="done")       # later; atomic, keeps the other fields

    start_or_resume(out, "eval", cfg_dict, "config.json", resumable={"out"}, argv=argv)

`start_or_resume` is the one check of whether an existing run directory may be continued:
its saved config must equal the new one except for the keys a resumption may change.
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


def start_or_resume(
    out: Path,
    kind: str,
    cfg: dict[str, Any],
    config_name: str,
    resumable: Sequence[str],
    argv: Sequence[str] | None = None,
) -> bool:
    """Start a run in `out` (config file + run.json), or resume the run already there when
    its config matches `cfg` on every key but `resumable`. Returns whether it resumed;
    a mismatch is a ConfigError naming each differing key with both values."""
    from trajlab.config import ConfigError

    out.mkdir(parents=True, exist_ok=True)
    path = out / config_name
    if not path.exists():
        _write_config(path, cfg)
        write_run_json(out, kind, argv)
        return False
    old = _read_config(path)
    diff = sorted(k for k in set(old) | set(cfg) if k not in resumable and old.get(k) != cfg.get(k))
    if diff:
        details = "; ".join(f"{k}: {old.get(k)!r} -> {cfg.get(k)!r}" for k in diff)
        raise ConfigError(
            f"{out} holds a run with a different config ({details}). Resume it with the same "
            f"settings (only {', '.join(sorted(resumable))} may change), or choose a new out "
            "directory."
        )
    _write_config(path, cfg)
    update_run_json(out, status="running")
    return True


def _read_config(path: Path) -> dict[str, Any]:
    if path.suffix == ".json":
        return json.loads(path.read_text())
    import yaml

    return yaml.safe_load(path.read_text()) or {}


def _write_config(path: Path, cfg: dict[str, Any]) -> None:
    if path.suffix == ".json":
        path.write_text(json.dumps(cfg, indent=2))
        return
    import yaml

    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
