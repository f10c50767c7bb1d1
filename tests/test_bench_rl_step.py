"""Pure helpers of benchmarks/bench_rl_step.py: the shared reward, metrics parsing, summary.

No TRL, no model: the benchmark itself is run by hand (docs/performance.md).
"""

from __future__ import annotations

import json
from fractions import Fraction
from types import SimpleNamespace

import pytest
from bench_helpers import load_benchmark

bench = load_benchmark("bench_rl_step")


@pytest.mark.parametrize(
    "text, value",
    [
        ("The answer is 42.", Fraction(42)),
        ("first 3, then 1,234,567", Fraction(1234567)),
        ("so -17 it is", Fraction(-17)),
        ("\u221212 with a unicode minus", Fraction(-12)),
        ("x = 2.50", Fraction(5, 2)),
        ("it is 7 (see eq2)", Fraction(7)),  # "2" glued to a word is not a number
        ("no digits here", None),
    ],
)
def test_last_number(text, value):
    assert bench.last_number(text) == value


def test_exact_answer_reward():
    assert bench.exact_answer_reward("12 * 3 = 36, so the answer is 36", "36") == 1.0
    assert bench.exact_answer_reward("the answer is 36.0", "36") == 1.0
    assert bench.exact_answer_reward("36 is close, but 35", "36") == 0.0
    assert bench.exact_answer_reward("I do not know", "36") == 0.0
    assert bench.exact_answer_reward("1,000,000<|im_end|>", "1000000") == 1.0
    assert bench.exact_answer_reward("-5", "-5") == 1.0


def test_trajlab_reward_reads_model_text():
    ex = SimpleNamespace(answer="123")
    assert bench.trajlab_reward(ex, SimpleNamespace(model_text="so 100 + 23 = 123")) == 1.0
    assert bench.trajlab_reward(ex, SimpleNamespace(model_text="so 124")) == 0.0


def test_trajlab_steps_parses_metrics_rows():
    rows = [
        {"step": 0, "eval/accuracy": 0.5},  # evaluation-only row
        {"step": 1, "time/step": 10.0, "time/rollout": 6.0, "generated_tokens": 1000.0},
        {"step": 2, "time/step": 4.0, "time/rollout": 3.0, "generated_tokens": 800.0},
    ]
    lines = [json.dumps(r) for r in rows] + [""]
    steps = bench.trajlab_steps(lines)
    assert [s["step"] for s in steps] == [1, 2]
    assert steps[1] == {"step": 2, "seconds": 4.0, "tokens": 800.0, "time/rollout": 3.0}


def test_summarize_excludes_warmup():
    steps = [
        {"step": 1, "seconds": 100.0, "tokens": 10.0},
        {"step": 2, "seconds": 2.0, "tokens": 300.0},
        {"step": 3, "seconds": 3.0, "tokens": 200.0},
    ]
    s = bench.summarize(steps, warmup=1)
    assert s["steps_timed"] == 2
    assert s["mean_s_per_step"] == pytest.approx(2.5)
    assert s["tokens_per_step"] == pytest.approx(250.0)
    assert s["tokens_per_s"] == pytest.approx(100.0)  # 500 tokens / 5 s, not the mean of rates
    with pytest.raises(ValueError, match="none left"):
        bench.summarize(steps[:1], warmup=1)


def test_check_overrides_refuses_workload_keys():
    bench.check_overrides(["optim.autocast=bf16", "algo.micro_batch_size=16"])
    for bad in (
        "rollout.group_size=4",
        "optim.lr=1e-5",
        "agent.max_new_tokens=64",
        "reward.weights.x=1",
    ):
        with pytest.raises(SystemExit, match="fixed by the workload"):
            bench.check_overrides([bad])
    with pytest.raises(SystemExit, match="key=value"):
        bench.check_overrides(["optim.autocast"])


def test_format_table_has_both_systems_ratio_and_cores():
    def system(tok_s):
        return {
            "precision": "fp32",
            "summary": {
                "steps_timed": 3,
                "mean_s_per_step": 1000.0 / tok_s,
                "tokens_per_step": 1000.0,
                "tokens_per_s": tok_s,
            },
            "load_before": [1.0, 1.0, 1.0],
            "load_after": [2.0, 1.0, 1.0],
            "versions": {"torch": "2.13.0"},
        }

    results = {
        "systems": {"trajlab": system(200.0), "trl": system(20.0)},
        "ratio": 10.0,
        "machine": {"cpu_count": 2, "cpu_model": "x", "avx512f": True, "amx": True},
        "workload": {"threads": 2},
    }
    table = bench.format_table(results)
    assert "10.00x" in table and "1.00x" in table
    assert "cores: 2" in table and "torch threads: 2" in table
