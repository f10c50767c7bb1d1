"""Unit tests: the search tool's formats, protocols round trip, cache and replay, truncation,
the BM25 backend on a synthetic corpus, and the web backend against a local stub server."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from trajlab.agent.protocols import get_protocol
from trajlab.retrieval import FakeRetriever, Hit, Passage, build_index
from trajlab.tools.search import (
    FORMATS,
    PROTOCOL_FORMATS,
    CacheMissError,
    ResultCache,
    SearchConfig,
    SearchTool,
    WebSearch,
    WebSearchError,
    format_hits,
    normalise_query,
    parse_documents,
)

PASSAGES = [
    Passage("p1", "Nineteen Eighty-Four", "Nineteen Eighty-Four is a novel by George Orwell."),
    Passage("p2", "George Orwell", "George Orwell was an English writer born in Motihari."),
    Passage("p3", "Animal Farm", "Animal Farm is a novella by George Orwell, published in 1945."),
    Passage("p4", "Brave New World", "Brave New World is a novel by Aldous Huxley."),
    Passage("p5", "Paris (city)", "Paris is the capital of France.  It lies on the Seine."),
]


class CountingRetriever(FakeRetriever):
    """FakeRetriever that counts searches, to prove replays never touch the backend."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.calls = 0

    def search(self, query, k=10):
        self.calls += 1
        return super().search(query, k)


def hits_of(*rows):
    return [Hit(p.id, p.title, p.text, 1.0, i) for i, p in enumerate(rows, start=1)]


# -- formats and protocols ----------------------------------------------------------


def test_search_r1_format_is_doc_i_title():
    text = format_hits(hits_of(PASSAGES[0], PASSAGES[4]), "search_r1")
    assert text == (
        "Doc 1(Title: Nineteen Eighty-Four) Nineteen Eighty-Four is a novel by George Orwell.\n"
        "Doc 2(Title: Paris (city)) Paris is the capital of France. It lies on the Seine.\n"
    )


@pytest.mark.parametrize("fmt", FORMATS[1:])
def test_every_format_parses_back(fmt):
    hits = hits_of(*PASSAGES)
    pairs = parse_documents(format_hits(hits, fmt), fmt)
    assert pairs == [(h.title, " ".join(h.text.split())) for h in hits]


@pytest.mark.parametrize(
    "protocol,call",
    [
        ("search_r1", "<search> novel by Orwell </search>"),
        ("r1_searcher", '<|begin_of_query|> "novel" by Orwell <|end_of_query|>'),
        (
            "r1_searcher_pp",
            "<internal>I recall little.</internal><external> novel by Orwell </external>",
        ),
        ("tags", "<search> novel by Orwell </search>"),
    ],
)
def test_every_search_protocol_round_trips_through_the_tool(protocol, call):
    p = get_protocol(protocol)
    action = p.parse("<think>look it up</think>" + call, ["search"])
    assert action.kind == "call" and action.args == {"query": "novel by Orwell"}  # quotes dropped
    fmt = PROTOCOL_FORMATS[protocol]
    tool = SearchTool(FakeRetriever(PASSAGES), k=2, fmt=fmt)
    result = tool.run(action.args)
    assert "retrieved" not in action.args  # the call's args stay what the model wrote
    rendered = p.render_result("search", result.output)
    pre, post = p.render_result("search", "\x00").split("\x00")
    assert rendered.startswith(pre) and rendered.endswith(post)
    inner = rendered[len(pre) : len(rendered) - len(post)]
    expected = [
        (h["title"], PASSAGES[int(h["id"][1:]) - 1].text)
        for h in result.metadata["retrieved"]["hits"]
    ]
    assert parse_documents(inner, fmt) == expected
    assert [t for t, _ in expected] == ["Nineteen Eighty-Four", "Animal Farm"]


def test_hits_are_recorded_in_the_result_metadata():
    tool = SearchTool(FakeRetriever(PASSAGES, index_version="v7"), k=2)
    rec = tool.run({"query": "Orwell novel"}).metadata["retrieved"]
    assert rec["index_version"] == "v7" and rec["cache"] == "off"
    assert [h["id"] for h in rec["hits"]] == ["p1", "p2"]
    assert set(rec["hits"][0]) == {"id", "title", "rank", "score"}


def test_empty_query_and_no_results_are_data():
    tool = SearchTool(FakeRetriever(PASSAGES))
    bad = tool.run({"query": "   "})
    assert not bad.ok and bad.status == "bad_args"
    none = tool.run({"query": "zzzz qqqq"})
    assert none.ok and none.status == "no_results" and "zzzz qqqq" in none.output


def test_truncation_by_characters_and_tokens(tiny_tokenizer):
    full = SearchTool(FakeRetriever(PASSAGES), k=3).run({"query": "Orwell novel"}).output
    cut = (
        SearchTool(FakeRetriever(PASSAGES), k=3, max_chars=40).run({"query": "Orwell novel"}).output
    )
    assert cut == full[:40]
    tok = SearchTool(FakeRetriever(PASSAGES), k=3, max_tokens=10, tokenizer=tiny_tokenizer)
    out = tok.run({"query": "Orwell novel"}).output
    ids = tiny_tokenizer.encode(full, add_special_tokens=False)
    assert out == tiny_tokenizer.decode(ids[:10]) and len(out) < len(full)
    with pytest.raises(ValueError, match="tokenizer"):
        SearchTool(FakeRetriever(PASSAGES), max_tokens=10)


# -- cache ----------------------------------------------------------------------------


def test_cache_replays_identically_without_the_backend(tmp_path):
    queries = ["Orwell novel", "capital of France", "  ORWELL   novel ", "Huxley"]
    live = CountingRetriever(PASSAGES, index_version="v1")
    rw = SearchTool(live, k=2, cache=ResultCache(tmp_path, "rw"))
    first = [rw.run({"query": q}).output for q in queries]
    assert live.calls == 3  # the third query normalises to the first
    assert normalise_query(queries[2]) == normalise_query(queries[0])

    dead = CountingRetriever([], index_version="v1")  # would find nothing if asked
    replay = SearchTool(dead, k=2, cache=ResultCache(tmp_path, "replay"))
    args = [{"query": q} for q in queries]
    results = [replay.run(a) for a in args]
    assert [r.output for r in results] == first
    assert dead.calls == 0 and all(r.metadata["retrieved"]["cache"] == "hit" for r in results)
    lines = (tmp_path / "search_cache.jsonl").read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["query"] == "orwell novel"


def test_replay_miss_names_the_query_and_keys_include_k_and_version(tmp_path):
    SearchTool(FakeRetriever(PASSAGES, "v1"), k=2, cache=ResultCache(tmp_path, "rw")).run(
        {"query": "Orwell"}
    )
    replay = ResultCache(tmp_path, "replay")
    assert replay.get("orwell", 2, "v1") is not None
    for q, k, v in (("Huxley", 2, "v1"), ("Orwell", 3, "v1"), ("Orwell", 2, "v2")):
        with pytest.raises(CacheMissError, match="search cache replay") as e:
            replay.get(q, k, v)
        assert normalise_query(q) in str(e.value)
    with pytest.raises(FileNotFoundError, match="rw"):
        ResultCache(tmp_path / "empty", "replay")


def test_cache_survives_a_torn_last_line_and_off_mode_writes_nothing(tmp_path):
    tool = SearchTool(FakeRetriever(PASSAGES, "v1"), k=1, cache=ResultCache(tmp_path, "rw"))
    tool.run({"query": "Orwell"})
    with open(tmp_path / "search_cache.jsonl", "a") as f:
        f.write('{"query": "hux')  # a killed run
    assert len(ResultCache(tmp_path, "rw")) == 1
    off = tmp_path / "off"
    SearchTool(FakeRetriever(PASSAGES), cache=ResultCache(off, "off")).run({"query": "Orwell"})
    assert not off.exists()


# -- the BM25 backend via SearchConfig ---------------------------------------------------


@pytest.fixture(scope="module")
def bm25_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    corpus = root / "corpus.jsonl"
    with open(corpus, "w") as f:
        for p in PASSAGES:
            f.write(json.dumps({"id": p.id, "title": p.title, "text": p.text}) + "\n")
    build_index(corpus, "bm25", root / "idx")
    return root / "idx"


def test_search_tool_from_config_on_a_bm25_index(bm25_dir, tmp_path):
    cfg = SearchConfig(search_index=str(bm25_dir), search_k=2, search_cache_dir=str(tmp_path))
    tool = SearchTool.from_config(cfg, protocol="r1_searcher")
    args = {"query": "Huxley Brave New World"}
    result = tool.run(args)
    assert result.output.startswith("(1) Brave New World\n")
    assert result.metadata["retrieved"]["index_version"].startswith("bm25-")
    # Replay mode reads only manifest.json for the version and never loads the index.
    replay = SearchTool.from_config(
        SearchConfig(
            search_index=str(bm25_dir),
            search_k=2,
            search_cache_dir=str(tmp_path),
            search_cache_mode="replay",
        ),
        protocol="r1_searcher",
    )
    assert replay.run({"query": "huxley brave new world"}).output == result.output
    assert replay.backend._retriever is None


def test_missing_index_and_replay_without_cache_dir_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="trajlab index"):
        SearchTool.from_config(SearchConfig())
    with pytest.raises(FileNotFoundError, match="not a trajlab index"):
        SearchTool.from_config(SearchConfig(search_index=str(tmp_path)))
    with pytest.raises(ValueError, match="search-cache-dir"):
        SearchTool.from_config(SearchConfig(search_index=str(tmp_path), search_cache_mode="replay"))


# -- web backend (local stub only) ---------------------------------------------------------


class _Stub(BaseHTTPRequestHandler):
    seen: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Stub.seen.append((body, self.headers.get("Authorization")))
        if body["query"] == "broken":
            payload = {"oops": True}
        else:
            payload = {
                "results": [
                    {
                        "title": f"T{i}",
                        "snippet": f"about {body['query']} {i}",
                        "url": f"http://x/{i}",
                    }
                    for i in range(5)
                ]
            }
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture()
def stub_url():
    server = HTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/search"
    server.shutdown()
    server.server_close()


def test_web_backend_against_a_local_stub(stub_url, monkeypatch, tmp_path):
    monkeypatch.setenv("TRAJLAB_TEST_SEARCH_KEY", "sekret")
    _Stub.seen.clear()
    cfg = SearchConfig(
        search_backend="web",
        search_web_url=stub_url,
        search_web_key_env="TRAJLAB_TEST_SEARCH_KEY",
        search_k=2,
        search_cache_dir=str(tmp_path),
    )
    tool = SearchTool.from_config(cfg, protocol="search_r1")
    args = {"query": "Orwell"}
    result = tool.run(args)
    out = result.output
    assert out == "Doc 1(Title: T0) about orwell 0\nDoc 2(Title: T1) about orwell 1\n"
    assert _Stub.seen == [({"query": "orwell", "k": 2}, "Bearer sekret")]
    assert result.metadata["retrieved"]["index_version"].startswith("web-127.0.0.1:")
    assert "sekret" not in (tmp_path / "search_cache.jsonl").read_text()
    with pytest.raises(WebSearchError, match="results"):
        tool.run({"query": "broken"})


def test_web_backend_needs_an_explicit_url_and_a_set_key():
    with pytest.raises(ValueError, match="http"):
        SearchTool.from_config(SearchConfig(search_backend="web"))
    with pytest.raises(ValueError, match="not set"):
        WebSearch("http://127.0.0.1:1/x", key_env="TRAJLAB_SURELY_UNSET_VAR")
