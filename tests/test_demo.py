"""The demo's plumbing on a tiny random model: every stage runs in its own process, writes
its run directory, and the summary has intervals, paired gains and times."""

from __future__ import annotations

import json

import pytest

from trajlab import demo


@pytest.mark.smoke
@pytest.mark.sandbox
def test_demo_runs_every_stage_and_reports_gains(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "demo"
    rc = demo.main(
        [
            "--model", str(tiny_model_dir), "--out", str(out), "--eval-size", "4",
            "--sft-size", "4", "--rl-steps", "1", "--threads", "1",
        ]
    )  # fmt: skip
    assert rc == 0
    r = json.loads((out / "demo_results.json").read_text())
    assert list(r["results"]) == ["base model", "after SFT", "after SFT + RL"]
    for m in r["results"].values():
        lo, hi = m["accuracy_ci"]
        assert lo <= m["accuracy"] <= hi
        kinds = m["by_kind"]
        assert set(kinds) == {"expressions", "word problems"}
        assert sum(n for _, n in kinds.values()) == 4
        assert sum(right for right, _ in kinds.values()) == round(m["accuracy"] * 4)
    assert set(r["gains"]) == {"sft", "rl"} and all("ci" in g for g in r["gains"].values())
    for folder in ("eval_base", "eval_sft", "eval_rl"):
        assert (out / folder / "trajectories.jsonl").is_file()
    assert (out / "sft_data.jsonl").is_file() and (out / "rl" / "metrics.jsonl").is_file()
    text = capsys.readouterr().out
    assert "gains (paired over the same questions): cold start" in text
    assert "RL over SFT" in text and "compare two stages:" in text
    assert "right by kind" in text and "word problems" in text
    assert not list(out.glob(".stage-*"))  # stage results are cleaned up


def test_teacher_writes_the_expression_it_was_given():
    from trajlab.tasks import load_task

    ex = next(e for e in load_task("arith", split="train", n=50) if e.meta["style"] == "expression")
    code = demo.solution_code(ex)
    assert code.startswith("print(") and str(eval(code[6:-1])) == ex.answer  # noqa: S307


@pytest.mark.smoke
@pytest.mark.sandbox
def test_demo_with_a_lora_rl_stage_evaluates_the_adapter(tiny_model_dir, tmp_path):
    out = tmp_path / "demo"
    rc = demo.main(
        [
            "--model", str(tiny_model_dir), "--out", str(out), "--eval-size", "2",
            "--sft-size", "2", "--rl-steps", "1", "--threads", "1", "--rl-lora",
        ]
    )  # fmt: skip
    assert rc == 0
    # RL trained a LoRA adapter; its evaluation loaded it merged into the SFT model.
    (adapter,) = (out / "rl" / "checkpoints").glob("step_*/adapter")
    assert json.loads((out / "eval_rl" / "config.json").read_text())["model"] == str(adapter)
    assert "lora: true" in (out / "rl" / "config.yaml").read_text()
