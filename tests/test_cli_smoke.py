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
    r = _trajlab("eval", "--set", "agent.max_turns=zero", "--out", str(tmp_path / "r2"))
    assert r.returncode == 2 and "agent.max_turns" in r.stderr
