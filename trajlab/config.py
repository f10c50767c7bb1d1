"""Typed configs: dataclasses whose fields document themselves, loaded from YAML or dicts.

Declare a field with `opt(default, "help text", choices=...)`. `from_dict(Cls, data)`
builds the dataclass (nested dataclasses included), and rejects unknown keys, wrong
types and values outside `choices` with an error that names the field, the bad value
and what is allowed. `apply_overrides(data, ["a.b=3"])` applies command-line
`key=value` overrides (values parsed as YAML scalars) before validation.

PyYAML is imported only where YAML is read or written, so the sandbox (which declares its
settings with `opt`) imports this module from a bare interpreter.

What this module does not do: hold any algorithm's config itself; each concern
declares its own dataclass next to the code that uses it.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Sequence
from dataclasses import MISSING, field, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value or key is wrong; the message names the field and the fix."""


def opt(
    default: Any = MISSING,
    help: str = "",
    choices: Sequence[Any] | None = None,
    flag: bool = True,
    **kw: Any,
) -> Any:
    """A documented dataclass field. Mutable defaults (lists, dicts) are copied per instance.
    `flag=False` keeps an internal field off the command line (YAML and key=value still
    reach it)."""
    meta = {"help": help, "choices": tuple(choices) if choices is not None else None, "flag": flag}
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


def at_least(obj: Any, **minimums: float) -> None:
    """Raise ValueError for the first field of `obj` below its minimum, naming the field
    (from_dict prefixes its section): at_least(self, group_size=1, lr=0)."""
    for name, lo in minimums.items():
        value = getattr(obj, name)
        if value < lo:
            raise ValueError(f"{name} must be >= {lo:g}, got {value}")


def field_help(cls: type) -> dict[str, str]:
    return {f.name: f.metadata.get("help", "") for f in fields(cls)}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} does not match {tp}")
    if is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=where + ".")
    if origin in (list, tuple, Sequence):
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {k: _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, str):
            # PyYAML (YAML 1.1) reads `1e-6` as a string; accept it as everyone writes it.
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any] | None, prefix: str = "") -> T:
    """Build and validate `cls` from a plain mapping."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    unknown = [k for k in data if k not in known]
    if unknown:
        k = unknown[0]
        close = difflib.get_close_matches(k, known, n=1)
        hint = f" Did you mean {prefix + close[0]!r}?" if close else ""
        raise ConfigError(
            f"unknown config key {prefix + str(k)!r}.{hint} Valid keys of {cls.__name__}: "
            f"{', '.join(known)}"
        )
    kwargs = {}
    for name, f in known.items():
        where = prefix + name
        if name not in data:
            if f.default is MISSING and f.default_factory is MISSING:  # type: ignore[misc]
                raise ConfigError(
                    f"missing required config key {where!r}: {f.metadata.get('help', '')}"
                )
            continue
        value = _coerce(data[name], hints[name], where)
        choices = f.metadata.get("choices")
        if choices is not None:
            vals = value if isinstance(value, list) else [value]
            for v in vals:
                if v not in choices:
                    raise ConfigError(
                        f"{where}: {v!r} is not valid; choose one of: {', '.join(map(str, choices))}"
                    )
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        if isinstance(e, ConfigError):
            raise
        message = str(e)
        if message.split(" ", 1)[0] in known:  # "lr must be > 0" -> "optim.lr must be > 0"
            raise ConfigError(prefix + message) from None
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {message}") from None


def to_dict(obj: Any) -> dict[str, Any]:
    """A config as plain data (tuples become lists), as it reads back from YAML or JSON."""
    return _plain(dataclasses.asdict(obj))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides; values are parsed as YAML scalars (3, 0.5, true, [a, b])."""
    import yaml

    out = dict(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. train.lr=1e-6)")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            child = node.get(p)
            node[p] = dict(child) if isinstance(child, dict) else {}
            node = node[p]
        node[parts[-1]] = value
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p} must hold a mapping at the top level, got {type(data).__name__}")
    return data


def dump_yaml(obj: Any, path: str | Path) -> None:
    import yaml

    Path(path).write_text(
        yaml.safe_dump(to_dict(obj) if is_dataclass(obj) else obj, sort_keys=False)
    )
