"""Intervals and paired comparisons (trajlab.eval.compare, `trajlab compare`)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trajlab.cli import main as trajlab_main
from trajlab.eval.compare import bootstrap_ci, compare_runs, intervals, resolve_run
from trajlab.types import RewardBreakdown, Segment, ToolCall, Trajectory, write_jsonl


def traj(ex: str, correct: bool, sample: int = 0, tool: bool = False) -> Trajectory:
    t = Trajectory(example_id=ex, sample_index=sample, stop_reason="answer")
    t.add(Segment("prompt", [1], text="q"))
    t.add(Segment("model", [2, 3, 4], text="x", logprobs=[-0.1] * 3))
    t.reward = RewardBreakdown(float(correct), {"math_correct": float(correct)})
    t.prediction = "1"
    t.metadata["correct"] = correct
    if tool:
        t.tool_calls.append(ToolCall("python", {"code": "print(1)"}, result="1"))
    return t


def run_dir(path, outcomes, **kw):
    path.mkdir(parents=True)
    write_jsonl(
        path / "trajectories.jsonl", [traj(f"e{i}", c, **kw) for i, c in enumerate(outcomes)]
    )
    return path


def test_bootstrap_ci_is_deterministic_and_brackets_the_mean():
    x = [1.0] * 30 + [0.0] * 70
    lo, hi = bootstrap_ci(x)
    assert lo < 0.3 < hi and (lo, hi) == bootstrap_ci(x)
    # the normal approximation: 0.3 +- 1.96 * sqrt(0.3 * 0.7 / 100) = [0.21, 0.39]
    assert lo == pytest.approx(0.21, abs=0.02) and hi == pytest.approx(0.39, abs=0.02)
    assert bootstrap_ci([0.5, 0.5, 0.5]) == (0.5, 0.5)
    assert all(np.isnan(bootstrap_ci([])))


def test_intervals_average_samples_within_an_example_first():
    # e0: 2 of 2 right, e1: 0 of 2 right -> per-example values 1 and 0
    ts = [traj("e0", True, 0), traj("e0", True, 1), traj("e1", False, 0), traj("e1", False, 1)]
    ci = intervals(ts)["accuracy_ci"]
    assert ci[0] == pytest.approx(0.0) and ci[1] == pytest.approx(1.0)


def test_four_examples_are_within_noise_forty_are_not(tmp_path):
    a = run_dir(tmp_path / "a", [True, False, False, True])
    b = run_dir(tmp_path / "b", [True, True, True, True])
    acc = next(m for m in compare_runs(a, b)["metrics"] if m["metric"] == "accuracy")
    assert acc["diff"] == pytest.approx(0.5) and acc["n"] == 4
    # P(resampled mean of [0, 1, 1, 0] is 0) = 1/16 > 2.5 %: 0 is inside the interval
    assert acc["ci"][0] == 0.0 and acc["within_noise"] is True

    a = run_dir(tmp_path / "a40", [False] * 40)
    b = run_dir(tmp_path / "b40", [True, False] * 20)
    acc = next(m for m in compare_runs(a, b)["metrics"] if m["metric"] == "accuracy")
    assert acc["diff"] == pytest.approx(0.5) and acc["within_noise"] is False
    assert 0.3 < acc["ci"][0] < 0.5 < acc["ci"][1] < 0.7


def test_pairing_is_tighter_than_two_separate_intervals(tmp_path):
    rng = np.random.default_rng(0)
    hard = rng.random(200) < 0.5  # the same examples are hard for both runs
    a = run_dir(tmp_path / "a", [bool(x) for x in ~hard])
    gain = rng.random(200) < 0.15
    b = run_dir(tmp_path / "b", [bool(x) for x in ~hard | gain])
    acc = next(m for m in compare_runs(a, b)["metrics"] if m["metric"] == "accuracy")
    paired_width = acc["ci"][1] - acc["ci"][0]
    la, ha = bootstrap_ci([float(x) for x in ~hard])
    lb, hb = bootstrap_ci([float(x) for x in ~hard | gain])
    assert paired_width < 0.5 * ((ha - la) + (hb - lb))  # well under the unpaired widths
    assert acc["within_noise"] is False and acc["diff"] > 0


def test_only_shared_examples_count_and_none_shared_is_an_error(tmp_path):
    a = run_dir(tmp_path / "a", [True, True, False])
    bdir = tmp_path / "b"
    bdir.mkdir()
    write_jsonl(bdir / "trajectories.jsonl", [traj("e0", False), traj("zz", True)])
    r = compare_runs(a, bdir)
    assert (r["shared"], r["only_a"], r["only_b"]) == (1, 2, 1)
    c = tmp_path / "c"
    c.mkdir()
    write_jsonl(c / "trajectories.jsonl", [traj("other", True)])
    with pytest.raises(ValueError, match="share no example ids"):
        compare_runs(a, c)


def test_a_training_run_means_its_newest_evaluation(tmp_path):
    train = tmp_path / "train"
    for step in (5, 10):
        run_dir(train / "eval" / f"step_{step:06d}", [True])
    assert resolve_run(train) == train / "eval" / "step_000010" / "trajectories.jsonl"
    with pytest.raises(FileNotFoundError, match="no trajectories.jsonl and no eval"):
        resolve_run(tmp_path)


def test_cli_prints_a_table_and_json(tmp_path, capsys):
    a = run_dir(tmp_path / "a", [False] * 40, tool=False)
    b = run_dir(tmp_path / "b", [True, False] * 20, tool=True)
    assert trajlab_main(["compare", str(a), str(b), "--n-boot", "2000"]) == 0
    out = capsys.readouterr().out
    assert "| accuracy | 0.000 | 0.500 | +0.500 |" in out and "B higher" in out
    assert "| answered_rate | 1.000 | 1.000 | +0.000 | [+0.000, +0.000] | within noise |" in out
    assert trajlab_main(["compare", str(a), str(b), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    tool = next(m for m in data["metrics"] if m["metric"] == "tool_call_rate")
    assert tool["diff"] == 1.0 and tool["ci"] == [1.0, 1.0]
    assert trajlab_main(["compare", str(a), str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
