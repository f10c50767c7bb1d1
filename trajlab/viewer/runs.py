"""Run directories as the viewer sees them: discovery, config, metrics, alarms, tokenizers.

`discover(paths)` turns the command-line paths into `Run`s, following
docs/run_directory.md: an evaluation run (run.json kind "eval", trajectories.jsonl,
metrics.json), a training run (kind "train", metrics.jsonl, trajectories/step_*.jsonl)
whose periodic evaluations under eval/step_N/ become child runs, a directory that
holds several runs (one level down), or a bare trajectories .jsonl file.

Token text: trajectories store token ids and per-segment text, not per-token text.
If the run's config names a local directory holding a tokenizer (keys tokenizer,
model, model_path, path or name; or `--tokenizer`), tokens are decoded one by one
with transformers' AutoTokenizer (local files only); otherwise the viewer shows ids.
A model spec `default` or a .gguf file resolves to the converted copy trajlab loaded the
model from (the viewer never converts one itself).

What this module does not do: write into run directories (except the index cache of
`index.py`), or guess at metric semantics beyond the names in the contract.
"""

from __future__ import annotations

import json
import math
import re
import threading
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from trajlab.viewer.alarms import AlarmConfig, check_alarms
from trajlab.viewer.index import CACHE_MIN_BYTES, RunIndex

HEADLINE = re.compile(
    r"^(accuracy|pass@.*|maj@.*|tool_call_rate|reward/mean|reward/total/mean|reward/[^/]+/mean"
    r"|response_length/mean|mean_tokens|tokens_per_s|tool_error_rate|n)$"
)


def clean(obj: Any) -> Any:
    """JSON-safe copy: non-finite floats become None (metrics files may hold NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    return obj


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a/b": 1}; lists are kept as values."""
    out: dict[str, Any] = {}
    if not isinstance(d, dict):
        return {prefix.rstrip("/") or "value": d}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "/"))
        else:
            out[key] = v
    return out


def is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def read_metrics_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of metrics.jsonl; a torn last line (a run being written) is skipped."""
    rows = []
    if not path.exists():
        return rows
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise ValueError(
                f"{path}:{i + 1}: not valid JSON; metrics.jsonl must hold one object per line"
            ) from None
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as e:
        return {"_error": f"{path.name} is not valid JSON: {e}"}


def _read_config(path: Path) -> tuple[Any, str | None]:
    """(parsed config, name of the file it came from)."""
    for name in ("config.json", "config.yaml", "config.yml"):
        p = path / name
        if not p.exists():
            continue
        text = p.read_text(encoding="utf-8")
        if name.endswith(".json"):
            return _read_json(p), name
        try:
            import yaml

            return yaml.safe_load(text), name
        except Exception as e:  # shown to the user; the raw text is still useful
            return {"_error": f"{name}: {e}", "_text": text}, name
    return None, None


def stop_keys_from_eval(flat: dict[str, Any]) -> dict[str, float]:
    """`stop_reason/<r>` fractions from an eval metrics.json (counts are normalised)."""
    found = {}
    for k, v in flat.items():
        m = re.match(r"^stop_reasons?/([^/]+)$", k)
        if m and is_num(v):
            found[m.group(1)] = float(v)
    total = sum(found.values())
    if total > 1.0 + 1e-6:
        found = {k: v / total for k, v in found.items()}
    return {f"stop_reason/{k}": v for k, v in found.items()}


@dataclass
class Run:
    """One run directory (or a bare trajectories file) and what the viewer derives from it."""

    id: str
    path: Path
    name: str
    parent: str | None = None
    step: int | None = None  # for eval/step_N children of a training run
    children: list[str] = field(default_factory=list)
    cache: bool = True
    cache_min_bytes: int = CACHE_MIN_BYTES

    @cached_property
    def info(self) -> dict[str, Any]:
        if self.path.is_file():
            return {"kind": "file"}
        return _read_json(self.path / "run.json") or {}

    @property
    def kind(self) -> str:
        k = self.info.get("kind")
        if k:
            return str(k)
        return "train" if (self.path / "metrics.jsonl").exists() else "eval"

    @cached_property
    def config(self) -> tuple[Any, str | None]:
        return (None, None) if self.path.is_file() else _read_config(self.path)

    def trajectory_files(self) -> list[Path]:
        if self.path.is_file():
            return [self.path]
        files = (
            sorted((self.path / "trajectories").glob("step_*.jsonl"))
            if (self.path / "trajectories").is_dir()
            else []
        )
        if (self.path / "trajectories.jsonl").exists():
            files.append(self.path / "trajectories.jsonl")
        return files

    _index: RunIndex | None = None
    _index_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def index(self) -> RunIndex:
        """The trajectory index, created on first use; new step files are picked up."""
        with self._index_lock:
            files = self.trajectory_files()
            if self._index is None or [f.path for f in self._index.files] != files:
                old = {f.path: f for f in self._index.files} if self._index else {}
                self._index = RunIndex(
                    [old.get(p) or p for p in files],
                    cache=self.cache,
                    cache_min_bytes=self.cache_min_bytes,
                )
            self._index.refresh()
            return self._index

    def metrics_rows(self) -> list[dict[str, Any]]:
        return [] if self.path.is_file() else read_metrics_jsonl(self.path / "metrics.jsonl")

    def eval_metrics(self) -> dict[str, Any] | None:
        return None if self.path.is_file() else _read_json(self.path / "metrics.json")

    def headline(self) -> dict[str, Any]:
        if self.kind == "train":
            rows = self.metrics_rows()
            last = rows[-1] if rows else {}
            out = {"steps": len(rows), "last_step": last.get("step")}
            out.update({k: v for k, v in last.items() if HEADLINE.match(k) and is_num(v)})
            return out
        flat = flatten(self.eval_metrics() or {})
        return {k: v for k, v in flat.items() if HEADLINE.match(k) and is_num(v)}

    def summary(self) -> dict[str, Any]:
        cfg, cfg_name = self.config
        return clean(
            {
                "id": self.id,
                "name": self.name,
                "path": str(self.path),
                "kind": self.kind,
                "status": self.info.get("status", "unknown"),
                "created": self.info.get("created"),
                "updated": self.info.get("updated"),
                "command": self.info.get("command"),
                "parent": self.parent,
                "step": self.step,
                "children": self.children,
                "config": cfg,
                "config_file": cfg_name,
                "headline": self.headline(),
                "n_files": len(self.trajectory_files()),
            }
        )


def alarm_rows(run: Run, runs: dict[str, Run]) -> list[dict[str, Any]]:
    """The rows alarms are computed from: metrics.jsonl, plus eval/* values from child
    eval runs and stop-reason fractions from the trajectory index when metrics lack them."""
    if run.kind != "train":
        flat = {k: v for k, v in flatten(run.eval_metrics() or {}).items() if is_num(v)}
        flat.update(stop_keys_from_eval(flat))
        return [flat] if flat else []
    rows = [dict(r) for r in run.metrics_rows()]
    by_step = {r.get("step"): r for r in rows}
    if not any(k.startswith("eval/") for r in rows for k in r):
        for cid in run.children:
            child = runs[cid]
            flat = {k: v for k, v in flatten(child.eval_metrics() or {}).items() if is_num(v)}
            if child.step in by_step:
                by_step[child.step].update({f"eval/{k}": v for k, v in flat.items()})
    if (
        not any(k.startswith("stop_reason/") for r in rows for k in r)
        and run._index is not None
        and run._index.status()["complete"]
    ):
        for step, fracs in run._index.stop_fractions_by_step().items():
            if step in by_step:
                by_step[step].update({f"stop_reason/{k}": v for k, v in fracs.items() if k})
    return rows


def run_alarms(
    run: Run, runs: dict[str, Run], config: AlarmConfig | None = None
) -> list[dict[str, Any]]:
    return [a.to_dict() for a in check_alarms(alarm_rows(run, runs), config)]


def _is_run_dir(p: Path) -> bool:
    return (
        (p / "run.json").exists()
        or (p / "trajectories.jsonl").exists()
        or (p / "metrics.jsonl").exists()
    )


def discover(
    paths: list[str | Path], cache: bool = True, cache_min_bytes: int = CACHE_MIN_BYTES
) -> list[Run]:
    """Runs for the given paths, parents before their eval children."""
    runs: list[Run] = []

    def add(p: Path, name: str, parent: Run | None = None, step: int | None = None) -> Run:
        r = Run(
            f"r{len(runs)}",
            p,
            name,
            parent.id if parent else None,
            step,
            cache=cache,
            cache_min_bytes=cache_min_bytes,
        )
        runs.append(r)
        if parent:
            parent.children.append(r.id)
        return r

    for raw in paths:
        p = Path(raw).expanduser().resolve()
        if p.is_file() and p.suffix == ".jsonl":
            add(p, p.name)
            continue
        if not p.is_dir():
            raise FileNotFoundError(
                f"{raw}: no such run directory; pass a directory written by trajlab eval or trajlab train (see docs/run_directory.md)"
            )
        candidates = (
            [p]
            if _is_run_dir(p)
            else sorted(c for c in p.iterdir() if c.is_dir() and _is_run_dir(c))
        )
        if not candidates:
            raise FileNotFoundError(
                f"{raw}: neither a run directory nor a directory of runs (no run.json, trajectories.jsonl "
                "or metrics.jsonl in it or its subdirectories); see docs/run_directory.md"
            )
        for c in candidates:
            run = add(c, c.name if c != p else p.name)
            if run.kind == "train" and (c / "eval").is_dir():
                for e in sorted((c / "eval").iterdir()):
                    m = re.match(r"step_(\d+)$", e.name)
                    if e.is_dir() and m and _is_run_dir(e):
                        add(e, f"{run.name}/eval/{e.name}", run, int(m.group(1)))
    return runs


# -- tokenizers ---------------------------------------------------------------

_TOKENIZERS: dict[str, Any] = {}
_TOK_LOCK = threading.Lock()
TOKENIZER_KEYS = ("tokenizer", "tokenizer_path", "model", "model_path", "path", "name", "policy")


def tokenizer_dir(run: Run, override: str | None = None) -> Path | None:
    """A local tokenizer directory named by --tokenizer or the run's config, if one exists."""
    cands: list[Any] = [override] if override else []
    cfg = run.config[0]
    if isinstance(cfg, dict):
        for scope in (cfg, *(v for v in cfg.values() if isinstance(v, dict))):
            cands.extend(scope.get(k) for k in TOKENIZER_KEYS)
    for c in cands:
        if isinstance(c, str) and (c == "default" or c.lower().endswith(".gguf")):
            converted = _converted_model_dir(c if c == "default" else str(_near(run, c)))
            if converted is not None:
                return converted
            continue
        if isinstance(c, str) and c:
            p = Path(c).expanduser()
            if not p.is_absolute() and not p.exists():
                p = run.path / p if run.path.is_dir() else p
            if p.is_dir() and (
                (p / "tokenizer.json").exists() or (p / "tokenizer_config.json").exists()
            ):
                return p
    return None


def _near(run: Run, spec: str) -> Path:
    p = Path(spec).expanduser()
    return run.path / p if not p.is_absolute() and not p.exists() and run.path.is_dir() else p


@lru_cache(maxsize=64)
def _converted_model_dir(spec: str) -> Path | None:
    """The cached Hugging Face copy of 'default' or of a .gguf file (what trajlab eval and
    train loaded the model from), if it has been converted; the viewer never converts."""
    from trajlab.models import ModelNotFoundError, find_default_gguf, gguf_cache_path

    try:
        gguf = find_default_gguf() if spec == "default" else Path(spec)
    except ModelNotFoundError:
        return None
    entry = gguf_cache_path(gguf) if gguf.is_file() else None
    return entry if entry is not None and (entry / "tokenizer_config.json").exists() else None


def decode_pieces(tok_dir: Path, ids: list[int]) -> list[str]:
    """Each token id decoded on its own (a multi-byte character split over tokens shows as U+FFFD)."""
    key = str(tok_dir)
    with _TOK_LOCK:
        tok = _TOKENIZERS.get(key)
        if tok is None:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(key, local_files_only=True)
            _TOKENIZERS[key] = tok
    return tok.batch_decode(
        [[i] for i in ids], skip_special_tokens=False, clean_up_tokenization_spaces=False
    )
