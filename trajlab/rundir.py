"""run.json: the status file every run directory has (docs/run_directory.md).

    write_run_json(out, kind="eval")          # a new run
    update_run_json(out, status="done")       # later; atomic, keeps the other fields

    start_or_resume(out, "eval", cfg_dict, "config.json", resumable={"out"}, argv=argv)
    with failure_recorded(out): ...           # an exception marks the run failed, with why

`start_or_resume` is the one check of what a command may do with an existing directory:
- a run of another kind (an evaluation's directory given to `trajlab train`), or a
  non-empty directory that is no run at all, is refused before anything is written;
- a run with results (trajectories, metrics, checkpoints) is resumed when its saved config
  equals the new one except for the keys a resumption may change; otherwise the error
  names each changed key (dotted, e.g. `optim.lr`) with its old and new value;
- a run without results (it failed, or was killed, before its first result) is replaced,
  so a corrected command is never blocked by the failed attempt;
- a run another live process is writing is refused.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

# What a run writes once it has produced something worth keeping.
_RESULT_FILES = ("trajectories.jsonl", "metrics.jsonl")
_RESULT_DIRS = ("checkpoints", "trajectories", "eval", "model")


def _a(kind: str) -> str:
    return f"an {kind}" if kind[:1] in "aeiou" else f"a {kind}"


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def write_run_json(out: Path, kind: str, argv: Sequence[str] | None = None) -> None:
    """Start run.json for a new run of `kind` (eval, train or sft), status running."""
    from trajlab import __version__

    now = _now()
    info = {
        "kind": kind,
        "status": "running",
        "created": now,
        "updated": now,
        "command": list(argv if argv is not None else sys.argv),
        "trajlab_version": __version__,
        **_owner(),
    }
    _write(out / "run.json", info)


def update_run_json(out: Path, **fields: Any) -> None:
    """Set fields of run.json (status, wall_time_s, ...) and its `updated` time, atomically."""
    p = out / "run.json"
    info = read_run_json(out)
    info.update(fields, updated=_now())
    if "status" in fields and fields["status"] != "failed":
        info.pop("error", None)
    _write(p, info)


def read_run_json(out: Path) -> dict[str, Any]:
    p = out / "run.json"
    try:
        return json.loads(p.read_text()) if p.exists() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}  # a torn file from a crash: the run is treated as having no status


def _owner() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname()}


def _write(path: Path, info: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=2))
    os.replace(tmp, path)


@contextlib.contextmanager
def failure_recorded(out: Path) -> Iterator[None]:
    """Run the body; an exception sets run.json's status to `failed` with the reason (a
    Ctrl-C to `interrupted`) and is raised again."""
    try:
        yield
    except KeyboardInterrupt:
        update_run_json(out, status="interrupted")
        raise
    except BaseException as e:
        update_run_json(out, status="failed", error=f"{type(e).__name__}: {e}"[:2000])
        raise


def has_results(out: Path) -> bool:
    """Whether a run directory holds anything a new run must not throw away."""
    if any((out / f).is_file() and (out / f).stat().st_size > 0 for f in _RESULT_FILES):
        return True
    return any((out / d).is_dir() and any((out / d).iterdir()) for d in _RESULT_DIRS)


def start_or_resume(
    out: Path,
    kind: str,
    cfg: dict[str, Any],
    config_name: str,
    resumable: Sequence[str],
    argv: Sequence[str] | None = None,
    can_resume: bool = True,
) -> bool:
    """Start a run in `out` (config file + run.json), or resume the run already there when
    its config matches `cfg` on every key but `resumable` (top-level keys or sections).
    Returns whether it resumed. A command that cannot resume (`can_resume=False`: sft)
    refuses any run with results. Every refusal is a ConfigError that says what is in the
    way and how to go on."""
    from trajlab.config import ConfigError

    _check_target(out, kind)
    out.mkdir(parents=True, exist_ok=True)
    path = out / config_name
    info = read_run_json(out)
    if not path.exists():
        return _start(out, path, kind, cfg, argv)
    _check_not_busy(out, info)
    old = _read_config(path)
    changed = changed_keys(old, cfg, resumable)
    if not has_results(out):
        status = info.get("status", "?")
        reason = f": {info['error']}" if info.get("error") else ""
        print(
            f"replacing the run in {out}: it has no results yet (status {status}{reason})",
            file=sys.stderr,
        )
        return _start(out, path, kind, cfg, argv)
    if not can_resume:
        raise ConfigError(
            f"out: {out} holds {_a(kind)} run with results (status {info.get('status', '?')}); "
            f"trajlab {kind} does not resume or overwrite one. Choose another --out (or "
            f"delete {out} to start over)."
        )
    if changed:
        details = "; ".join(f"{k}: {_show(a)} -> {_show(b)}" for k, a, b in changed[:12])
        more = f"; and {len(changed) - 12} more" if len(changed) > 12 else ""
        may = f" (only {', '.join(sorted(resumable))} may change)" if resumable else ""
        raise ConfigError(
            f"{out} holds {_a(kind)} run with results and a different config: {details}{more}. "
            f"To resume it, run with its settings{may}; to start a new run, choose another "
            f"--out (or delete {out} to start over)."
        )
    _write_config(path, cfg)
    update_run_json(out, status="running", **_owner())
    return True


def _start(
    out: Path, path: Path, kind: str, cfg: dict[str, Any], argv: Sequence[str] | None
) -> bool:
    _write_config(path, cfg)
    write_run_json(out, kind, argv)
    return False


def _check_target(out: Path, kind: str) -> None:
    """Refuse a file, a run of another kind, or a non-empty directory that is no run."""
    from trajlab.config import ConfigError

    if out.exists() and not out.is_dir():
        raise ConfigError(f"out: {out} is a file, not a directory; choose another --out")
    if not out.is_dir() or not any(out.iterdir()):
        return
    info = read_run_json(out)
    if not info:
        raise ConfigError(
            f"out: {out} is not empty and is not a trajlab run directory (no run.json); "
            "trajlab writes runs only into new or empty directories or its own runs. "
            "Choose another --out."
        )
    other = info.get("kind")
    if other and other != kind:
        raise ConfigError(
            f"out: {out} holds {_a(other)} run; trajlab {kind} never writes into it (its "
            f"run.json and files would be mixed with this run's). Choose another --out."
        )


def _check_not_busy(out: Path, info: dict[str, Any]) -> None:
    from trajlab.config import ConfigError

    pid = info.get("pid")
    if info.get("status") != "running" or not isinstance(pid, int) or pid == os.getpid():
        return
    if info.get("host") != socket.gethostname() or not _alive(pid):
        return
    raise ConfigError(
        f"out: {out} is in use by a running trajlab process (pid {pid}, started "
        f"{info.get('created', '?')}); wait for it to finish, stop it, or choose another --out."
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def changed_keys(
    old: dict[str, Any], new: dict[str, Any], resumable: Sequence[str] = ()
) -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for every leaf that differs, skipping keys that
    are in `resumable` or inside a section named there."""
    a, b = _flatten(old), _flatten(new)
    free = tuple(resumable)
    missing = object()
    out = []
    for key in sorted(set(a) | set(b)):
        if any(key == r or key.startswith(r + ".") for r in free):
            continue
        va, vb = a.get(key, missing), b.get(key, missing)
        if va != vb:
            out.append((key, None if va is missing else va, None if vb is missing else vb))
    return out


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            flat.update(_flatten(v, key + "."))
        else:
            flat[key] = v
    return flat


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


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
