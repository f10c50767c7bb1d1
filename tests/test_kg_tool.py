"""Unit tests: the knowledge-graph tool's store, matching, extraction and observations."""

import json

import pytest

from trajlab.retrieval import FakeRetriever, Passage
from trajlab.tools.kg import (
    KGConfig,
    KGTool,
    Triplet,
    TripletStore,
    extract_from_sentence,
    extract_triplets,
    norm_entity,
    parse_query,
    relation_matches,
    split_sentences,
)

TRIPLETS = [
    Triplet("Paris", "capital of", "France"),
    Triplet("George Orwell", "born in", "Motihari"),
    Triplet("Nineteen Eighty-Four", "written by", "George Orwell"),
    Triplet("Animal Farm", "written by", "George Orwell"),
    Triplet("The Eiffel Tower", "located in", "Paris"),
]


@pytest.fixture()
def tool():
    return KGTool(TripletStore(TRIPLETS))


def test_query_syntax():
    assert parse_query("France | capital") == ("France", "capital")
    assert parse_query(' "Paris" ') == ("Paris", "")


def test_entity_query_lists_triplets_as_subject_and_object(tool):
    out = tool.run({"query": "Paris"})
    assert out.ok and out.status == "ok"
    assert out.output == "(Paris; capital of; France)\n(The Eiffel Tower; located in; Paris)"


def test_entity_and_relation_query(tool):
    assert tool.run({"query": "France | capital"}).output == "(Paris; capital of; France)"
    # role noun -> the extractor's verb: "author" matches "written by"
    out = tool.run({"query": "George Orwell | author"}).output
    assert out.splitlines() == [
        "(Nineteen Eighty-Four; written by; George Orwell)",
        "(Animal Farm; written by; George Orwell)",
    ]
    assert tool.run({"query": "orwell | birthplace"}).output == "(George Orwell; born in; Motihari)"


def test_fuzzy_entity_matching(tool):
    assert norm_entity("The  Eiffel-Tower!") == "eiffel tower"
    assert tool.run({"query": "eiffel tower"}).output == "(The Eiffel Tower; located in; Paris)"
    assert (
        tool.run({"query": "Orwell | born"}).output == "(George Orwell; born in; Motihari)"
    )  # word subset
    assert (
        tool.run({"query": "Geroge Orwel | born"}).output == "(George Orwell; born in; Motihari)"
    )  # typos


def test_no_match_observations_say_what_failed(tool):
    r = tool.run({"query": "Atlantis"})
    assert r.ok and r.status == "no_match" and r.output == "No entity matches 'Atlantis'."
    r = tool.run({"query": "Animal Farms book"})  # too far for a match, close enough to suggest
    assert r.output == "No entity matches 'Animal Farms book'. Similar entities: animal farm."
    r = tool.run({"query": "Paris | population"})
    assert (
        r.output
        == "'paris' has no relation matching 'population'. Its relations: capital of, located in."
    )
    bad = tool.run({"query": "  "})
    assert not bad.ok and bad.status == "bad_args"
    assert tool.run({"query": "| capital"}).status == "bad_args"


def test_max_results_and_relation_stems():
    store = TripletStore([Triplet("X", f"rel{i}", f"o{i}") for i in range(5)])
    out = KGTool(store, max_results=2).run({"query": "X"}).output
    assert out.splitlines()[:2] == ["(X; rel0; o0)", "(X; rel1; o1)"] and "3 more" in out
    assert relation_matches("director", "directed by")
    assert not relation_matches("population", "capital of")
    assert relation_matches("", "anything")


def test_jsonl_round_trip_and_bad_rows(tmp_path):
    path = tmp_path / "kg.jsonl"
    TripletStore(TRIPLETS).to_jsonl(path)
    assert TripletStore.from_jsonl(path).triplets == TRIPLETS
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"subject": "a", "relation": "r", "object": "b"}) + "\n" + '{"subject": "a"}\n'
    )
    with pytest.raises(ValueError, match=r"bad.jsonl:2: .*subject.*relation.*object"):
        TripletStore.from_jsonl(bad)


# -- extraction ---------------------------------------------------------------------------


def test_extraction_patterns_hand_cases():
    def triples(sentence, title=""):
        return [(t.subject, t.relation, t.object) for t in extract_from_sentence(sentence, title)]

    assert triples("Paris is the capital of France.") == [("Paris", "capital of", "France")]
    assert triples("Nola is a 2003 film directed by Alan Hruska.") == [
        ("Nola", "is a", "2003 film"),
        ("Nola", "directed by", "Alan Hruska"),
    ]
    assert triples("She was born in Santa Monica, California.", title="Shirley Temple") == [
        ("Shirley Temple", "born in", "Santa Monica")
    ]
    assert triples(
        "Kiss and Tell is a 1945 comedy film starring Shirley Temple as Corliss Archer."
    ) == [
        ("Kiss and Tell", "is a", "1945 comedy film"),
        ("Kiss and Tell", "starring", "Shirley Temple"),
    ]
    assert triples("In the late 1950s he was a member of the band.") == []  # no clean subject
    assert split_sentences("It was written by Jerry B. Jenkins. It sold well.") == [
        "It was written by Jerry B. Jenkins.",
        "It sold well.",
    ]


def test_store_from_extracted_passages_and_config(tmp_path):
    passages = [
        Passage(
            "a",
            "Animal Farm",
            "Animal Farm is a novella written by George Orwell. It was published in 1945.",
        ),
        Passage("b", "Motihari", "Motihari is a city located in Bihar."),
    ]
    got = extract_triplets(passages)
    assert ("Animal Farm", "written by", "George Orwell", "a") in [
        (t.subject, t.relation, t.object, t.source) for t in got
    ]
    corpus = tmp_path / "p.jsonl"
    corpus.write_text(
        "".join(json.dumps({"id": p.id, "title": p.title, "text": p.text}) + "\n" for p in passages)
    )
    tool = KGTool.from_config(KGConfig(kg_corpus=str(corpus)))
    assert tool.run({"query": "Motihari | location"}).output == "(Motihari; located in; Bihar)"
    with pytest.raises(ValueError, match="kg-path"):
        KGTool.from_config(KGConfig())


def test_completion_from_retrieved_passages_is_stateless():
    passages = [Passage("a", "Animal Farm", "Animal Farm is a novella written by George Orwell.")]
    tool = KGTool(
        TripletStore([Triplet("Paris", "capital of", "France")]),
        retriever=FakeRetriever(passages),
        k=2,
    )
    assert (
        tool.run({"query": "Animal Farm | author"}).output
        == "(Animal Farm; written by; George Orwell)"
    )
    assert len(tool.store) == 1  # nothing was added to the static store
    assert tool.run({"query": "Paris | capital"}).output == "(Paris; capital of; France)"
