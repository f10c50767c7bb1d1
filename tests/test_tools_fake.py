"""The fake tools, the tool registry, and tools that describe themselves to the agent loop."""

from __future__ import annotations

import dataclasses

import pytest

from trajlab.agent import protocols
from trajlab.agent.loop import AgentConfig, AgentLoop
from trajlab.agent.protocols import CallSyntax, MarkupProtocol
from trajlab.build import build_tools
from trajlab.engines.fake import FakeEngine
from trajlab.models import load_tokenizer
from trajlab.testing import CHATML_TOOLS_TEMPLATE, make_tiny_model
from trajlab.tools import TOOLS, ToolSpec
from trajlab.tools.base import ToolResult, keeps_sessions, tool_schema
from trajlab.tools.config import ToolsConfig
from trajlab.tools.fake import EchoConfig, EchoTool, ScriptedTool, echo_python
from trajlab.tools.kg import KGTool
from trajlab.tools.python import PythonTool
from trajlab.tools.search import SearchTool
from trajlab.types import Example


def test_scripted_tool_answers_by_value_and_records_calls():
    tool = ScriptedTool("python", {"print(6*7)": "42\n"})
    assert tool.run({"code": "print(6*7)"}).output == "42\n"
    missing = tool.run({"code": "print(x)"})
    assert not missing.ok and missing.status == "error" and "print(x)" in missing.error
    assert tool.ran == ["print(6*7)", "print(x)"]
    assert tool.calls == [{"code": "print(6*7)"}, {"code": "print(x)"}]


def test_scripted_tool_sequence_then_default_and_scripted_failures():
    failure = ToolResult(output="Traceback ...", ok=False, status="timeout", error="timeout")
    tool = ScriptedTool("search", ["first", failure], default="no results")
    outs = [tool.run({"query": q}) for q in ("a", "b", "c", "d")]
    assert [o.output for o in outs] == ["first", "Traceback ...", "no results", "no results"]
    assert outs[1].status == "timeout" and not outs[1].ok
    outs[1].latency_s = 9.0  # the loop writes latency on results; the script must not change
    assert failure.latency_s == 0.0
    assert tool.ran == ["a", "b", "c", "d"]


def test_scripted_tool_raises_like_a_broken_backend():
    tool = ScriptedTool("python", {}, default="ok", raise_on="boom")
    assert tool.run({"code": "fine"}).output == "ok"
    with pytest.raises(RuntimeError, match="scripted python tool failure"):
        tool.run({"code": "boom()"})


def test_scripted_tool_reads_a_named_or_first_argument():
    tool = ScriptedTool("lookup", {"Paris": "France"})
    assert tool.run({"entity": "Paris"}).output == "France"  # first argument of an unknown tool
    named = ScriptedTool("lookup", {"x": "y"}, arg="key")
    assert named.run({"other": "z", "key": "x"}).output == "y"
    assert named.schema["function"]["parameters"]["required"] == ["key"]


def test_echo_tool_prefix_and_limit():
    echo = EchoTool("python", prefix="ran: ", limit=5)
    assert echo.run({"code": "print(123456)"}).output == "ran: print"
    assert echo.ran == ["print(123456)"]
    assert EchoTool().run({"input": "abc"}).output == "abc"
    with pytest.raises(ValueError, match="limit must be >= 0"):
        EchoTool(limit=-1)
    assert echo_python().name == "python"


def test_registry_specs_match_the_tools_config_sections():
    fields = {f.name: f for f in dataclasses.fields(ToolsConfig)}
    assert set(TOOLS) <= set(fields)
    for name, spec in TOOLS.items():
        assert isinstance(spec, ToolSpec) and spec.name == name and spec.summary
        assert isinstance(fields[name].default_factory(), spec.config)
    cfg = ToolsConfig(echo=EchoConfig(echo_prefix="> ", echo_limit=3))
    assert TOOLS["echo"].settings(cfg) is cfg.echo
    assert TOOLS["echo"].settings(None) == EchoConfig()  # defaults when no section is given


def test_build_tools_hands_the_echo_tool_its_section():
    cfg = ToolsConfig(echo=EchoConfig(echo_prefix="> ", echo_limit=3))
    tools = build_tools(["echo"], AgentConfig(protocol="tags"), cfg)
    assert tools["echo"].run({"input": "abcdef"}).output == "> abc"
    plugged = build_tools(
        ["python"], AgentConfig(), cfg, plugins={"python": "trajlab.tools.fake:echo_python"}
    )
    assert plugged["python"].run({"code": "x"}).output == "x"


def test_built_in_tools_describe_themselves():
    for cls, name, arg in (
        (PythonTool, "python", "code"),
        (SearchTool, "search", "query"),
        (KGTool, "kg", "query"),
    ):
        schema = tool_schema(cls)
        assert schema["function"]["name"] == name
        assert schema["function"]["parameters"]["required"] == [arg]
    assert keeps_sessions(PythonTool) and not keeps_sessions(SearchTool)
    assert tool_schema(object()) is None


def test_native_protocol_offers_any_tools_schema(tmp_path):
    """A tool the loop has never heard of is offered under `native` through its schema."""
    tok = load_tokenizer(make_tiny_model(tmp_path / "m", chat_template=CHATML_TOOLS_TEMPLATE))
    calc = ScriptedTool("calc", {"6*7": "42"}, arg="expression")
    call = '<tool_call>{"name": "calc", "arguments": {"expression": "6*7"}}</tool_call>'
    engine = FakeEngine(tok, [call, "\\boxed{42}"])
    loop = AgentLoop(
        engine,
        {"calc": calc},
        AgentConfig(protocol="native", tools=["calc"]),
        prompt_builder=lambda ex: [{"role": "user", "content": ex.question}],
    )
    (t,) = loop.run([(Example(id="q", question="6*7?", answer="42"), 0)])
    prompt = t.segments[0].text
    assert '"name": "calc"' in prompt and "expression" in prompt
    assert calc.ran == ["6*7"] and t.tool_calls[0].tool == "calc"


class _Counter:
    """A tool whose sessions count their own calls (state kept per trajectory)."""

    name = "count"

    def __init__(self) -> None:
        self.opened: list[_Counter._Session] = []

    class _Session:
        def __init__(self) -> None:
            self.n, self.closed = 0, False

        def run(self, args):
            self.n += 1
            return ToolResult(output=str(self.n))

        def close(self) -> None:
            self.closed = True

    def open_session(self):
        self.opened.append(self._Session())
        return self.opened[-1]

    def run(self, args):
        return ToolResult(output="stateless")

    def close(self) -> None:
        pass


@pytest.mark.parametrize("stateful", [True, False])
def test_stateful_runs_any_tool_that_keeps_sessions(tmp_path, monkeypatch, stateful):
    tok = load_tokenizer(make_tiny_model(tmp_path / "m"))
    tool = _Counter()
    call = "<count>go</count>"
    proto = MarkupProtocol(
        name="count",
        calls=(CallSyntax("count", "<count>", "</count>", "input", "\n{result}\n"),),
    )
    monkeypatch.setitem(protocols.PROTOCOLS, "count", proto)
    engine = FakeEngine(tok, lambda prompt: call if prompt.count(call) < 2 else "\\boxed{2}")
    loop = AgentLoop(
        engine,
        {"count": tool},
        AgentConfig(protocol="count", tools=["count"], stateful=stateful, max_tool_calls=2),
        prompt_builder=lambda ex: [{"role": "user", "content": ex.question}],
    )
    ex = Example(id="q", question="count", answer="2")
    trajs = loop.run([(ex, 0), (ex, 1)])
    outputs = [[c.result for c in t.tool_calls] for t in trajs]
    if stateful:
        assert outputs == [["1", "2"], ["1", "2"]]  # one session per trajectory
        assert len(tool.opened) == 2 and all(s.closed for s in tool.opened)
    else:
        assert outputs == [["stateless"] * 2] * 2 and not tool.opened


def test_a_tool_the_protocol_cannot_call_is_an_error(tmp_path):
    tok = load_tokenizer(make_tiny_model(tmp_path / "m", chat_template=CHATML_TOOLS_TEMPLATE))
    with pytest.raises(ValueError, match=r"protocol 'code' cannot call tool\(s\) search"):
        AgentLoop(
            FakeEngine(tok, []),
            {"search": ScriptedTool("search")},
            AgentConfig(protocol="code", tools=["search"]),
        )

    class NoSchema:
        name = "bare"

        def run(self, args):
            return ToolResult(output="")

        def close(self):
            pass

    with pytest.raises(ValueError, match="give the tool a `schema`"):
        AgentLoop(
            FakeEngine(tok, []),
            {"bare": NoSchema()},
            AgentConfig(protocol="native", tools=["bare"]),
        )
