"""Command-line flags from dataclass configs, and the one override style.

    add_dataclass_args(parser, EvalConfig)     # --model, --task, --timeout-s, ...
    add_overrides(parser)                      # positional KEY=VALUE ... (dotted keys)
    config = resolve(EvalConfig, args)         # YAML file < flags < KEY=VALUE overrides

Every config-driven command (`eval`, `train`, `sft`, `seeds`) reads its settings the same
way: an optional YAML file of the config's fields, then flags, then `key=value` overrides
whose dotted keys reach nested sections (`agent.max_turns=6`,
`tools.python.timeout_s=5`, `reward_weights.qa_f1=0.5`). Values are parsed as YAML
scalars (`3`, `0.5`, `true`, `[python, search]`).

Flags: one per scalar or list field, nested dataclasses flattened (so field names are
unique across a config's sections); mappings are reached only through overrides.

This module is imported by `trajlab --help`, so it imports nothing heavy.
"""

from __future__ import annotations

import argparse
import sys
import typing
from collections.abc import Callable
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

OVERRIDE_HELP = (
    "dotted KEY=VALUE overrides applied last, e.g. agent.max_turns=6 tools.python.timeout_s=5"
)


def add_overrides(parser: argparse.ArgumentParser, example: str = "") -> None:
    """The positional KEY=VALUE overrides every config-driven command takes."""
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help=f"dotted KEY=VALUE overrides applied last, e.g. {example}"
        if example
        else OVERRIDE_HELP,
    )


def add_dataclass_args(
    parser: argparse.ArgumentParser,
    cls: type,
    skip: frozenset[str] | set[str] = frozenset(),
    aliases: dict[str, str] | None = None,
) -> None:
    """One flag per scalar or list field of `cls` (nested dataclasses flattened);
    `aliases` adds a short form to a field's flag (`{"n": "-n"}`)."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        tp = hints[f.name]
        if f.name in skip:
            continue
        if is_dataclass(tp):
            add_dataclass_args(parser, tp, skip, aliases)
            continue
        origin = typing.get_origin(tp)
        if origin is dict or not f.metadata.get("flag", True):
            continue  # mappings and internals are set with KEY=VALUE overrides or YAML
        names = [*([aliases[f.name]] if aliases and f.name in aliases else []), _flag(f.name)]
        helptext = f.metadata.get("help", "")
        if tp is bool:
            kw: dict[str, Any] = {"action": argparse.BooleanOptionalAction}
        elif origin in (list, tuple):
            kw = {"metavar": "A,B"}
            helptext += "; comma-separated, 'none' for an empty list"
        else:
            kw = {
                "type": {int: int, float: float}.get(tp, str),
                "choices": f.metadata.get("choices"),
            }
        parser.add_argument(
            *names, dest=f.name, default=None, help=with_default(helptext, _default(f)), **kw
        )


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def with_default(helptext: str, default: Any) -> str:
    """Help text that shows the default once: not again where the text already says it."""
    if "default" in helptext.lower():
        return helptext
    if isinstance(default, (list, tuple)):
        shown = ",".join(map(str, default)) or "none"
    else:
        shown = "empty" if default == "" else default
    return f"{helptext} (default: {shown})"


def _default(f: Any) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else None


def dataclass_values(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """Nested dict of the flags the user actually gave, shaped like `cls`."""
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in fields(cls):
        tp = hints[f.name]
        if is_dataclass(tp):
            sub = dataclass_values(args, tp)
            if sub:
                out[f.name] = sub
            continue
        v = getattr(args, f.name, None)
        if v is None:
            continue
        if typing.get_origin(tp) in (list, tuple):
            v = (
                []
                if v.strip().lower() in ("", "none")
                else [_item(x.strip(), tp, f.name) for x in v.split(",") if x.strip()]
            )
        out[f.name] = v
    return out


def _item(text: str, tp: Any, name: str) -> Any:
    """One comma-separated item of a list flag, as the list's item type (int, float, str)."""
    inner = (typing.get_args(tp) or (str,))[0]
    if inner not in (int, float):
        return text
    try:
        return inner(text)
    except ValueError:
        from trajlab.config import ConfigError

        kind = "an integer" if inner is int else "a number"
        raise ConfigError(f"{_flag(name)}: {text!r} is not {kind}") from None


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`, nested mappings merged key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def resolve(
    cls: type[T],
    args: argparse.Namespace | None = None,
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    flags: dict[str, Any] | None = None,
    defaults: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> T:
    """A validated `cls` from a YAML file, then `flags` (by default every flag of `cls`
    given in `args`), then KEY=VALUE `overrides` (by default `args.overrides`).
    `defaults(data)` may return dotted keys that depend on what was given (a benchmark's
    protocol); each is set only where none of the three sources set it.
    Errors name the file they come from."""
    from trajlab.config import ConfigError, apply_overrides, from_dict, load_yaml

    if path is None and args is not None:
        path = getattr(args, "config", None)
    if overrides is None:
        overrides = list(getattr(args, "overrides", None) or [])
    data = load_yaml(path) if path else {}
    if flags is None:
        flags = dataclass_values(args, cls) if args is not None else {}
    data = apply_overrides(merge(data, flags), overrides)
    for key, value in (defaults(data) if defaults else {}).items():
        if lookup(data, key) is None:
            set_key(data, key, value)
    try:
        return from_dict(cls, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None


def lookup(data: dict[str, Any], key: str) -> Any:
    """The value at a dotted key of nested mappings, or None."""
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def set_key(data: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted key in nested mappings, creating the sections on the way."""
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def split_config_arg(args: argparse.Namespace) -> None:
    """A positional CONFIG that is really an override (`trajlab train steps=3`) moves to
    the overrides, so `trajlab train KEY=VALUE ...` works without a YAML file."""
    config = getattr(args, "config", None)
    if config and "=" in config and not Path(config).exists():
        args.overrides = [config, *(args.overrides or [])]
        args.config = None


def trajlab_command() -> str:
    """How to run `trajlab` from here: plain `trajlab` when it is on PATH, else the venv's path."""
    import os
    import shutil

    exe = Path(sys.executable).parent / "trajlab"
    on_path = shutil.which("trajlab")
    if on_path and Path(on_path).resolve() == exe.resolve():
        return "trajlab"
    try:
        return os.path.relpath(exe) if exe.exists() else "trajlab"
    except ValueError:
        return str(exe)
