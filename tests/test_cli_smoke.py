"""Smoke tests: the real `trajlab` command on a tiny random model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from trajlab.testing import make_tiny_model

pytestmark = pytest.mark.smoke


def _trajlab(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "trajlab.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )


def test_help_lists_commands_and_eval_flags():
    r = _trajlab("--help")
    assert r.returncode == 0 and "eval" in r.stdout
    r = _trajlab("eval", "--help")
    assert r.returncode == 0
    for flag in ("--model", "--task", "--tools", "--protocol", "--max-turns", "-n"):
        assert flag in r.stdout


def test_top_level_help_imports_only_the_dispatcher():
    probe = (
        "import sys\n"
        "from trajlab.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'numpy', 'trajlab.eval.harness') if m in sys.modules]\n"
        "sys.stderr.write(repr(heavy))\n"
    )
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert "eval" in r.stdout and r.stderr.strip().endswith("[]"), r.stderr


def test_key_value_overrides_go_anywhere_after_the_command():
    from trajlab.cli import parse

    _, args = parse(
        ["eval", "--model", "m", "agent.max_turns=6", "--limit", "2", "tools.python.timeout_s=5"]
    )
    assert args.limit == 2 and args.overrides == ["agent.max_turns=6", "tools.python.timeout_s=5"]
    _, args = parse(["train", "configs/quickstart.yaml", "--steps", "3", "seed=1", "optim.lr=1e-5"])
    assert args.config == "configs/quickstart.yaml" and args.overrides == [
        "seed=1",
        "optim.lr=1e-5",
    ]
    with pytest.raises(SystemExit):
        parse(["compare", "a", "b", "seed=1"])  # compare takes no overrides


@pytest.mark.parametrize("tools", ["none", "python"])
def test_eval_cli_end_to_end_on_tiny_model(tmp_path, tools):
    model = make_tiny_model(tmp_path / "tiny")
    out = tmp_path / "run"
    args = [
        "eval",
        "--model",
        str(model),
        "--task",
        "arith",
        "--limit",
        "3",
        "--tools",
        tools,
        "--max-new-tokens-per-turn",
        "16",
        "--max-turns",
        "2",
        "--out",
        str(out),
        "--no-progress",
    ]
    r = _trajlab(*args)
    assert r.returncode == 0, r.stderr
    assert "accuracy" in r.stdout and f"trajlab view {out}" in r.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_trajectories"] == 3
    assert sum(metrics["stop_reasons"].values()) == 3
    lines = (out / "trajectories.jsonl").read_text().splitlines()
    assert len(lines) == 3
    # Running the same command again resumes: nothing new is generated.
    r = _trajlab(*args)
    assert r.returncode == 0 and "3 trajectories already done" in r.stderr
    assert len((out / "trajectories.jsonl").read_text().splitlines()) == 3


def test_eval_cli_errors_are_one_clear_line(tmp_path):
    r = _trajlab(
        "eval",
        "--model",
        str(tmp_path / "missing"),
        "--task",
        "arith",
        "--limit",
        "1",
        "--tools",
        "none",
        "--out",
        str(tmp_path / "r"),
    )
    assert r.returncode == 2 and "missing" in r.stderr and "Traceback" not in r.stderr
    r = _trajlab("eval", "agent.max_turns=zero", "--out", str(tmp_path / "r2"))
    assert r.returncode == 2 and "agent.max_turns" in r.stderr
