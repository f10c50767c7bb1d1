"""Unit tests: evaluation metrics against hand-computed values."""

import math

import pytest

from trajlab.eval.metrics import compute_metrics, majority_vote, pass_at_k
from trajlab.types import Segment, ToolCall, Trajectory


def _traj(ex, i, correct, pred, calls=(), stop="answer", n_model=3):
    t = Trajectory(example_id=ex, sample_index=i, stop_reason=stop, prediction=pred)
    t.add(Segment("prompt", [1, 2]))
    t.add(Segment("model", list(range(n_model)), logprobs=[-0.5] * n_model))
    t.tool_calls = [ToolCall("python", {"code": "x"}, ok=ok) for ok in calls]
    t.metadata["correct"] = correct
    return t


def test_pass_at_k_hand_values():
    # n=4, c=1: pass@1 = 1/4; pass@2 = 1 - C(3,2)/C(4,2) = 1 - 3/6 = 0.5
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    assert pass_at_k(4, 0, 4) == 0.0
    assert pass_at_k(4, 2, 3) == 1.0  # only 2 wrong, any 3 contain a correct one
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


def test_pass_at_k_matches_brute_force_enumeration():
    from itertools import combinations

    outcomes = [True, False, False, True, False]
    for k in range(1, 6):
        subsets = list(combinations(outcomes, k))
        brute = sum(any(s) for s in subsets) / len(subsets)
        assert math.isclose(pass_at_k(5, 2, k), brute)


def test_majority_vote_ties_go_to_first_seen_and_none_abstains():
    assert majority_vote(["3", "4", "4", "3"], [True, False, False, True]) is True
    assert majority_vote(["4", None, None, "3"], [False, False, False, True]) is False
    assert majority_vote([None, None], [False, False]) is False
    assert majority_vote(["7", " 7 ", "8"], [False, False, True]) is False


def test_compute_metrics_hand_example():
    trajs = [
        _traj("a", 0, True, "1", calls=(True,)),
        _traj("a", 1, False, "2", calls=(False, True)),
        _traj("b", 0, False, None, stop="length"),
        _traj("b", 1, False, "5"),
    ]
    m = compute_metrics(trajs, wall_time_s=2.0)
    assert m["num_examples"] == 2 and m["samples_per_example"] == 2
    assert m["accuracy"] == pytest.approx(0.25)  # (1/2 + 0/2) / 2
    assert m["pass@2"] == pytest.approx(0.5)
    assert m["maj@1"] == pytest.approx(0.5)  # a: "1" correct; b: no vote
    assert m["tool_call_rate"] == pytest.approx(0.5)
    assert m["tool_calls_per_trajectory"] == pytest.approx(0.75)
    assert m["tool_error_rate"] == pytest.approx(1 / 3)
    assert m["stop_reasons"] == {"answer": 3, "length": 1}
    assert m["model_tokens_per_s"] == pytest.approx(12 / 2.0)
    assert m["answered_rate"] == pytest.approx(0.75)
    assert m["mixed_rate"] == pytest.approx(0.5)  # a: one right, one wrong; b: both wrong
    # per-example intervals: accuracy values 0.5 (a) and 0.0 (b)
    lo, hi = m["accuracy_ci"]
    assert lo == pytest.approx(0.0) and hi == pytest.approx(0.5)
    assert "mixed_rate" not in compute_metrics(trajs[::2])  # one sample each
