"""`trajlab seeds`: mean and min-max over seeds at every evaluation, and the curves."""

from __future__ import annotations

import json

import pytest

from trajlab.cli import main as trajlab_main
from trajlab.eval.seeds import summarize_seeds


def make_run(path, evals: dict[int, float], reward: float):
    path.mkdir(parents=True)
    rows = []
    for step in range(0, 11):
        row = {"step": step, "time": 100.0 + step, "machine/load_avg_1m": 1.5}
        if step:
            row.update(
                {"reward/total/mean": reward + 0.01 * step, "entropy": 0.5, "time/step": 1.0}
            )
        if step in evals:
            row.update({"eval/accuracy": evals[step], "eval/tool_call_rate": 0.5})
        rows.append(row)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "run.json").write_text(
        json.dumps({"created": "2026-01-01T10:00:00", "updated": "2026-01-01T10:20:00"})
    )
    return path


def test_summary_table_values(tmp_path):
    runs = [
        make_run(tmp_path / "s0", {0: 0.30, 5: 0.60, 10: 0.80}, 0.1),
        make_run(tmp_path / "s1", {0: 0.30, 5: 0.50, 10: 0.90}, 0.2),
        make_run(tmp_path / "s2", {0: 0.30, 5: 0.70, 10: 0.70, 3: 0.4}, 0.3),  # extra step
    ]
    s = summarize_seeds(runs)
    assert [p["step"] for p in s["eval"]] == [0, 5, 10]  # only steps every seed reached
    last = s["eval"][-1]["eval/accuracy"]
    assert last["mean"] == pytest.approx(0.8) and (last["min"], last["max"]) == (0.7, 0.9)
    g = s["final"]["gain"]
    assert g["mean"] == pytest.approx(0.5) and g["min"] == pytest.approx(0.4)
    assert s["final"]["wall_time_s"]["mean"] == 1200.0
    assert s["final"]["load_avg_1m"]["max"] == 1.5


def test_cli_table_and_plot(tmp_path, capsys):
    runs = [make_run(tmp_path / f"s{i}", {0: 0.3, 10: 0.5 + 0.1 * i}, 0.1) for i in range(3)]
    png = tmp_path / "curves.png"
    assert trajlab_main(["seeds", *map(str, runs), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "| 10 | 0.600 [0.500, 0.700] | 0.500, 0.600, 0.700 | 0.500 [0.500, 0.500] |" in out
    assert "mean +0.300, min +0.200, max +0.400 over 3 seeds" in out
    assert png.stat().st_size > 1000


def test_errors_name_the_fix(tmp_path, capsys):
    a = make_run(tmp_path / "a", {0: 0.3}, 0.1)
    with pytest.raises(ValueError, match="at least two runs"):
        summarize_seeds([a])
    b = make_run(tmp_path / "b", {4: 0.3}, 0.1)
    with pytest.raises(ValueError, match="share no evaluation step"):
        summarize_seeds([a, b])
    assert trajlab_main(["seeds", str(a), str(tmp_path / "nope")]) == 2
    assert "metrics.jsonl not found" in capsys.readouterr().err


def test_qa_metrics_come_from_the_eval_directories(tmp_path, capsys):
    runs = []
    for i in range(2):
        run = make_run(tmp_path / f"q{i}", {0: 0.0, 10: 0.0}, 0.1)
        for step, recall in ((0, 0.1), (10, 0.3 + 0.1 * i)):
            d = run / "eval" / f"step_{step:06d}"
            d.mkdir(parents=True)
            (d / "metrics.json").write_text(
                json.dumps({"f1": 0.01 * step, "retrieval_recall": recall})
            )
        runs.append(run)
    s = summarize_seeds(runs)
    last = s["eval"][-1]
    assert last["eval/retrieval_recall"]["min"] == pytest.approx(0.3)
    assert last["eval/retrieval_recall"]["max"] == pytest.approx(0.4)
    assert last["eval/f1"]["mean"] == pytest.approx(0.1)
    assert trajlab_main(["seeds", *map(str, runs)]) == 0
    out = capsys.readouterr().out
    assert "| 10 | 0.100 [0.100, 0.100] | 0.350 [0.300, 0.400] |" in out
