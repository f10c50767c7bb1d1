"""Named benchmarks: published datasets read with the `datasets` library, local copy first.

How it is used:

    examples = load_task("gsm8k", n=200)                         # the test split, 200 rows
    examples = load_task("hotpotqa", data_dir="data")            # data/hotpotqa/... first
    examples = load_task("hf:openai/gsm8k", config="main", split="test",
                         question="question", answer="answer")   # any dataset, by field names

    trajlab eval --task math500 --data-dir ~/datasets ...        # or TRAJLAB_DATA=~/datasets

Where the rows come from, in order:
  1. a local directory `<data dir>/<name>` (data dir: `--data-dir`, else `$TRAJLAB_DATA`),
     in the layout a Hub download has (`huggingface-cli download --repo-type dataset
     openai/gsm8k --local-dir <data dir>/gsm8k`): data files named by split (test.jsonl,
     validation-00000-of-00001.parquet, ...), in a `<config>/` folder when the dataset has
     configs. `datasets.load_dataset` reads it, so JSON Lines, JSON, Parquet and CSV work.
  2. the Hub, through `datasets.load_dataset(hub_id, config, split)`, which also serves its own
     cache (~/.cache/huggingface) offline. Nothing is downloaded when `HF_HUB_OFFLINE=1`.
Each row becomes an Example through the benchmark's converter, which knows the published
field names (GSM8K's `#### 72`, HotpotQA's supporting_facts, MuSiQue's aliases, ...). A
benchmark also names the reward that scores it and the protocol its papers use.

What it does not do: build a retrieval corpus for the QA benchmarks (see docs/retrieval.md),
or shuffle (the first n rows of the split are taken, as a published evaluation does).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trajlab.types import Example

DATA_ENV = "TRAJLAB_DATA"


@dataclass(frozen=True)
class Benchmark:
    name: str
    hub_id: str  # "" where the data is published outside the Hub (a local copy is then needed)
    config: str | None  # the dataset config (subset) evaluated
    split: str  # the split evaluated
    convert: Callable[[dict[str, Any], int], Example]  # a published row (and its index) -> Example
    reward: str  # the reward that scores it (trajlab.rewards.REWARDS)
    protocol: str  # the tool protocol its papers use
    about: str  # one line: what it is, and where it was published


class BenchmarkRowError(ValueError):
    pass


def _text(row: dict[str, Any], key: str, name: str) -> str:
    if key not in row:
        raise BenchmarkRowError(
            f"{name} row has no field {key!r} (fields: {', '.join(sorted(row))}); is this a copy "
            "of the published dataset?"
        )
    value = row[key]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise BenchmarkRowError(f"{name} field {key!r} must be text or a number, got {value!r}")
    text = str(value).strip()
    if not text:
        raise BenchmarkRowError(f"{name} field {key!r} is empty")
    return text


def _gsm8k(row: dict[str, Any], i: int) -> Example:
    solution = _text(row, "answer", "gsm8k")
    if "####" not in solution:
        raise BenchmarkRowError(f"gsm8k answer has no '#### <number>' line: {solution[-80:]!r}")
    work, _, final = solution.rpartition("####")
    return Example(
        id=f"gsm8k-{i}",
        question=_text(row, "question", "gsm8k"),
        answer=final.strip().replace(",", ""),
        meta={"solution": work.strip()},
    )


def _math500(row: dict[str, Any], i: int) -> Example:
    meta = {k: row[k] for k in ("subject", "level", "solution") if k in row}
    return Example(
        id=str(row.get("unique_id") or f"math500-{i}"),
        question=_text(row, "problem", "math500"),
        answer=_text(row, "answer", "math500"),
        meta=meta,
    )


def _aime(name: str) -> Callable[[dict[str, Any], int], Example]:
    def convert(row: dict[str, Any], i: int) -> Example:
        answer = _text(row, "answer", name)
        # published as "033" in some copies: AIME answers are integers 0-999
        answer = str(int(answer)) if answer.isdigit() else answer
        return Example(
            id=f"{name}-{row.get('id', i)}", question=_text(row, "problem", name), answer=answer
        )

    return convert


def _titles(supporting_facts: Any) -> list[str]:
    """Gold titles, in order, once each, from either published layout: HotpotQA through the
    `datasets` library ({"title": [...], "sent_id": [...]}) or the original JSON ([[title,
    sent_id], ...])."""
    if isinstance(supporting_facts, dict):
        titles = supporting_facts.get("title") or []
    else:
        titles = [pair[0] for pair in supporting_facts or []]
    return list(dict.fromkeys(str(t) for t in titles))


def _multihop(name: str) -> Callable[[dict[str, Any], int], Example]:
    def convert(row: dict[str, Any], i: int) -> Example:
        answer = _text(row, "answer", name)
        meta = {"supporting_titles": _titles(row.get("supporting_facts"))}
        if "type" in row:
            meta["type"] = row["type"]
        return Example(
            id=str(row.get("id") or row.get("_id") or f"{name}-{i}"),
            question=_text(row, "question", name),
            answer=answer,
            answers=[answer],
            meta=meta,
        )

    return convert


def _musique(row: dict[str, Any], i: int) -> Example:
    answer = _text(row, "answer", "musique")
    aliases = [str(a).strip() for a in row.get("answer_aliases") or [] if str(a).strip()]
    gold = [p["title"] for p in row.get("paragraphs") or [] if p.get("is_supporting")]
    return Example(
        id=str(row.get("id") or f"musique-{i}"),
        question=_text(row, "question", "musique"),
        answer=answer,
        answers=list(dict.fromkeys([answer, *aliases])),
        meta={"supporting_titles": list(dict.fromkeys(gold))},
    )


def _bamboogle(row: dict[str, Any], i: int) -> Example:
    answer = _text(row, "Answer", "bamboogle")
    return Example(
        id=f"bamboogle-{i}",
        question=_text(row, "Question", "bamboogle"),
        answer=answer,
        answers=[answer],
    )


def _mmath(row: dict[str, Any], i: int) -> Example:
    meta = {k: row[k] for k in ("lang", "data_source", "data_source_id") if k in row}
    return Example(
        id=f"mmath-{row.get('lang', 'x')}-{row.get('gid', i)}",
        question=_text(row, "question", "mmath"),
        answer=_text(row, "answer", "mmath"),
        meta=meta,
    )


_QA, _MATH = "qa_em", "math_correct"
BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark("gsm8k", "openai/gsm8k", "main", "test", _gsm8k, _MATH, "code",
                  "grade-school word problems, 1,319 test questions (Cobbe et al. 2021)"),
        Benchmark("math500", "HuggingFaceH4/MATH-500", None, "test", _math500, _MATH, "code",
                  "500 competition problems of MATH (Lightman et al. 2023's split)"),
        Benchmark("aime24", "HuggingFaceH4/aime_2024", None, "train", _aime("aime24"), _MATH,
                  "code", "the 30 AIME 2024 problems"),
        Benchmark("aime25", "math-ai/aime25", None, "test", _aime("aime25"), _MATH, "code",
                  "the 30 AIME 2025 problems"),
        Benchmark("hotpotqa", "hotpotqa/hotpot_qa", "distractor", "validation",
                  _multihop("hotpotqa"), _QA, "search_r1",
                  "two-hop Wikipedia questions, 7,405 dev questions (Yang et al. 2018)"),
        Benchmark("2wiki", "framolfese/2WikiMultihopQA", None, "validation",
                  _multihop("2wiki"), _QA, "search_r1",
                  "multi-hop questions over Wikipedia and Wikidata (Ho et al. 2020)"),
        Benchmark("musique", "dgslibisey/MuSiQue", None, "validation", _musique, _QA,
                  "search_r1", "2-4 hop composed questions, MuSiQue-Ans dev (Trivedi et al. 2022)"),
        Benchmark("bamboogle", "chiayewken/bamboogle", None, "test", _bamboogle, _QA,
                  "search_r1", "125 two-hop questions search engines get wrong (Press et al. 2023)"),
        Benchmark("mmath", "", None, "test", _mmath, _MATH, "code",
                  "374 competition problems in 10 languages (RUCAIBox/MMATH on GitHub); "
                  "local copy of its mmath/ folder, option lang (default en)"),
    )
}  # fmt: skip


def data_dirs(data_dir: str | Path | None = None) -> list[Path]:
    """Where local copies are looked for: the given directory, then $TRAJLAB_DATA."""
    dirs = [Path(d).expanduser() for d in (data_dir, os.environ.get(DATA_ENV)) if d]
    return list(dict.fromkeys(dirs))


def _local_copy(bench: Benchmark, data_dir: str | Path | None) -> Path | None:
    for root in data_dirs(data_dir):
        here = root / bench.name
        if bench.config and (here / bench.config).is_dir():
            return here / bench.config
        if here.is_dir():
            return here
    return None


def _load_rows(bench: Benchmark, split: str, data_dir: str | Path | None, lang: str) -> Any:
    import datasets

    local = _local_copy(bench, data_dir)
    if bench.name == "mmath":
        files = [local / "mmath" / f"{lang}.json", local / f"{lang}.json"] if local else []
        found = [f for f in files if f.is_file()]
        if not found:
            raise FileNotFoundError(
                f"mmath has no local copy of {lang}.json under {[str(d) for d in data_dirs(data_dir)]}"
                " (set --data-dir or $TRAJLAB_DATA): clone github.com/RUCAIBox/MMATH and put "
                "its mmath/ folder at <data dir>/mmath/"
            )
        return datasets.load_dataset("json", data_files={split: str(found[0])}, split=split)
    if local is not None:
        try:
            return datasets.load_dataset(str(local), split=split)
        except ValueError as err:  # the files do not name this split
            raise ValueError(
                f"{bench.name}: the local copy {local} has no {split!r} split ({err}); name its "
                f"data files by split, e.g. {local}/{split}.jsonl, or pass another split"
            ) from None
    try:
        return datasets.load_dataset(bench.hub_id, bench.config, split=split)
    except Exception as err:  # offline, unknown id, no access: say where a local copy goes
        where = data_dirs(data_dir)
        raise FileNotFoundError(
            f"{bench.name}: no local copy in {[str(d) for d in where] or 'no data directory'} "
            f"and the Hub dataset {bench.hub_id!r} could not be loaded ({type(err).__name__}: "
            f"{err}). Put a copy at <data dir>/{bench.name} (e.g. huggingface-cli download "
            f"--repo-type dataset {bench.hub_id} --local-dir <data dir>/{bench.name}) and pass "
            f"--data-dir <data dir> or set ${DATA_ENV}"
        ) from None


def _convert(
    rows: Any, convert: Callable[[dict[str, Any], int], Example], name: str, n: int | None
) -> list[Example]:
    if n is not None:
        rows = rows.select(range(min(n, len(rows))))
    examples = []
    for i, row in enumerate(rows):
        try:
            examples.append(convert(row, i))
        except BenchmarkRowError as err:
            raise ValueError(f"{name} row {i}: {err}") from None
    return examples


def load_benchmark(
    name: str,
    split: str | None = None,
    n: int | None = None,
    data_dir: str | Path | None = None,
    lang: str = "en",
) -> list[Example]:
    """The first n rows (all if None) of a named benchmark's evaluation split (or `split`)."""
    bench = BENCHMARKS[name]
    rows = _load_rows(bench, split or bench.split, data_dir, lang)
    return _convert(rows, bench.convert, name, n)


_HF = re.compile(r"^hf:(?P<id>[\w.-]+/[\w.-]+)$")


def load_hf_task(
    spec: str,
    split: str = "test",
    n: int | None = None,
    data_dir: str | Path | None = None,
    config: str | None = None,
    question: str = "question",
    answer: str = "answer",
    answers: str = "",
    id: str = "",
) -> list[Example]:
    """Any dataset `hf:owner/name` (a local copy at <data dir>/owner/name first), mapping its
    fields by name: `question`, and `answer` (one reference) or `answers` (a list of them);
    `id` names an id field (default: the row index). Other fields are kept in meta."""
    match = _HF.match(spec)
    if not match:
        raise ValueError(f"a Hugging Face task is written hf:owner/name, got {spec!r}")
    hub_id = match["id"]
    used = {question, answer, answers, id}

    def convert(row: dict[str, Any], i: int) -> Example:
        if answers:
            refs = [str(a).strip() for a in row.get(answers) or [] if str(a).strip()]
            if not refs:
                raise BenchmarkRowError(f"field {answers!r} holds no reference answers")
        else:
            refs = [_text(row, answer, hub_id)]
        return Example(
            id=str(row[id]) if id else f"{hub_id}-{i}",
            question=_text(row, question, hub_id),
            answer=refs[0],
            answers=refs if answers else [],
            meta={k: v for k, v in row.items() if k not in used},
        )

    bench = Benchmark(hub_id, hub_id, config, split, convert, _MATH, "code", hub_id)
    return _convert(_load_rows(bench, split, data_dir, "en"), convert, spec, n)
