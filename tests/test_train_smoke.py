"""Smoke: the real `trajlab train` and `trajlab sft` command lines for two steps on a tiny
random model (HF engine, scripted python tool): finite loss, parameters changed,
checkpoint and metrics written, and running the command again resumes."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from trajlab.models import load_model
from trajlab.train.checkpoint import load_weights
from trajlab.train.cli import _standalone as train_cli

pytestmark = pytest.mark.smoke


def _write_task(path):
    rows = [
        {"id": f"q{i}", "question": f"What is {i} times 3?", "answer": str(3 * i)} for i in range(8)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_train_cli_two_steps_then_resume(tiny_model_dir, tmp_path, capsys):
    task = _write_task(tmp_path / "task.jsonl")
    out = tmp_path / "run"
    argv = [
        f"model.model={tiny_model_dir}",
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
        "log.tensorboard=false",
        "eval.every=2",
        "data.eval_task=" + str(task),
        "data.eval_size=2",
        "--out",
        str(out),
        "--steps",
        "2",
    ]
    assert train_cli(argv) == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert math.isfinite(r["loss"]) and r["grad_norm"] > 0
        assert {
            "reward/total/mean",
            "accuracy",
            "tool_call_rate",
            "response_length/mean",
            "entropy",
            "clip_fraction",
            "time/rollout",
            "time/update",
            "tokens_per_s",
        } <= r.keys()
        if sys.platform.startswith("linux"):  # the trainer's own peak per phase, from /proc
            assert 0 < r["memory/rollout_peak_gib"] < 64 and 0 < r["memory/update_peak_gib"] < 64
    assert "eval/accuracy" in rows[-1] and (out / "eval" / "step_000002" / "metrics.json").is_file()
    lo, hi = rows[-1]["eval/accuracy_ci_low"], rows[-1]["eval/accuracy_ci_high"]
    assert lo <= rows[-1]["eval/accuracy"] <= hi
    summary = (out / "summary.md").read_text()
    assert "| step | accuracy |" in summary and "Alarms:" in summary
    assert (out / "checkpoints" / "step_000002" / "trainer_state.json").is_file()
    assert (out / "trajectories" / "step_000002.jsonl").is_file() and (
        out / "metrics.png"
    ).is_file()
    assert json.loads((out / "run.json").read_text())["status"] == "done"
    before, after = load_model(tiny_model_dir), load_model(tiny_model_dir)
    load_weights(out / "checkpoints" / "step_000002", after)
    changed = [
        k for k, v in after.state_dict().items() if not torch.equal(v, before.state_dict()[k])
    ]
    assert changed, "training changed no parameter"
    assert "trajlab view" in capsys.readouterr().out

    # the same command with more steps resumes from step 2
    assert train_cli(argv[:-1] + ["3"]) == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]


def test_train_cli_reports_bad_config(tmp_path, capsys):
    assert train_cli(["algo.advantage=ppo", "--out", str(tmp_path / "x")]) == 2
    assert "choose one of" in capsys.readouterr().err


def test_sft_cli_masks_tool_output_and_learns(tiny_model_dir, tmp_path):
    """SFT on scripted trajectories: loss falls, tool tokens get zero gradient."""
    from train_helpers import python_42

    from trajlab.agent.loop import AgentConfig, AgentLoop
    from trajlab.engines.fake import FakeEngine
    from trajlab.models import load_tokenizer
    from trajlab.train.sft import sft_loss
    from trajlab.train.sft_cli import configure as configure_sft
    from trajlab.train.sft_cli import main as main_sft
    from trajlab.types import Example, write_jsonl

    tok = load_tokenizer(tiny_model_dir)
    engine = FakeEngine(
        tok, lambda _p: "```python\nprint(6*7)\n```\n" if "```output" not in _p else "\\boxed{42}"
    )
    loop = AgentLoop(
        engine,
        {"python": python_42()},
        AgentConfig(),
        prompt_builder=lambda ex: [{"role": "user", "content": ex.question}],
    )
    trajs = loop.run(
        [(Example(id=f"q{i}", question=f"Compute {i}", answer="42"), 0) for i in range(8)]
    )
    for t in trajs:
        t.metadata["correct"] = True
        assert any(s.source == "tool" for s in t.segments)
    data = tmp_path / "sft.jsonl"
    write_jsonl(data, trajs)

    model = load_model(tiny_model_dir)
    loss, lp = sft_loss(model, trajs[:2], tok.pad_token_id, 1.0)
    lp.retain_grad()
    loss.backward()
    for b, t in enumerate(trajs[:2]):
        mask = torch.tensor(t.loss_mask, dtype=torch.bool)
        assert torch.all(lp.grad[b, : len(mask)][~mask] == 0) and torch.any(
            lp.grad[b, : len(mask)][mask] != 0
        )

    import argparse

    p = argparse.ArgumentParser()
    configure_sft(p)
    out = tmp_path / "sft"
    args = p.parse_args(
        [
            "--data",
            str(data),
            "--model",
            str(tiny_model_dir),
            "--out",
            str(out),
            "--epochs",
            "6",
            "--lr",
            "3e-3",
            "batch_size=4",
            "micro_batch_size=2",
            "progress=false",
        ]
    )
    assert main_sft(args) == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["loss"] < rows[0]["loss"] * 0.7
    assert (out / "model" / "config.json").is_file()
