"""Every `trajlab ...` command in README.md and docs/*.md parses with the current CLI, and
every `trajlab train configs/...` command resolves to a valid TrainConfig, so renaming a
flag or a config key without updating the docs fails here. Commands are read from fenced
bash blocks; line continuations, `;`/`&&`/`|` and simple shell variables (VAR="..." set in
the same block, loop variables) are handled; nothing is run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SEPARATORS = {";", "&&", "||", "|", "&", "(", ")", "do", "then", "done", "fi"}


def _expand(line: str, env: dict[str, str]) -> str:
    def sub(m: re.Match) -> str:
        return env.get(m["name"], "0")  # an unknown variable is a loop index or a number

    return re.sub(r"\$\{?(?P<name>[A-Za-z_][A-Za-z0-9_]*)\}?", sub, line)


def doc_commands(docs: dict[str, str]) -> list[tuple[str, list[str]]]:
    """(where, argv) of every trajlab command in the fenced shell blocks of `docs`
    (name -> markdown text)."""
    found = []
    for name, text in docs.items():
        for lang, block in re.findall(r"```(bash|sh|shell|console)?\n(.*?)```", text, re.S):
            env: dict[str, str] = {}
            for line in block.replace("\\\n", " ").splitlines():
                if not lang and not line.lstrip().startswith("trajlab "):
                    continue  # an unlabelled block: only its trajlab lines are shell
                lex = shlex.shlex(_expand(line, env), posix=True, punctuation_chars=True)
                lex.commenters = "#"
                lex.whitespace_split = True
                tokens, command = list(lex), []
                for tok in [*tokens, ";"]:
                    if tok not in SEPARATORS:
                        command.append(tok)
                        continue
                    if len(command) == 1 and re.fullmatch(r"[A-Za-z_]\w*=.*", command[0]):
                        name, value = command[0].split("=", 1)
                        env[name] = value
                    elif command and Path(command[0]).name == "trajlab":
                        found.append((f"{name}: {' '.join(command)}", command))
                    command = []
    return found


COMMANDS = doc_commands({str(d.relative_to(ROOT)): d.read_text() for d in DOCS})


def test_the_extractor_finds_commands_through_shell_syntax():
    doc = """
```bash
COMMON="--model default --task arith"
for s in 0 1; do trajlab train configs/zero_rl_arith.yaml seed=$s; done
trajlab eval $COMMON \\
  --limit 5 && trajlab view runs/x   # a comment
pip install trajlab
```
"""
    assert [argv for _, argv in doc_commands({"doc": doc})] == [
        ["trajlab", "train", "configs/zero_rl_arith.yaml", "seed=0"],
        ["trajlab", "eval", "--model", "default", "--task", "arith", "--limit", "5"],
        ["trajlab", "view", "runs/x"],
    ]
    assert len(COMMANDS) >= 30  # README and docs do have commands to check


def test_a_renamed_flag_would_fail():
    from trajlab.cli import parse

    with pytest.raises(SystemExit):
        parse(["eval", "--no-such-flag", "1"])


@pytest.mark.parametrize("where,argv", COMMANDS, ids=[c[0][:90] for c in COMMANDS])
def test_documented_command_parses(where, argv, monkeypatch):
    from trajlab.cli import parse

    monkeypatch.chdir(ROOT)
    try:
        _, args = parse(argv[1:])
    except SystemExit as e:
        pytest.fail(f"{where}\ndoes not parse with the current CLI (exit {e.code})")
    if args.command == "train" and args.config and args.config.startswith("configs/"):
        from trajlab.train.config import load_train_config

        overrides = [o for o in args.overrides if not o.startswith("out=")]
        load_train_config(args.config, overrides)  # a renamed key raises ConfigError


def _tour() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## A five-minute tour", 1)[1]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(0)


def test_the_readme_tour_needs_no_file_a_fresh_clone_lacks():
    """Every path the tour reads is in the repository or written by an earlier tour command,
    so the tour runs as written from a fresh clone."""
    made: list[str] = []
    for where, argv in doc_commands({"README.md tour": _tour()}):
        outputs, inputs = [], []
        for i, arg in enumerate(argv[2:], start=2):
            value = arg.split("=", 1)[1] if re.match(r"^[\w.]+=", arg) else arg
            if argv[i - 1] in ("--out", "--plot") or arg.startswith("out="):
                outputs.append(value)
            elif not arg.startswith("-") and ("/" in value or value.endswith((".jsonl", ".yaml"))):
                inputs.append(value)
        for path in inputs:
            produced = any(path == m or path.startswith(m.rstrip("/") + "/") for m in made)
            assert produced or (ROOT / path).exists(), f"{where}: {path} is not in a fresh clone"
        made += outputs
    assert len(made) >= 8
