"""Unit tests of the agent loop on a tiny real tokenizer/model with a scripted engine and tool.

The ledger invariant lives here: logprobs recomputed on the stored token ids equal the
engine's logprobs, and every tool or template token has loss mask 0.
"""

from __future__ import annotations

import pytest
import torch

from trajlab.agent.loop import AgentConfig, AgentLoop
from trajlab.engines.fake import FakeEngine
from trajlab.models import load_model, load_tokenizer, token_logprobs
from trajlab.testing import CHATML_TOOLS_TEMPLATE, make_tiny_model
from trajlab.tools.base import ToolResult
from trajlab.tools.fake import ScriptedTool
from trajlab.types import Example, Trajectory


@pytest.fixture(autouse=True, params=["turn loop", "continuous"])
def mode(request, monkeypatch):
    """Every test runs with the turn-by-turn loop and with continuous batching (over the
    fake engine: trajlab.engines.stream.GenerateStream)."""
    monkeypatch.setattr(AgentLoop, "streams", property(lambda self: request.param == "continuous"))
    return request.param


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = make_tiny_model(tmp_path_factory.mktemp("tiny-agent") / "m")
    return load_model(path), load_tokenizer(path)


# The default answer: what the sandbox says about code that uses an undefined name.
NAME_ERROR = ToolResult(
    output="NameError: name 'x' is not defined", ok=False, status="error", error="NameError"
)


def scripted(outputs=None, raise_on=None) -> ScriptedTool:
    return ScriptedTool("python", outputs or {}, default=NAME_ERROR, raise_on=raise_on)


def _prompt(ex: Example):
    return [{"role": "user", "content": ex.question}]


EX = Example(id="q1", question="What is 6 times 7?", answer="42")


def _loop(tok, script, tool=None, model=None, **cfg):
    engine = FakeEngine(tok, script, model=model)
    tool = tool or scripted({"print(6*7)": "42"})
    loop = AgentLoop(engine, {"python": tool}, AgentConfig(**cfg), prompt_builder=_prompt)
    return loop, engine, tool


def _check_ledger(t: Trajectory):
    for s in t.segments:
        if s.source != "model":
            assert set(s.loss_mask) <= {0}, f"{s.source} tokens must not be trained on"
            assert s.logprobs is None
        else:
            assert len(s.logprobs) == len(s.token_ids)


def test_code_protocol_trajectory_segments_masks_and_tool_call(tiny):
    _, tok = tiny
    loop, engine, tool = _loop(
        tok,
        [
            "Let me compute.\n```python\nprint(6*7)\n```\nignored tail",
            "So the answer is \\boxed{42}.",
        ],
    )
    (t,) = loop.run([(EX, 0)])
    assert [s.source for s in t.segments] == [
        "prompt",
        "model",
        "template",
        "tool",
        "template",
        "model",
    ]
    assert tool.ran == ["print(6*7)"]
    assert t.tool_calls[0].result == "42" and t.tool_calls[0].ok
    assert t.stop_reason == "answer"
    assert t.segments[3].text == "42"
    _check_ledger(t)
    # The engine saw exactly the stored ids as the prompt of its second turn.
    second_prompt = engine.requests[1]
    assert second_prompt == t.token_ids[: len(second_prompt)]
    # Generation stopped at the closing fence: the scripted tail never entered the ledger.
    assert "ignored tail" not in t.response_text
    assert t.metadata["turns"] == 2 and t.metadata["tool_calls"] == 1


def test_ledger_invariant_recomputed_logprobs_match_engine(tiny):
    model, tok = tiny
    loop, _, _ = _loop(
        tok,
        ["```python\nprint(6*7)\n```", "```python\nprint(x)\n```", "The answer is \\boxed{42}."],
        model=model,
    )
    (t,) = loop.run([(EX, 0)])
    assert len(t.tool_calls) == 2 and t.stop_reason == "answer"
    ids = torch.tensor([t.token_ids])
    recomputed = token_logprobs(model, ids)[0]  # [T]
    sampled = t.sampling_logprobs()
    mask = t.loss_mask
    n_checked = 0
    for i, (lp, m) in enumerate(zip(sampled, mask)):
        if lp is None:
            assert m == 0
            continue
        assert abs(recomputed[i].item() - lp) < 1e-4, f"token {i}: {recomputed[i].item()} vs {lp}"
        n_checked += 1
    assert n_checked == t.num_model_tokens > 0
    _check_ledger(t)
    # Round trip through JSONL is exact.
    assert Trajectory.from_json(t.to_json()) == t


def test_void_turn_ends_the_trajectory_and_is_counted(tiny):
    _, tok = tiny
    loop, _, _ = _loop(tok, ["I do not know."])
    (t,) = loop.run([(EX, 0)])
    assert t.stop_reason == "answer" and t.metadata["void_turns"] == 1 and not t.tool_calls


def test_tool_call_budget_forces_a_final_turn_without_tools(tiny):
    _, tok = tiny
    loop, engine, tool = _loop(
        tok,
        ["```python\nprint(6*7)\n```", "```python\nprint(6*7)\n```\nstill coding"],
        max_tool_calls=1,
    )
    (t,) = loop.run([(EX, 0)])
    assert tool.ran == ["print(6*7)"]  # the second call is recorded but never run
    assert t.stop_reason == "max_turns"
    assert [c.status for c in t.tool_calls] == ["ok", "limit"]
    assert "still coding" in t.segments[-1].text  # the final turn had no stop strings


def test_max_turns_and_per_tool_limits(tiny):
    _, tok = tiny
    code = "```python\nprint(6*7)\n```"
    loop, _, tool = _loop(
        tok, [code, code, "\\boxed{42}"], max_calls_per_tool={"python": 1}, max_turns=3
    )
    (t,) = loop.run([(EX, 0)])
    assert [c.status for c in t.tool_calls] == ["ok", "limit"]
    assert "at most 1" in t.tool_calls[1].result
    assert tool.ran == ["print(6*7)"]
    assert t.stop_reason == "answer"


def test_malformed_call_is_an_observation_not_a_crash(tiny):
    _, tok = tiny
    loop, _, tool = _loop(tok, ["```python\n\n```", "\\boxed{1}"])
    (t,) = loop.run([(EX, 0)])
    assert t.tool_calls[0].status == "parse_error" and "empty" in t.tool_calls[0].result
    assert tool.ran == [] and t.stop_reason == "answer"


def test_crashing_tool_ends_only_its_episode(tiny):
    _, tok = tiny
    tool = scripted({"print(6*7)": "42"}, raise_on="boom")
    script = {"q1": ["```python\nboom()\n```"], "q2": ["```python\nprint(6*7)\n```", "\\boxed{42}"]}
    queues = {k: list(v) for k, v in script.items()}

    def responder(prompt_text: str) -> str:
        key = "q1" if "first" in prompt_text else "q2"
        return queues[key].pop(0)

    engine = FakeEngine(tok, responder)
    loop = AgentLoop(engine, {"python": tool}, AgentConfig(), prompt_builder=_prompt)
    t1, t2 = loop.run([(Example("q1", "first question"), 0), (Example("q2", "second question"), 0)])
    assert t1.stop_reason == "tool_error" and "scripted python tool failure" in t1.metadata["error"]
    assert t2.stop_reason == "answer" and t2.tool_calls[0].result == "42"


def test_engine_failure_is_recorded_per_episode(tiny):
    _, tok = tiny

    class Broken(FakeEngine):
        def generate(self, prompts, params, stop=()):
            raise RuntimeError("out of memory")

    loop = AgentLoop(Broken(tok, []), {"python": scripted()}, AgentConfig(), prompt_builder=_prompt)
    ts = loop.run([(EX, 0), (EX, 1)])
    assert [t.stop_reason for t in ts] == ["error", "error"]
    assert "out of memory" in ts[0].metadata["error"]


def test_length_and_context_budgets(tiny):
    _, tok = tiny
    loop, _, _ = _loop(tok, ["word " * 200], max_new_tokens_per_turn=8)
    (t,) = loop.run([(EX, 0)])
    assert t.stop_reason == "length" and t.num_model_tokens == 8
    loop, _, _ = _loop(tok, ["x"], max_context=5)
    (t,) = loop.run([(EX, 0)])
    assert t.stop_reason == "context_overflow" and t.num_model_tokens == 0


def test_observation_is_truncated_head_and_tail(tiny):
    _, tok = tiny
    tool = scripted({"print(6*7)": "A" * 500 + "B" * 500})
    loop, _, _ = _loop(
        tok, ["```python\nprint(6*7)\n```", "\\boxed{1}"], tool=tool, observation_max_chars=100
    )
    (t,) = loop.run([(EX, 0)])
    shown = t.segments[3].text
    assert shown.startswith("A" * 50) and shown.endswith("B" * 50) and len(shown) < 200
    assert t.tool_calls[0].result == "A" * 500 + "B" * 500  # the full result is kept on the ledger


def test_tags_protocol(tiny):
    _, tok = tiny
    loop, _, tool = _loop(
        tok,
        ["<think>compute</think><python>print(6*7)</python>", "<answer>\\boxed{42}</answer>"],
        protocol="tags",
    )
    (t,) = loop.run([(EX, 0)])
    assert tool.ran == ["print(6*7)"]
    assert " <result>\n" in t.segments[2].text and t.segments[3].text == "42"
    assert t.stop_reason == "answer"


def test_native_protocol_uses_the_chat_template_and_refuses_templates_without_tools(tmp_path):
    path = make_tiny_model(tmp_path / "native", chat_template=CHATML_TOOLS_TEMPLATE)
    tok = load_tokenizer(path)
    call = '<tool_call>{"name": "python", "arguments": {"code": "print(6*7)"}}</tool_call>'
    loop, engine, tool = _loop(tok, [call, "\\boxed{42}"], protocol="native")
    (t,) = loop.run([(EX, 0)])
    assert tool.ran == ["print(6*7)"]
    assert "<tools>" in t.segments[0].text  # the schemas were rendered into the prompt
    obs = "".join(s.text for s in t.segments[2:5])
    assert "<tool_response>\n42\n</tool_response>" in obs and obs.endswith(
        "<|im_start|>assistant\n"
    )
    assert [s.source for s in t.segments[2:5]] == ["template", "tool", "template"]
    _check_ledger(t)

    plain = load_tokenizer(make_tiny_model(tmp_path / "plain"))
    with pytest.raises(ValueError, match="ignores the `tools` list"):
        AgentLoop(
            FakeEngine(plain, []),
            {"python": scripted()},
            AgentConfig(protocol="native"),
            prompt_builder=_prompt,
        )


def test_no_tools_means_one_plain_turn(tiny):
    _, tok = tiny
    engine = FakeEngine(tok, ["```python\nprint(1)\n```\nThe answer is \\boxed{1}"])
    loop = AgentLoop(engine, {}, AgentConfig(tools=[]), prompt_builder=_prompt)
    (t,) = loop.run([(EX, 0)])
    assert not t.tool_calls and t.stop_reason == "answer" and t.metadata["turns"] == 1
