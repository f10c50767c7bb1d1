"""Learning test (slow): RL teaches a tiny random model to call a tool.

Toy tool task: a 2-layer random Llama (trajlab.testing) whose tokenizer has `<python>` and
`</python>` as single tokens, prompted with the bare question, protocol `tags`, a scripted
python tool. Reward (train_helpers.tool_format_reward): 0.25 for emitting `<python>`,
+0.25 for `</python>` after it, +0.5 when a call actually runs. The untrained model samples
near-uniformly from 514 tokens, so it almost never writes either; GRPO has to discover the
call format from rare successes. Step 1's rollouts come from the untrained model, so its
mean reward is the baseline, measured in the same run.
"""

from __future__ import annotations

import json

import pytest

from trajlab.models import load_model, load_tokenizer
from trajlab.testing import make_tiny_model
from trajlab.train.config import load_train_config
from trajlab.train.rl import train
from trajlab.types import Example

THRESHOLD = 0.06  # mean reward of the last 3 steps; measured ~0.10 (baseline ~0.01)


@pytest.mark.slow
def test_grpo_learns_to_call_the_tool(tmp_path):
    path = make_tiny_model(tmp_path / "tiny", init_std=0.02)  # near-uniform: honest exploration
    tok, model = load_tokenizer(path), load_model(path)
    tok.add_tokens(["<python>", "</python>"])
    model.resize_token_embeddings(len(tok))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    examples = [Example(id=f"e{i}", question=f"Run some code {i}.", answer="42") for i in range(16)]
    cfg = load_train_config(
        None,
        [
            f"model.model={path}",
            f"out={tmp_path / 'run'}",
            "steps=25",
            "seed=0",
            "data.prompt=question",
            "rollout.prompts_per_step=8",
            "rollout.group_size=8",
            "agent.protocol=tags",
            "agent.tools=[python]",
            "agent.max_turns=2",
            "agent.max_tool_calls=1",
            "agent.max_new_tokens_per_turn=12",
            "agent.max_new_tokens=32",
            "tool_plugins={python: 'train_helpers:python_42'}",
            "reward.weights={'train_helpers:tool_format_reward': 1.0}",
            "optim.lr=3e-3",
            "algo.micro_batch_size=64",
            "log.checkpoint_every=1000",
            "log.entropy=false",
            "log.alarms=false",
            "log.save_trajectories=false",
            "log.plots=false",
        ],
    )
    train(cfg, examples=examples)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rewards = [r["reward/total/mean"] for r in rows]
    baseline, final = rewards[0], sum(rewards[-3:]) / 3
    assert baseline < THRESHOLD, f"the untrained model already reaches {baseline:.3f}"
    assert final >= THRESHOLD, f"reward went {baseline:.3f} -> {final:.3f}; curve {rewards}"
    assert final > 3 * baseline
