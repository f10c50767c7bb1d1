"""Unit tests for trajlab.retrieval: corpus reading, BM25 against a hand-written reference,
top-k and RRF maths, persistence, corpus/index mismatch and the `trajlab index` CLI.

Every corpus is built here; nothing reads benchmark data or the network. Dense and hybrid
tests (real MiniLM) are in test_retrieval_dense.py.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from trajlab.retrieval import (
    BM25Config,
    BM25Index,
    CorpusError,
    FakeRetriever,
    Hit,
    IndexMismatchError,
    Passage,
    Retriever,
    build_index,
    load_index,
    read_corpus,
    rrf_fuse,
)
from trajlab.retrieval.base import top_k_rows
from trajlab.retrieval.bm25 import Tokenizer
from trajlab.retrieval.cli import configure, main, run
from trajlab.retrieval.manifest import MANIFEST_FILE, directory_size

DOCS = [
    ("d0", "Apple", "The apple is a fruit. Apples grow on apple trees in orchards."),
    ("d1", "Banana", "Bananas are long yellow fruits that grow in tropical climates."),
    ("d2", "Orchard", "An orchard is a plantation of fruit trees, such as apple and pear trees."),
    ("d3", "Paris", "Paris is the capital and most populous city of France."),
    ("d4", "France", "France is a country in Western Europe; its capital is Paris."),
    ("d5", "Python", "Python is a programming language. Python code is readable."),
    ("d6", "Snake", "The python is a large snake found in Africa, Asia and Australia."),
    ("d7", "Running", "Running is a method of terrestrial locomotion; runners run races."),
    ("d8", "Cider", "Cider is an alcoholic drink made from fermented apple juice."),
    ("d9", "Empty-ish", "The and of in."),
    ("d10", "Tree", "A tree is a perennial plant with an elongated stem, or trunk."),
    ("d11", "Pear", "The pear tree and shrub are species of genus Pyrus, grown for fruit."),
]
PASSAGES = [Passage(i, t, x) for i, t, x in DOCS]
QUERIES = [
    "apple trees",
    "capital of France",
    "python snake",
    "fruit tree orchard pear",
    "running runners",
    "apple apple juice",  # a repeated query term counts twice
    "zzz unknown words",  # no term in the vocabulary
    "the of and",  # stopwords only
]


def write_corpus(path: Path, passages=PASSAGES, shape: str = "text") -> Path:
    with open(path, "w") as f:
        for p in passages:
            if shape == "text":
                row = {"id": p.id, "title": p.title, "text": p.text, "extra": 1}
            else:
                row = {"id": p.id, "contents": f'"{p.title}"\n{p.text}'}
            f.write(json.dumps(row) + "\n")
    return path


# ---------------------------------------------------------------- corpus


def test_read_corpus_text_and_contents_shapes(tmp_path):
    a = read_corpus(write_corpus(tmp_path / "a.jsonl"))
    b = read_corpus(write_corpus(tmp_path / "b.jsonl", shape="contents"))
    assert a == PASSAGES == b
    assert a[0].contents == "Apple\nThe apple is a fruit. Apples grow on apple trees in orchards."


def test_read_corpus_limit_blank_lines_and_int_ids(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(
        '{"id": 7, "title": "T", "text": "x"}\n\n   \n{"id": "b", "contents": "Only\\nbody"}\n'
        '{"id": "c", "title": "Own", "contents": "Head\\nrest"}\n'
    )
    got = read_corpus(path)
    assert got == [
        Passage("7", "T", "x"),
        Passage("b", "Only", "body"),
        Passage("c", "Own", "rest"),
    ]
    assert read_corpus(path, limit=2) == got[:2]


@pytest.mark.parametrize(
    "line, problem",
    [
        ("{not json", "invalid JSON"),
        ('["a", "b"]', "row is a JSON list, not an object"),
        ('{"title": "T", "text": "x"}', "missing field 'id'"),
        ('{"id": "z", "title": "T"}', "has neither 'text' nor 'contents'"),
        ('{"id": "z", "text": "x"}', "has 'text' but no 'title'"),
        ('{"id": "z", "title": "T", "text": 5}', "'text' must be a string, got int"),
        (
            '{"id": null, "title": "T", "text": "x"}',
            "'id' must be a non-empty string or an integer",
        ),
        ('{"id": "d0", "title": "T", "text": "x"}', "duplicate id 'd0' (first seen on line 1)"),
    ],
)
def test_bad_row_error_names_file_line_problem_and_schema(tmp_path, line, problem):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"id": "d0", "title": "A", "text": "ok"}) + "\n\n" + line + "\n")
    with pytest.raises(CorpusError) as err:
        read_corpus(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:3: ")
    assert problem in msg
    assert "expected one JSON object per line with 'id'" in msg


def test_missing_and_empty_corpus(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        read_corpus(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(CorpusError, match="no passages found"):
        read_corpus(tmp_path / "empty.jsonl")


# ---------------------------------------------------------------- BM25 vs reference


def test_tokenizer_lowercases_drops_stopwords_and_short_words_and_stems():
    text = ["The Cats are running in Paris! A b 42 x1"]
    assert Tokenizer(BM25Config())(text) == [["cat", "run", "pari", "42", "x1"]]
    assert Tokenizer(BM25Config(stemmer="none"))(text) == [["cats", "running", "paris", "42", "x1"]]


def reference_bm25(
    corpus_tokens: list[list[str]], query: list[str], k1: float, b: float
) -> list[float]:
    """Lucene BM25 written out: sum over query tokens (repeats count) of idf * tf-part."""
    n = len(corpus_tokens)
    avgdl = sum(len(d) for d in corpus_tokens) / n
    df = Counter(t for d in corpus_tokens for t in set(d))
    scores = []
    for doc in corpus_tokens:
        tf = Counter(doc)
        s = 0.0
        for t in query:
            if tf[t] == 0:
                continue
            idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
            s += idf * tf[t] / (tf[t] + k1 * (1 - b + b * len(doc) / avgdl))
        scores.append(s)
    return scores


@pytest.mark.parametrize(
    "config",
    [
        BM25Config(),
        BM25Config(k1=1.5, b=0.75, stemmer="none"),
        BM25Config(k1=1.2, b=1.0, stemmer="porter"),
    ],
    ids=["default", "k1.5-b.75-nostem", "porter-b1"],
)
def test_bm25_scores_and_ranking_equal_reference(config):
    index = BM25Index.build(PASSAGES, config)
    tok = Tokenizer(config)
    corpus_tokens = tok([p.contents for p in PASSAGES])
    for query in QUERIES:
        ref = reference_bm25(corpus_tokens, tok([query])[0], config.k1, config.b)
        got = index.scores(tok([query])[0])
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
        # ranking: reference order (score desc, then row), passages with score 0 left out
        ref_order = sorted((r for r in range(len(ref)) if ref[r] > 0), key=lambda r: (-ref[r], r))
        hits = index.search(query, k=len(PASSAGES))
        assert [h.id for h in hits] == [PASSAGES[r].id for r in ref_order]
        assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
        np.testing.assert_allclose([h.score for h in hits], [ref[r] for r in ref_order], rtol=1e-5)


def test_bm25_known_answers_and_empty_results():
    index = BM25Index.build(PASSAGES)
    assert index.search("capital of France", 2)[0].id in {"d3", "d4"}
    assert index.search("python snake", 1)[0].id == "d6"  # both words only in d6
    assert index.search("zzz unknown words", 5) == []
    assert index.search("the of and", 5) == []
    assert index.search("", 5) == []
    assert len(index.search("fruit", 2)) == 2
    batch = index.search_batch(QUERIES, 3)
    assert batch == [index.search(q, 3) for q in QUERIES]
    with pytest.raises(ValueError, match="k must be a positive integer"):
        index.search("apple", 0)


def test_bm25_search_matches_bm25s_retrieve():
    """Our top-k selection returns what bm25s's own retrieve does (no ties in this corpus)."""
    index = BM25Index.build(PASSAGES)
    tokens = index.tokenizer(["apple trees"])
    docs, scores = index.model.retrieve(tokens, k=3, show_progress=False)
    hits = index.search("apple trees", 3)
    assert [h.id for h in hits] == [PASSAGES[i].id for i in docs[0]]
    np.testing.assert_allclose([h.score for h in hits], scores[0], rtol=1e-6)


# ---------------------------------------------------------------- pure helpers


def test_top_k_rows_breaks_ties_by_row_and_matches_slow_version():
    scores = np.array([0.0, 2.0, 1.0, 2.0, 0.5, 2.0, 0.0])
    assert top_k_rows(scores, 2).tolist() == [1, 3]
    assert top_k_rows(scores, 4).tolist() == [1, 3, 5, 2]
    assert top_k_rows(scores, 10, positive_only=True).tolist() == [1, 3, 5, 2, 4]
    assert top_k_rows(np.zeros(4), 2, positive_only=True).tolist() == []
    rng = np.random.default_rng(0)
    for _ in range(50):
        s = rng.integers(0, 4, size=30).astype(np.float32)
        k = int(rng.integers(1, 35))
        slow = sorted(range(30), key=lambda r: (-s[r], r))[:k]
        assert top_k_rows(s, k).tolist() == slow
        assert top_k_rows(s, k, positive_only=True).tolist() == [r for r in slow if s[r] > 0]


def test_rrf_fuse_hand_computed():
    fused = rrf_fuse([[1, 2, 3], [3, 1]], rrf_k=60, k=3)
    assert [row for row, _ in fused] == [1, 3, 2]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)
    assert fused[1][1] == pytest.approx(1 / 63 + 1 / 61)
    assert fused[2][1] == pytest.approx(1 / 62)
    # equal fused scores: lower row first; k truncates
    assert rrf_fuse([[5, 4], [4, 5]], rrf_k=0, k=1) == [(4, 1 / 1 + 1 / 2)]


def test_fake_retriever_satisfies_protocol():
    fake = FakeRetriever(PASSAGES)
    assert isinstance(fake, Retriever)
    assert isinstance(BM25Index.build(PASSAGES), Retriever)
    hits = fake.search("apple juice cider", 2)
    assert hits[0] == Hit("d8", "Cider", PASSAGES[8].text, 3.0, 1)
    assert fake.search_batch(["paris"], 1)[0][0].id == "d3"


# ---------------------------------------------------------------- persistence


def test_bm25_round_trip_is_memory_mapped_and_identical(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    manifest = build_index(corpus, "bm25", tmp_path / "idx")
    loaded = load_index(tmp_path / "idx", corpus=corpus)
    assert isinstance(loaded, BM25Index)
    assert isinstance(loaded.model.scores["data"], np.memmap)
    in_memory = BM25Index.build(PASSAGES)
    for q in QUERIES:
        assert loaded.search(q, 5) == in_memory.search(q, 5)
    assert loaded.index_version == manifest.index_version
    assert loaded.manifest.corpus.rows == len(PASSAGES)


def test_manifest_records_corpus_build_size_and_versions(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    m = build_index(corpus, "bm25", tmp_path / "idx", limit=5)
    d = json.loads((tmp_path / "idx" / MANIFEST_FILE).read_text())
    assert d["kind"] == "bm25" and d["format_version"] == 1
    assert d["corpus"]["rows"] == 5 and d["corpus"]["limit"] == 5
    assert d["corpus"]["path"] == str(corpus.resolve())
    assert len(d["corpus"]["sha256"]) == 64
    assert d["size_bytes"] == directory_size(tmp_path / "idx") > 0
    assert d["build_time_s"] > 0 and d["built_at"]
    assert d["libraries"]["bm25s"] and d["libraries"]["python"]
    assert d["config"]["bm25"] == {
        "k1": 0.9,
        "b": 0.4,
        "method": "lucene",
        "stopwords": "en",
        "stemmer": "english",
    }
    assert d["index_version"] == m.index_version and m.index_version.startswith("bm25-")
    assert len(load_index(tmp_path / "idx").passages) == 5
    # the version depends on what determines results, not on when or where it was built
    again = build_index(corpus, "bm25", tmp_path / "idx2", limit=5)
    assert again.index_version == m.index_version
    other = build_index(corpus, "bm25", tmp_path / "idx3", limit=5, bm25=BM25Config(k1=1.2))
    assert other.index_version != m.index_version
    assert build_index(corpus, "bm25", tmp_path / "idx4").index_version != m.index_version


def test_corpus_mismatch_refuses_with_rebuild_command(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    build_index(corpus, "bm25", tmp_path / "idx")
    changed = write_corpus(tmp_path / "changed.jsonl", PASSAGES[:-1])
    with pytest.raises(IndexMismatchError) as err:
        load_index(tmp_path / "idx", corpus=changed)
    msg = str(err.value)
    assert "built from a different corpus" in msg
    assert f"trajlab index {changed} --kind bm25 --out {tmp_path / 'idx'}" in msg
    load_index(tmp_path / "idx", corpus=corpus)  # the right corpus loads


def test_out_directory_rules(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a trajlab index"):
        build_index(corpus, "bm25", tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    build_index(corpus, "bm25", tmp_path / "idx")
    with pytest.raises(FileExistsError, match="--force"):
        build_index(corpus, "bm25", tmp_path / "idx")
    build_index(corpus, "bm25", tmp_path / "idx", overwrite=True, limit=3)
    assert load_index(tmp_path / "idx").manifest.corpus.rows == 3
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no leftovers
    with pytest.raises(ValueError, match="index kind"):
        build_index(corpus, "sparse", tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="not a trajlab index"):
        load_index(tmp_path / "mine")


def test_failed_build_leaves_nothing(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "title": "A", "text": "x"}\n{"id": "a"}\n')
    with pytest.raises(CorpusError):
        build_index(bad, "bm25", tmp_path / "idx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]


# ---------------------------------------------------------------- CLI


def test_cli_builds_and_reports(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    assert run([str(corpus), "--kind", "bm25", "--out", str(tmp_path / "idx"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"bm25 index of {len(PASSAGES)} passages" in out
    assert "size on disk" in out and "build time" in out and "index_version  bm25-" in out
    assert load_index(tmp_path / "idx").search("apple", 1)[0].id == "d0"


def test_cli_configure_and_main_with_a_parent_parser(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="trajlab")
    sub = parser.add_subparsers(dest="command")
    configure(sub.add_parser("index"))
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    args = parser.parse_args(
        [
            "index",
            str(corpus),
            "--out",
            str(tmp_path / "i"),
            "--stemmer",
            "none",
            "--k1",
            "1.2",
            "--limit",
            "4",
            "--quiet",
        ]
    )
    assert main(args) == 0
    m = load_index(tmp_path / "i").manifest
    assert (
        m.config["bm25"]["stemmer"] == "none"
        and m.config["bm25"]["k1"] == 1.2
        and m.corpus.rows == 4
    )


def test_cli_bad_corpus_exits_2_with_message(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "body": "x"}\n')
    assert run([str(bad), "--out", str(tmp_path / "idx"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:1: has neither 'text' nor 'contents'" in err
    assert not (tmp_path / "idx").exists()
