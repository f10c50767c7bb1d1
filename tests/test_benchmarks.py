"""Named benchmarks read from local copies in their published formats (no Hub access: the
conftest sets HF_HUB_OFFLINE). Each fixture copies the field names and nesting of the
dataset as the Hub serves it (dataset cards of openai/gsm8k, HuggingFaceH4/MATH-500,
HuggingFaceH4/aime_2024, hotpotqa/hotpot_qa, dgslibisey/MuSiQue, chiayewken/bamboogle) or
as its authors publish it (2WikiMultihopQA's JSON, RUCAIBox/MMATH's per-language JSON)."""

from __future__ import annotations

import json

import pytest

datasets = pytest.importorskip("datasets")

from trajlab.tasks import BENCHMARKS, load_task  # noqa: E402


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_gsm8k_from_a_config_folder_takes_the_number_after_the_hashes(tmp_path):
    write_jsonl(
        tmp_path / "gsm8k" / "main" / "test.jsonl",
        [
            {
                "question": "Natalia sold 48 clips in April and half as many in May. Total?",
                "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72",
            },
            {"question": "A farm has 1,200 hens.", "answer": "Count them.\n#### 1,200"},
        ],
    )
    exs = load_task("gsm8k", data_dir=tmp_path)
    assert [e.answer for e in exs] == ["72", "1200"]
    assert exs[0].id == "gsm8k-0" and exs[0].question.startswith("Natalia")
    assert exs[0].meta["solution"] == "Natalia sold 48/2 = <<48/2=24>>24 clips in May."
    assert len(load_task("gsm8k", n=1, data_dir=tmp_path)) == 1


def test_data_dir_comes_from_the_environment(tmp_path, monkeypatch):
    write_jsonl(tmp_path / "gsm8k" / "test.jsonl", [{"question": "q", "answer": "#### 3"}])
    monkeypatch.setenv("TRAJLAB_DATA", str(tmp_path))
    assert load_task("gsm8k")[0].answer == "3"


def test_math500_from_parquet_keeps_subject_and_level(tmp_path):
    (tmp_path / "math500").mkdir()
    row = {
        "problem": "Convert $(0,3)$ to polar coordinates.",
        "solution": "... $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$",
        "answer": "\\left( 3, \\frac{\\pi}{2} \\right)",
        "subject": "Precalculus",
        "level": 2,
        "unique_id": "test/precalculus/807.json",
    }
    datasets.Dataset.from_list([row]).to_parquet(
        str(tmp_path / "math500" / "test-00000-of-00001.parquet")
    )
    (ex,) = load_task("math500", data_dir=tmp_path)
    assert ex.id == "test/precalculus/807.json"
    assert ex.answer == row["answer"]
    assert ex.meta["subject"] == "Precalculus" and ex.meta["level"] == 2


def test_aime24_reads_its_train_split_and_unpads_answers(tmp_path):
    write_jsonl(
        tmp_path / "aime24" / "train.jsonl",
        [{"id": 60, "problem": "Aya walks 9 km...", "solution": "...", "answer": "033"}],
    )
    (ex,) = load_task("aime24", data_dir=tmp_path)  # split "test" is the evaluation split
    assert (ex.id, ex.answer) == ("aime24-60", "33")
    assert BENCHMARKS["aime24"].split == "train"


def test_hotpotqa_dict_of_lists_gives_gold_titles_once_each(tmp_path):
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "question": datasets.Value("string"),
            "answer": datasets.Value("string"),
            "type": datasets.Value("string"),
            "level": datasets.Value("string"),
            "supporting_facts": datasets.Sequence(
                {"title": datasets.Value("string"), "sent_id": datasets.Value("int32")}
            ),
            "context": datasets.Sequence(
                {
                    "title": datasets.Value("string"),
                    "sentences": datasets.Sequence(datasets.Value("string")),
                }
            ),
        }
    )
    row = {
        "id": "5a8b57f25542995d1e6f1371",
        "question": "Were Scott Derrickson and Ed Wood of the same nationality?",
        "answer": "yes",
        "type": "comparison",
        "level": "hard",
        "supporting_facts": {
            "title": ["Scott Derrickson", "Ed Wood", "Scott Derrickson"],
            "sent_id": [0, 0, 1],
        },
        "context": {"title": ["Ed Wood"], "sentences": [["Edward Davis Wood Jr. ..."]]},
    }
    folder = tmp_path / "hotpotqa" / "distractor"
    folder.mkdir(parents=True)
    ds = datasets.Dataset.from_list([row], features=features)
    assert ds[0]["supporting_facts"]["title"][0] == "Scott Derrickson"  # dict of lists
    ds.to_parquet(str(folder / "validation-00000-of-00001.parquet"))
    (ex,) = load_task("hotpotqa", data_dir=tmp_path)
    assert ex.id == row["id"] and ex.references == ["yes"]
    assert ex.meta == {"supporting_titles": ["Scott Derrickson", "Ed Wood"], "type": "comparison"}
    assert BENCHMARKS["hotpotqa"].reward == "qa_em"
    assert BENCHMARKS["hotpotqa"].protocol == "search_r1"


def test_2wiki_in_its_original_json_layout(tmp_path):
    write_jsonl(
        tmp_path / "2wiki" / "dev.jsonl",  # `datasets` reads "dev" as the validation split
        [
            {
                "_id": "8813f87c0bdd11eba7f7acde48001122",
                "type": "compositional",
                "question": "Who is the mother of the director of film Polish-Russian War?",
                "answer": "Małgorzata Braunek",
                "supporting_facts": [["Polish-Russian War (film)", 1], ["Xawery Żuławski", 2]],
            }
        ],
    )
    (ex,) = load_task("2wiki", data_dir=tmp_path)
    assert ex.id == "8813f87c0bdd11eba7f7acde48001122"
    assert ex.meta["supporting_titles"] == ["Polish-Russian War (film)", "Xawery Żuławski"]


def test_musique_scores_against_answer_and_aliases(tmp_path):
    write_jsonl(
        tmp_path / "musique" / "validation.jsonl",
        [
            {
                "id": "2hop__460946_294723",
                "question": "Who is the spouse of the Green performer?",
                "answer": "Miquette Giraudy",
                "answer_aliases": ["Miquette Giraudy", "M. Giraudy"],
                "answerable": True,
                "paragraphs": [
                    {"idx": 0, "title": "Green", "paragraph_text": "...", "is_supporting": True},
                    {"idx": 1, "title": "Other", "paragraph_text": "...", "is_supporting": False},
                    {
                        "idx": 2,
                        "title": "Steve Hillage",
                        "paragraph_text": ".",
                        "is_supporting": True,
                    },
                ],
            }
        ],
    )
    (ex,) = load_task("musique", data_dir=tmp_path)
    assert ex.references == ["Miquette Giraudy", "M. Giraudy"]
    assert ex.meta["supporting_titles"] == ["Green", "Steve Hillage"]


def test_bamboogle_capitalised_fields(tmp_path):
    write_jsonl(
        tmp_path / "bamboogle" / "test.jsonl",
        [{"Question": "Who was president when Citibank was founded?", "Answer": "James Madison"}],
    )
    (ex,) = load_task("bamboogle", data_dir=tmp_path)
    assert ex.references == ["James Madison"] and ex.id == "bamboogle-0"


def test_mmath_reads_one_language_file_of_the_github_folder(tmp_path):
    folder = tmp_path / "mmath" / "mmath"
    folder.mkdir(parents=True)
    for lang in ("en", "fr"):
        rows = [
            {"question": f"{lang}: 1+1?", "answer": "2", "data_source": "MATH500",
             "data_source_id": 0, "lang": lang, "gid": 7},
        ]  # fmt: skip
        (folder / f"{lang}.json").write_text(json.dumps(rows))
    (ex,) = load_task("mmath", data_dir=tmp_path, lang="fr")
    assert ex.question == "fr: 1+1?" and ex.id == "mmath-fr-7" and ex.meta["lang"] == "fr"
    with pytest.raises(FileNotFoundError, match="RUCAIBox/MMATH"):
        load_task("mmath", data_dir=tmp_path, lang="de")


def test_any_hf_dataset_with_a_field_mapping(tmp_path):
    write_jsonl(
        tmp_path / "org" / "puzzles" / "test.jsonl",
        [{"qid": "a", "problem": "2+2?", "solution": "4", "source": "x"}],
    )
    (ex,) = load_task(
        "hf:org/puzzles", data_dir=tmp_path, question="problem", answer="solution", id="qid"
    )
    assert (ex.id, ex.question, ex.answer, ex.meta) == ("a", "2+2?", "4", {"source": "x"})
    with pytest.raises(ValueError, match="no field 'answer'.*problem, qid, solution"):
        load_task("hf:org/puzzles", data_dir=tmp_path)
    with pytest.raises(ValueError, match="hf:owner/name"):
        load_task("hf:just-a-name", data_dir=tmp_path)


def test_a_missing_copy_offline_says_where_to_put_one(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"openai/gsm8k.*--local-dir <data dir>/gsm8k"):
        load_task("gsm8k", data_dir=tmp_path)


def test_bad_rows_and_wrong_splits_name_the_problem(tmp_path):
    write_jsonl(tmp_path / "gsm8k" / "test.jsonl", [{"question": "q", "answer": "no hashes"}])
    with pytest.raises(ValueError, match=r"gsm8k row 0: .*'#### <number>'"):
        load_task("gsm8k", data_dir=tmp_path)
    with pytest.raises(ValueError, match="no 'train' split"):
        load_task("gsm8k", split="train", data_dir=tmp_path)
    write_jsonl(tmp_path / "bamboogle" / "test.jsonl", [{"question": "lower-case copy"}])
    with pytest.raises(ValueError, match=r"no field 'Answer' \(fields: question\)"):
        load_task("bamboogle", data_dir=tmp_path)
    with pytest.raises(ValueError, match="do not apply to the benchmark"):
        load_task("gsm8k", data_dir=tmp_path, word_prob=0.5)


@pytest.mark.parametrize(
    "argv,protocol,tools",
    [
        (["eval", "--task", "hotpotqa"], "search_r1", ["search"]),
        (["eval", "--task", "gsm8k"], "code", ["python"]),
        (
            ["eval", "--task", "hotpotqa", "--protocol", "tags", "--tools", "search"],
            "tags",
            ["search"],
        ),
        (["eval", "--task", "bamboogle", "agent.tools=[search]"], "code", ["search"]),
        (["eval", "--task", "arith"], "code", ["python"]),
    ],
)
def test_a_benchmark_brings_its_protocol_unless_the_run_names_one(argv, protocol, tools):
    from trajlab.build import benchmark_defaults
    from trajlab.cli import parse
    from trajlab.eval.harness import EvalConfig
    from trajlab.flags import resolve

    _, args = parse(argv)
    cfg = resolve(EvalConfig, args, defaults=benchmark_defaults("task"))
    assert (cfg.agent.protocol, cfg.agent.tools) == (protocol, tools)


def test_a_training_run_on_a_benchmark_gets_its_protocol_and_reward():
    from trajlab.build import benchmark_defaults
    from trajlab.flags import resolve
    from trajlab.train.config import TrainConfig

    defaults = benchmark_defaults("data.task", "reward.weights")
    cfg = resolve(TrainConfig, overrides=["data.task=hotpotqa"], defaults=defaults)
    assert cfg.agent.protocol == "search_r1" and cfg.reward.weights == {"qa_em": 1.0}
    given = resolve(
        TrainConfig,
        overrides=["data.task=hotpotqa", "reward.weights={qa_f1: 1.0}"],
        defaults=defaults,
    )
    assert given.reward.weights == {"qa_f1": 1.0}
