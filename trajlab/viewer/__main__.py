"""`python -m trajlab.viewer RUN_DIR ...`: the viewer without the trajlab CLI.

`python -m trajlab.viewer --demo DIR` first writes a small synthetic training and
evaluation run into DIR (see synthetic.py) and then serves it.
"""

from __future__ import annotations

import argparse
import sys

from trajlab.viewer.cli import configure, main


def _entry(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--demo"]:
        if len(argv) < 2:
            print("usage: python -m trajlab.viewer --demo DIR [viewer options]", file=sys.stderr)
            return 2
        from trajlab.viewer.synthetic import make_eval_run, make_train_run

        make_train_run(f"{argv[1]}/train_demo", steps=12, per_step=8)
        make_eval_run(f"{argv[1]}/eval_demo", n_examples=20, samples=2)
        argv = [argv[1], *argv[2:]]
    parser = configure(
        argparse.ArgumentParser(
            prog="python -m trajlab.viewer",
            description="Trajectory viewer over trajlab run directories.",
        )
    )
    return main(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(_entry())
