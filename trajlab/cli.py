"""The `trajlab` command line: it only maps command names to modules.

    trajlab eval  --model default --task arith --tools python --protocol code -n 4
    trajlab train configs/zero_rl_arith.yaml steps=20 out=runs/zero_rl
    trajlab model prepare            # convert the default model once
    trajlab index CORPUS.jsonl --kind bm25 --out DIR
    trajlab view RUN_DIR [RUN_DIR ...]
    trajlab compare RUN_A RUN_B      # B - A per metric, paired bootstrap interval
    trajlab serve --model default    # OpenAI-compatible server on 127.0.0.1:8000
    trajlab test-time --task arith --method vote --budgets 1,2,4,8

Each subcommand lives in its own module exposing `configure(parser)` and
`main(args) -> int`. Only the module of the command being run is imported, so
`trajlab --help` imports no torch. Config-driven commands take the same override
style: dotted KEY=VALUE arguments applied last (trajlab/flags.py).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys

# name -> (module, one-line help). Modules expose configure(parser) and main(args).
COMMANDS: dict[str, tuple[str, str]] = {
    "eval": ("trajlab.eval.cli", "evaluate a model on a task with or without tools"),
    "model": (
        "trajlab.model_cli",
        "prepare or inspect models (e.g. convert the default model once)",
    ),
    "train": (
        "trajlab.train.cli",
        "reinforcement learning from a YAML recipe (resumes an existing run)",
    ),
    "sft": (
        "trajlab.train.sft_cli",
        "supervised fine-tuning on trajectories JSONL (cold start; tool output never trained)",
    ),
    "index": ("trajlab.retrieval.cli", "build a BM25, dense or hybrid index over a JSONL corpus"),
    "view": ("trajlab.viewer.cli", "open the trajectory viewer over run directories"),
    "compare": (
        "trajlab.eval.compare",
        "paired comparison of two runs: per-metric difference with a bootstrap interval",
    ),
    "serve": (
        "trajlab.serve_cli",
        "an OpenAI-compatible server (chat, completions, tool calls, logprobs) over a model",
    ),
    "test-time": (
        "trajlab.test_time.cli",
        "best-of-N and voting over sampled trajectories: accuracy per sample budget",
    ),
    "orm": (
        "trajlab.test_time.orm",
        "train an outcome reward model (a probe on a model's hidden state) from scored samples",
    ),
    "prm": (
        "trajlab.test_time.prm",
        "train a process reward model (a value probe) on Monte-Carlo labels of turn prefixes",
    ),
    "seeds": (
        "trajlab.eval.seeds",
        "several seeds of one recipe: held-out mean and min-max at every evaluation, curves",
    ),
}

_OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or with `only`, of that command alone (the others are
    listed in `--help` without importing their modules)."""
    parser = argparse.ArgumentParser(
        prog="trajlab",
        description="Run, score, train on and evaluate tool-integrated reasoning trajectories.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, helptext) in COMMANDS.items():
        p = sub.add_parser(name, help=helptext, description=helptext)
        if only is not None and name != only:
            continue
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            p.set_defaults(_main=lambda a, e=e, name=name: _missing(name, e))
            continue
        mod.configure(p)
        p.set_defaults(_main=mod.main)
    return parser


def parse(argv: list[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """Parse `argv`; KEY=VALUE arguments anywhere after the command are overrides."""
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=command if command in COMMANDS else "")
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if not (_OVERRIDE.match(a) and hasattr(args, "overrides"))]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*(args.overrides or []), *extra]
    from trajlab.flags import split_config_arg

    split_config_arg(args)  # `trajlab train steps=3`: the positional CONFIG is an override
    return parser, args


def _missing(name: str, e: Exception) -> int:
    print(
        f"trajlab {name} is unavailable: {e}. Install trajlab with its extras: pip install -e '.[search,train,dev]'",
        file=sys.stderr,
    )
    return 2


def main(argv: list[str] | None = None) -> int:
    parser, args = parse(sys.argv[1:] if argv is None else list(argv))
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
