"""A training run killed with SIGKILL and resumed ends exactly where an uninterrupted run
ends: same parameters, same batches after the kill (issue 3's resume guarantee)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from trajlab.models import load_model
from trajlab.train.checkpoint import load_weights
from trajlab.types import read_jsonl

pytestmark = pytest.mark.smoke
TESTS = Path(__file__).parent


def _argv(model_dir, task, out, steps):
    return [
        sys.executable,
        "-m",
        "trajlab.cli",
        "train",
        f"model.model={model_dir}",
        f"data.task={task}",
        "data.size=0",
        "data.prompt=question",
        "rollout.prompts_per_step=2",
        "rollout.group_size=3",
        "agent.tools=[python]",
        "agent.max_new_tokens_per_turn=8",
        "agent.max_new_tokens=16",
        "tool_plugins={python: 'train_helpers:python_42'}",
        "reward.weights={'train_helpers:token_variety_reward': 1.0}",
        "optim.lr=1e-3",
        "log.checkpoint_every=1",
        "log.keep_checkpoints=10",
        "log.tensorboard=false",
        "eval.every=0",
        "seed=5",
        "--out",
        str(out),
        "--steps",
        str(steps),
    ]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    return env


def test_sigkill_then_resume_matches_uninterrupted_run(tiny_model_dir, tmp_path):
    task = tmp_path / "task.jsonl"
    task.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "question": f"What is {i} times 3?", "answer": str(3 * i)})
            + "\n"
            for i in range(8)
        )
    )
    steps = 4
    ref, cut = tmp_path / "uninterrupted", tmp_path / "killed"
    subprocess.run(
        _argv(tiny_model_dir, task, ref, steps),
        env=_env(),
        check=True,
        capture_output=True,
        timeout=600,
    )

    proc = subprocess.Popen(
        _argv(tiny_model_dir, task, cut, steps),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    marker = cut / "checkpoints" / "step_000002" / "trainer_state.json"
    deadline = time.time() + 600
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (cut / "checkpoints" / f"step_{steps:06d}").exists()

    subprocess.run(
        _argv(tiny_model_dir, task, cut, steps),
        env=_env(),
        check=True,
        capture_output=True,
        timeout=600,
    )

    a, b = load_model(tiny_model_dir), load_model(tiny_model_dir)
    load_weights(ref / "checkpoints" / f"step_{steps:06d}", a)
    load_weights(cut / "checkpoints" / f"step_{steps:06d}", b)
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), f"parameter {name} differs after kill and resume"
    for step in range(3, steps + 1):
        ta = read_jsonl(ref / "trajectories" / f"step_{step:06d}.jsonl")
        tb = read_jsonl(cut / "trajectories" / f"step_{step:06d}.jsonl")
        assert [(t.example_id, t.token_ids) for t in ta] == [
            (t.example_id, t.token_ids) for t in tb
        ]
    rows = [json.loads(x)["step"] for x in (cut / "metrics.jsonl").read_text().splitlines()]
    assert rows == list(range(1, steps + 1)), (
        "metrics.jsonl must hold each step once after a resume"
    )
