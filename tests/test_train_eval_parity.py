"""Training-time evaluation and `trajlab eval` are one path (issue: one scoring path).

A training run evaluates its policy on held-out examples and writes that evaluation's
EvalConfig to eval/step_N/config.json. Running `trajlab eval --config` on it with the saved
checkpoint must give the same records: same examples, prompts, engine, sampling seeds,
tools, rewards, predictions and `correct` flags, and the same metrics.
"""

from __future__ import annotations

import json

import pytest

from trajlab.cli import main as trajlab_main
from trajlab.train.config import load_train_config
from trajlab.train.rl import train
from trajlab.types import iter_jsonl

# Fields that measure time, not behaviour.
TIMING_METRICS = {"wall_time_s", "model_tokens_per_s", "tool_latency_s_mean", "tool_stats"}


def record(t) -> dict:
    d = t.to_dict()
    for call in d["tool_calls"]:
        call.pop("latency_s", None)
    return d


@pytest.mark.smoke
@pytest.mark.sandbox
def test_training_eval_and_trajlab_eval_give_identical_records(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    cfg = load_train_config(
        None,
        [
            f"out={out}",
            f"model.model={tiny_model_dir}",
            "steps=1",
            "data.task=arith",
            "data.size=8",
            "data.eval_size=6",
            "rollout.prompts_per_step=2",
            "rollout.group_size=2",
            "agent.protocol=code",
            "agent.tools=[python]",
            "agent.max_turns=2",
            "agent.max_new_tokens_per_turn=12",
            "agent.max_new_tokens=24",
            "tools.python.timeout_s=3",
            "reward.weights={math_correct: 1.0, format_boxed: 0.5}",
            "optim.lr=1e-3",
            "eval.every=1",
            "eval.temperature=1.0",  # sampled: the seeds must flow the same way too
            "eval.batch_size=4",
            "log.checkpoint_every=1",
            "log.plots=false",
        ],
    )
    train(cfg, argv=["test"])
    step_eval = out / "eval" / "step_000001"
    saved = json.loads((step_eval / "config.json").read_text())
    assert saved["reward_weights"] == {"math_correct": 1.0, "format_boxed": 0.5}
    assert saved["tools"]["python"]["timeout_s"] == 3.0

    again = tmp_path / "again"
    rc = trajlab_main(
        [
            "eval",
            "--config",
            str(step_eval / "config.json"),
            "--model",
            str(out / "checkpoints" / "step_000001" / "model"),
            "--out",
            str(again),
        ]
    )
    assert rc == 0
    a = [record(t) for t in iter_jsonl(step_eval / "trajectories.jsonl")]
    b = [record(t) for t in iter_jsonl(again / "trajectories.jsonl")]
    assert len(a) == 6 and a == b
    assert all("correct" in r["metadata"] and r["reward"] is not None for r in a)
    ma = json.loads((step_eval / "metrics.json").read_text())
    mb = json.loads((again / "metrics.json").read_text())
    for m in (ma, mb):
        for k in (*TIMING_METRICS, "model", "run_dir"):
            m.pop(k, None)
    assert ma == mb
