"""The `trajlab` command line.

    trajlab eval  --model default --task arith --tools python --protocol code -n 4
    trajlab model prepare            # convert the default model once
    trajlab index CORPUS.jsonl --kind bm25 --out DIR
    trajlab view RUN_DIR [RUN_DIR ...]
    trajlab compare RUN_A RUN_B      # B - A per metric, paired bootstrap interval

Each subcommand lives in its own module exposing `configure(parser)` and
`main(args) -> int`; this file only maps names to modules, imported lazily so
`trajlab --help` is instant. Flags of config-driven commands are derived from
their dataclass configs, so `--help` shows every field's documentation.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import typing
from dataclasses import MISSING, fields, is_dataclass
from typing import Any

# name -> (module, one-line help). Modules expose configure(parser) and main(args).
COMMANDS: dict[str, tuple[str, str]] = {
    "eval": ("trajlab.cli", "evaluate a model on a task with or without tools"),
    "model": ("trajlab.cli", "prepare or inspect models (e.g. convert the default model once)"),
    "train": (
        "trajlab.train.cli",
        "reinforcement learning from a YAML recipe (resumes an existing run)",
    ),
    "sft": (
        "trajlab.train.sft",
        "supervised fine-tuning on trajectories JSONL (cold start; tool output never trained)",
    ),
    "index": ("trajlab.retrieval.cli", "build a BM25, dense or hybrid index over a JSONL corpus"),
    "view": ("trajlab.viewer.cli", "open the trajectory viewer over run directories"),
    "compare": (
        "trajlab.eval.compare",
        "paired comparison of two runs: per-metric difference with a bootstrap interval",
    ),
    "seeds": (
        "trajlab.eval.seeds",
        "several seeds of one recipe: held-out mean and min-max at every evaluation, curves",
    ),
}


# -- dataclass <-> argparse ----------------------------------------------------
def add_dataclass_args(
    parser: argparse.ArgumentParser, cls: type, skip: set[str] = frozenset()
) -> None:
    """One flag per scalar or list field of `cls` (nested dataclasses flattened)."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        tp = hints[f.name]
        if f.name in skip:
            continue
        if is_dataclass(tp):
            add_dataclass_args(parser, tp, skip)
            continue
        origin = typing.get_origin(tp)
        if origin is dict:
            continue  # mappings are set with --set key.sub=value or a YAML file
        default = (
            f.default
            if f.default is not MISSING
            else (f.default_factory() if f.default_factory is not MISSING else None)
        )  # type: ignore[misc]
        flag = "--" + f.name.replace("_", "-")
        helptext = f.metadata.get("help", "")
        choices = f.metadata.get("choices")
        if tp is bool:
            parser.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"{helptext} (default: {default})",
            )
        elif origin is list:
            parser.add_argument(
                flag,
                dest=f.name,
                default=None,
                metavar="A,B",
                help=f"{helptext}; comma-separated, 'none' for an empty list (default: {','.join(map(str, default)) or 'none'})",
            )
        else:
            conv = {int: int, float: float}.get(tp, str)
            parser.add_argument(
                flag,
                dest=f.name,
                type=conv,
                default=None,
                choices=choices,
                help=f"{helptext} (default: {default})",
            )


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
        if typing.get_origin(tp) is list:
            v = (
                []
                if v.strip().lower() in ("", "none")
                else [x.strip() for x in v.split(",") if x.strip()]
            )
        out[f.name] = v
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# -- eval ----------------------------------------------------------------------
def _configure_eval(p: argparse.ArgumentParser) -> None:
    from trajlab.eval.harness import EvalConfig

    p.add_argument("--config", help="YAML file with EvalConfig fields; flags override it")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any field, e.g. --set agent.max_calls_per_tool.python=2",
    )
    add_dataclass_args(p, EvalConfig)
    p.add_argument("-n", dest="n", type=int, help="samples per example (same as --n)")


def _run_eval(args: argparse.Namespace) -> int:
    from trajlab.config import apply_overrides, from_dict, load_yaml
    from trajlab.eval.harness import EvalConfig, evaluate

    data = load_yaml(args.config) if args.config else {}
    data = _merge(data, dataclass_values(args, EvalConfig))
    data = apply_overrides(data, args.overrides)
    config = from_dict(EvalConfig, data)
    m = evaluate(config, argv=["trajlab", *sys.argv[1:]])
    print(
        f"\naccuracy {m.get('accuracy', 0):.3f} | tool-call rate {m.get('tool_call_rate', 0):.3f} | "
        f"{m.get('num_trajectories', 0)} trajectories | {m.get('wall_time_s', 0):.0f}s"
    )
    print(f"run written to {m['run_dir']} (summary.md, metrics.json, trajectories.jsonl)")
    print(f"open it with: {trajlab_command()} view {m['run_dir']}")
    return 0


# -- model ---------------------------------------------------------------------
def _configure_model(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "action",
        choices=("prepare", "info"),
        help="prepare: convert the default model once; info: describe a model",
    )
    p.add_argument(
        "spec",
        nargs="?",
        default="default",
        help="model spec: default, a HF directory or a .gguf file",
    )


def _run_model(args: argparse.Namespace) -> int:
    from trajlab import models

    if args.action == "prepare":
        path = (
            models.prepare_default_model()
            if args.spec == "default"
            else models.load_model(args.spec)
        )
        print(f"ready: {path}" if not hasattr(path, "config") else "ready")
        return 0
    model = models.load_model(args.spec)
    n = sum(p.numel() for p in model.parameters())
    print(
        f"{type(model).__name__}: {n / 1e6:.1f}M parameters, {model.config.num_hidden_layers} layers, vocab {model.config.vocab_size}"
    )
    return 0


def trajlab_command() -> str:
    """How to run `trajlab` from here: plain `trajlab` when it is on PATH, else the venv's path."""
    import os
    import shutil
    from pathlib import Path

    exe = Path(sys.executable).parent / "trajlab"
    on_path = shutil.which("trajlab")
    if on_path and Path(on_path).resolve() == exe.resolve():
        return "trajlab"
    try:
        return os.path.relpath(exe) if exe.exists() else "trajlab"
    except ValueError:
        return str(exe)


_LOCAL = {"eval": (_configure_eval, _run_eval), "model": (_configure_model, _run_model)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trajlab",
        description="Run, score, train on and evaluate tool-integrated reasoning trajectories.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, helptext) in COMMANDS.items():
        p = sub.add_parser(name, help=helptext, description=helptext)
        if name in _LOCAL:
            _LOCAL[name][0](p)
            p.set_defaults(_main=_LOCAL[name][1])
        else:
            try:
                mod = importlib.import_module(module)
            except ImportError as e:
                p.set_defaults(_main=lambda a, e=e, name=name: _missing(name, e))
                continue
            mod.configure(p)
            p.set_defaults(_main=mod.main)
    return parser


def _missing(name: str, e: Exception) -> int:
    print(
        f"trajlab {name} is unavailable: {e}. Install trajlab with its extras: pip install -e '.[search,train,dev]'",
        file=sys.stderr,
    )
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "_main", None):
        parser.print_help()
        return 1
    from trajlab.config import ConfigError

    try:
        return int(args._main(args) or 0)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as e:
        # Bad input (a model path, a task file, a value): one clear line, not a traceback.
        if args.verbose:
            raise
        print(f"error: {e}\n(run with -v for the traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
