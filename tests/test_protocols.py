"""Unit tests: parsing tool calls and rendering results for every markup protocol."""

import pytest

from trajlab.agent.protocols import PROTOCOLS, get_protocol, truncate_observation


def test_code_protocol_parses_first_complete_block_and_its_end():
    p = get_protocol("code")
    text = "Let me compute.\n```python\nprint(6*7)\n```\nmore text ```python\nprint(1)\n```"
    a = p.parse(text, ["python"])
    assert a.kind == "call" and a.tool == "python"
    assert a.args == {"code": "print(6*7)"}
    assert text[: a.end].endswith("print(6*7)\n```")


def test_code_protocol_accepts_py_fence_and_reports_answer_and_void():
    p = get_protocol("code")
    assert p.parse("```py\nx=1\nprint(x)\n```", ["python"]).args == {"code": "x=1\nprint(x)"}
    assert p.parse("So the result is \\boxed{42}.", ["python"]).kind == "answer"
    assert p.parse("I am not sure what to do", ["python"]).kind == "void"
    # An answer written before a code block ends the trajectory; the block is never run.
    assert p.parse("\\boxed{3}\n```python\nprint(1)\n```", ["python"]).kind == "answer"


def test_code_protocol_stop_strings_do_not_fire_on_the_opening_fence():
    stops = get_protocol("code").stop_strings(["python"])
    opening = "Let me write code.\n```python\nprint(1)"
    assert not any(s in opening for s in stops)
    assert any(s in opening + "\n```\n" for s in stops)


def test_empty_code_and_unavailable_tool_are_bad_calls():
    p = get_protocol("tags")
    a = p.parse("<python>   </python>", ["python"])
    assert a.kind == "bad_call" and "empty" in a.error
    b = p.parse("<search>capital of France</search>", ["python"])
    assert b.kind == "bad_call" and "not available" in b.error


def test_tags_protocol_round_trip_for_each_tool():
    p = get_protocol("tags")
    for tool, arg, body in (
        ("python", "code", "print(2)"),
        ("search", "query", "Eiffel tower height"),
    ):
        text = f"<think>need {tool}</think><{tool}>{body}</{tool}>"
        a = p.parse(text, ["python", "search"])
        assert (a.kind, a.tool, a.args) == ("call", tool, {arg: body})
        rendered = p.render_result(tool, "RESULT")
        assert rendered == " <result>\nRESULT\n</result>"


@pytest.mark.parametrize(
    "name,call,result_open",
    [
        ("search_r1", "<search>who wrote Hamlet</search>", "<information>"),
        (
            "r1_searcher",
            "<|begin_of_query|>who wrote Hamlet<|end_of_query|>",
            "<|begin_of_documents|>",
        ),
        ("r1_searcher_pp", "<external>who wrote Hamlet</external>", "<document>"),
    ],
)
def test_search_protocols_parse_and_render(name, call, result_open):
    p = get_protocol(name)
    a = p.parse("<think>I should look it up</think>" + call, ["search"])
    assert a.kind == "call" and a.args == {"query": "who wrote Hamlet"}
    assert result_open in p.render_result("search", "docs")
    assert p.stop_strings(["search"])


def test_native_protocol_parses_json_calls_and_reports_bad_json():
    p = get_protocol("native")
    a = p.parse(
        '<tool_call>{"name": "python", "arguments": {"code": "print(1)"}}</tool_call>', ["python"]
    )
    assert (a.kind, a.tool, a.args) == ("call", "python", {"code": "print(1)"})
    bad = p.parse("<tool_call>{not json}</tool_call>", ["python"])
    assert bad.kind == "bad_call" and "JSON" in bad.error
    unknown = p.parse('<tool_call>{"name": "shell", "arguments": {}}</tool_call>', ["python"])
    assert unknown.kind == "bad_call" and "unknown tool" in unknown.error


def test_unknown_protocol_lists_the_valid_ones():
    with pytest.raises(ValueError) as e:
        get_protocol("xml")
    for name in PROTOCOLS:
        assert name in str(e.value)


def test_truncate_observation_keeps_head_and_tail():
    text = "a" * 300 + "b" * 300
    out = truncate_observation(text, 400)
    assert out.startswith("a" * 200) and out.endswith("b" * 200) and "truncated" in out
    assert truncate_observation("short", 400) == "short"
    assert truncate_observation(text, 0) == text


def test_r1_searcher_drops_quotes_from_queries_and_keeps_the_last_opener():
    p = get_protocol("r1_searcher")
    text = '<|begin_of_query|> draft <|begin_of_query|> "Kiss and Tell" actress <|end_of_query|>'
    a = p.parse(text, ["search"])
    assert a.args == {"query": "Kiss and Tell actress"}
    # other protocols keep quotes: they are part of the query
    b = get_protocol("search_r1").parse('<search> "Kiss and Tell" </search>', ["search"])
    assert b.args == {"query": '"Kiss and Tell"'}
