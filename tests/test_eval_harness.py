"""The evaluation harness: run directory contents, resume without duplicates, clear errors."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from trajlab.agent.loop import AgentConfig
from trajlab.config import ConfigError
from trajlab.engines.fake import FakeEngine
from trajlab.eval.harness import EvalConfig, evaluate
from trajlab.models import load_tokenizer
from trajlab.testing import make_tiny_model
from trajlab.tools.base import ToolResult
from trajlab.tools.fake import ScriptedTool
from trajlab.types import Example, read_jsonl

EXAMPLES = [
    Example(id=f"m{i}", question=f"What is {i + 2} * {i + 3}?", answer=str((i + 2) * (i + 3)))
    for i in range(6)
]


def calculator() -> ScriptedTool:
    """Knows the product of every example's question; anything else is an error."""
    products = {f"print({i + 2} * {i + 3})": str((i + 2) * (i + 3)) for i in range(6)}
    error = ToolResult(output="SyntaxError", ok=False, status="error", error="SyntaxError")
    return ScriptedTool("python", products, default=error)


def responder(prompt_text: str) -> str:
    """Solves with the tool; answers right on even ids, wrong on odd ones."""
    q = prompt_text.rsplit("What is ", 1)[1].split("?")[0]
    a, b = (int(x) for x in q.split("*"))
    if "```output" not in prompt_text.rsplit("What is", 1)[1]:
        return f"Let me compute.\n```python\nprint({a} * {b})\n```\n"
    answer = a * b if a % 2 == 0 else a * b + 1
    return f"The result is \\boxed{{{answer}}}."


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return load_tokenizer(make_tiny_model(tmp_path_factory.mktemp("tiny-eval") / "m"))


def _config(out, **kw):
    return EvalConfig(
        model="fake",
        task="inline",
        out=str(out),
        batch_size=4,
        progress=False,
        agent=AgentConfig(protocol="code"),
        **kw,
    )


def test_eval_writes_a_complete_run_directory(tok, tmp_path):
    out = tmp_path / "run"
    m = evaluate(
        _config(out),
        engine=FakeEngine(tok, responder),
        tools={"python": calculator()},
        examples=EXAMPLES,
        argv=["trajlab", "eval"],
    )
    for name in (
        "run.json",
        "config.json",
        "trajectories.jsonl",
        "metrics.json",
        "summary.md",
        "metrics.png",
    ):
        assert (out / name).exists(), name
    assert m["accuracy"] == pytest.approx(0.5)  # ids m0, m2, m4 have even a
    assert m["tool_call_rate"] == 1.0 and m["tool_calls_per_trajectory"] == 1.0
    trajs = read_jsonl(out / "trajectories.jsonl")
    assert len(trajs) == 6 and {t.prediction for t in trajs if t.metadata["correct"]} == {
        "6",
        "20",
        "42",
    }
    assert json.loads((out / "run.json").read_text())["status"] == "done"
    assert "accuracy" in (out / "summary.md").read_text()


def test_interrupted_run_resumes_without_duplicates(tok, tmp_path):
    out = tmp_path / "run"
    calls = {"n": 0}

    def flaky(prompt_text: str) -> str:
        calls["n"] += 1
        if calls["n"] == 9:  # in the third batch of four
            raise KeyboardInterrupt
        return responder(prompt_text)

    cfg = _config(out, n=2)
    with pytest.raises(KeyboardInterrupt):
        evaluate(
            cfg, engine=FakeEngine(tok, flaky), tools={"python": calculator()}, examples=EXAMPLES
        )
    partial = read_jsonl(out / "trajectories.jsonl")
    assert 0 < len(partial) < 12
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    # A torn last line from a kill must not break the resume.
    with open(out / "trajectories.jsonl", "a") as f:
        f.write('{"example_id": "m5", "segm')
    engine = FakeEngine(tok, responder)
    m = evaluate(cfg, engine=engine, tools={"python": calculator()}, examples=EXAMPLES)
    trajs = read_jsonl(out / "trajectories.jsonl")
    keys = [(t.example_id, t.sample_index) for t in trajs]
    assert len(keys) == len(set(keys)) == 12
    assert m["num_trajectories"] == 12 and m["samples_per_example"] == 2
    # Only the missing trajectories were generated again (two turns each).
    assert len(engine.requests) == 2 * (12 - len(partial))


def test_resume_with_a_different_config_is_refused(tok, tmp_path):
    out = tmp_path / "run"
    evaluate(
        _config(out),
        engine=FakeEngine(tok, responder),
        tools={"python": calculator()},
        examples=EXAMPLES[:2],
    )
    with pytest.raises(ConfigError, match="temperature"):
        evaluate(
            _config(out, temperature=0.7),
            engine=FakeEngine(tok, responder),
            tools={"python": calculator()},
            examples=EXAMPLES[:2],
        )


def test_bad_task_rows_name_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "question": "1+1?", "answer": "2"}\n{"id": "b", "answer": "3"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl.*2"):
        evaluate(EvalConfig(task=str(bad), out=str(tmp_path / "r"), progress=False))


def test_missing_model_gives_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        evaluate(
            EvalConfig(
                model=str(tmp_path / "nope"),
                task="arith",
                limit=1,
                out=str(tmp_path / "r"),
                progress=False,
                agent=AgentConfig(tools=[]),
            )
        )
    assert "nope" in str(e.value)


def test_eval_config_validation_names_the_field():
    from trajlab.config import from_dict

    with pytest.raises(ConfigError, match="Did you mean 'temperature'"):
        from_dict(EvalConfig, {"temprature": 0.5})
    with pytest.raises(ConfigError, match="agent.protocol.*choose one of"):
        from_dict(EvalConfig, {"agent": {"protocol": "xml"}})
    with pytest.raises(ConfigError, match="n must be >= 1"):
        from_dict(EvalConfig, {"n": 0})


def test_tool_plugins_stand_in_for_a_registered_tool(tok, tmp_path):
    out = tmp_path / "run"
    m = evaluate(
        _config(out, tool_plugins={"python": "train_helpers:python_42"}),
        engine=FakeEngine(tok, responder),
        examples=EXAMPLES,
    )
    trajs = read_jsonl(out / "trajectories.jsonl")
    assert m["tool_call_rate"] == 1.0
    assert {c.result for t in trajs for c in t.tool_calls} == {"42"}


def test_batches_of_a_sampled_run_draw_independent_samples(tmp_path):
    # The same question under two ids, one per batch: with one seed for every batch, row 0
    # of each batch would replay the same random draws and give the same text.
    model = make_tiny_model(tmp_path / "m")
    same = [Example(id=f"dup{i}", question="What is 6 times 7?", answer="42") for i in range(2)]
    cfg = EvalConfig(
        model=str(model), task="inline", out=str(tmp_path / "run"), batch_size=1, n=1,
        temperature=1.0, progress=False, prompt="question",
        agent=AgentConfig(protocol="code", tools=[], max_new_tokens_per_turn=24),
    )  # fmt: skip
    evaluate(cfg, examples=same)
    a, b = read_jsonl(tmp_path / "run" / "trajectories.jsonl")
    assert a.token_ids[: a.prompt_length] == b.token_ids[: b.prompt_length]
    assert a.response_token_ids != b.response_token_ids
    # ...and the same command again, in a new directory, samples exactly the same.
    evaluate(replace(cfg, out=str(tmp_path / "again")), examples=same)
    c, d = read_jsonl(tmp_path / "again" / "trajectories.jsonl")
    assert (c.token_ids, d.token_ids) == (a.token_ids, b.token_ids)
