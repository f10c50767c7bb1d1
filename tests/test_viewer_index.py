"""Unit tests for the viewer's trajectory index: summaries, paging, filters, disk cache, growth."""

from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path

import pytest

from trajlab.types import RewardBreakdown, Segment, ToolCall, Trajectory, read_jsonl, write_jsonl
from trajlab.viewer.index import FileIndex, Filters, RunIndex, summarize_line
from trajlab.viewer.synthetic import ToyVocab, TrajSpec, make_trajectory


def wait(idx: RunIndex | FileIndex, timeout: float = 20.0) -> None:
    idx.refresh()
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if (
            idx.status()["complete"] if isinstance(idx, RunIndex) else idx.complete
        ) and not getattr(idx, "_queued", False):
            return
        time.sleep(0.01)
    raise AssertionError("indexing did not finish")


def make_file(path: Path, n: int = 60, seed: int = 0) -> list[Trajectory]:
    rng = random.Random(seed)
    vocab = ToyVocab()
    trajs = []
    for i in range(n):
        spec = TrajSpec(
            f"ex{i % 20:03d}",
            i // 20,
            3 + i,
            5,
            correct=i % 3 == 0,
            use_tool=i % 4 != 0,
            tool_error=i % 5 == 1 and i % 4 != 0,
            stop_reason="length" if i % 7 == 0 else "answer",
            step=1 + i % 3,
        )
        trajs.append(make_trajectory(spec, vocab, rng))
    write_jsonl(path, trajs)
    return trajs


@pytest.fixture()
def run_file(tmp_path: Path) -> tuple[Path, list[Trajectory]]:
    p = tmp_path / "trajectories.jsonl"
    return p, make_file(p)


def test_summary_matches_a_full_parse():
    t = Trajectory("q1", "g", 2)
    t.add(Segment("prompt", [1, 2, 3], "Question: what is [1, 2] + 3?"))
    # model text that looks like a JSON key followed by a number array: must stay text
    t.add(Segment("model", [4, 5], 'print({"a": [1, 2]})', logprobs=[-0.5, -1e-05]))
    t.add(Segment("tool", [6], "oops"))
    t.tool_calls.append(
        ToolCall("python", {"code": 'print({"a": [1, 2]})'}, "oops", ok=False, error="SyntaxError")
    )
    t.stop_reason = "tool_error"
    t.reward = RewardBreakdown(0.0, {"correct": 0.0})
    t.prediction = None
    t.metadata = {"train": {"step": 7, "advantages": [0.0, 0.5, 0.0], "filtered": "void_turn"}}
    row = summarize_line(t.to_json().encode())
    assert row["n_tokens"] == 6 and row["n_response"] == 3
    assert row["step"] == 7 and row["filtered"] == "void_turn"
    assert row["n_calls"] == 1 and row["n_errors"] == 1
    assert row["correct"] == 0 and row["reward"] == 0.0 and row["stop"] == "tool_error"
    assert 'print({"a": [1, 2]})' in row["text"]  # the array inside the string was not collapsed
    assert "[1, 2] + 3?" in row["text"]  # prompt tail is searchable


def test_correctness_precedence():
    base = Trajectory("q", reward=RewardBreakdown(1.0, {"format": 1.0}))
    assert summarize_line(base.to_json().encode())["correct"] == 1  # total > 0
    base.reward = RewardBreakdown(1.0, {"correct": 0.0, "format": 1.0})
    assert summarize_line(base.to_json().encode())["correct"] == 0  # component wins over total
    base.metadata = {"correct": True}
    assert summarize_line(base.to_json().encode())["correct"] == 1  # metadata wins over both
    assert summarize_line(Trajectory("q").to_json().encode())["correct"] == -1
    assert math.isnan(summarize_line(Trajectory("q").to_json().encode())["reward"])


def test_paging_reads_the_right_lines(run_file):
    path, trajs = run_file
    idx = RunIndex([path], cache=False)
    wait(idx)
    page = idx.page(Filters(), offset=20, limit=15)
    assert page["total"] == 60 and len(page["rows"]) == 15
    for k, row in enumerate(page["rows"]):
        assert row["ref"] == f"0:{20 + k}"
        assert Trajectory.from_dict(idx.read(row["ref"])) == trajs[20 + k]
    last = idx.page(Filters(), offset=55, limit=50)
    assert [r["ref"] for r in last["rows"]] == [f"0:{i}" for i in range(55, 60)]


def brute(trajs: list[Trajectory], pred) -> list[int]:
    return [i for i, t in enumerate(trajs) if pred(t)]


def test_filters_agree_with_brute_force(run_file):
    path, trajs = run_file
    idx = RunIndex([path], cache=False)
    wait(idx)

    def refs(**kw):
        return [int(r["ref"].split(":")[1]) for r in idx.page(Filters(**kw), 0, 500)["rows"]]

    assert refs(step=2) == brute(trajs, lambda t: t.metadata["train"]["step"] == 2)
    assert refs(correct=True) == brute(trajs, lambda t: t.reward.components["correct"] > 0)
    assert refs(correct=False) == brute(trajs, lambda t: t.reward.components["correct"] == 0)
    assert refs(stop="length") == brute(trajs, lambda t: t.stop_reason == "length")
    assert refs(tool_errors=True) == brute(trajs, lambda t: any(not c.ok for c in t.tool_calls))
    assert refs(tool_errors=False) == brute(trajs, lambda t: all(c.ok for c in t.tool_calls))
    assert refs(has_tools=False) == brute(trajs, lambda t: not t.tool_calls)
    assert refs(reward_min=0.5, reward_max=2) == brute(trajs, lambda t: 0.5 <= t.reward.total <= 2)
    assert refs(example="ex01") == brute(trajs, lambda t: "ex01" in t.example_id)
    assert refs(example_id="ex005", sample=1) == brute(
        trajs, lambda t: t.example_id == "ex005" and t.sample_index == 1
    )
    assert refs(q="NAMEERROR") == brute(
        trajs, lambda t: any("NameError" in c.result for c in t.tool_calls)
    )
    assert refs(q="what is 10 *") == brute(trajs, lambda t: "What is 10 *" in t.segments[0].text)
    assert refs(step=1, correct=True, tool_errors=False) == brute(
        trajs,
        lambda t: (
            t.metadata["train"]["step"] == 1
            and t.reward.components["correct"] > 0
            and all(c.ok for c in t.tool_calls)
        ),
    )
    by_reward = refs(sort="-reward")
    assert [trajs[i].reward.total for i in by_reward] == sorted(
        (t.reward.total for t in trajs), reverse=True
    )


def test_filters_from_query_validate():
    f = Filters.from_query(
        {"step": "3", "correct": "true", "reward_min": "0.5", "q": "x", "sort": "-tokens"}
    )
    assert (f.step, f.correct, f.reward_min, f.q, f.sort) == (3, True, 0.5, "x", "-tokens")
    with pytest.raises(ValueError, match="true or false"):
        Filters.from_query({"correct": "maybe"})
    with pytest.raises(ValueError, match="sort must be"):
        Filters.from_query({"sort": "length"})
    with pytest.raises(ValueError):
        Filters.from_query({"step": "three"})


def test_disk_cache_is_used_and_invalidated(run_file):
    path, trajs = run_file
    fi = FileIndex(path, cache=True, cache_min_bytes=0)
    wait(fi)
    assert fi.cache_path.exists() and fi.cache_path.name == ".trajectories.jsonl.viewer-index.npz"
    n, num, strs = fi.columns()

    again = FileIndex(path, cache=True, cache_min_bytes=0)
    assert again.from_cache and again.complete  # nothing to index
    n2, num2, strs2 = again.columns()
    assert n2 == n == 60 and strs2 == strs
    assert all((num[k] == num2[k]).all() for k in num if k != "reward")

    # Appended lines: the cached prefix is kept, only the new lines are indexed.
    more = make_file(path.with_name("more.jsonl"), n=5, seed=1)
    write_jsonl(path, more, append=True)
    grown = FileIndex(path, cache=True, cache_min_bytes=0)
    assert grown.from_cache and grown.n_rows == 60
    wait(grown)
    assert grown.n_rows == 65
    assert Trajectory.from_dict(grown.read(64)) == more[-1]

    # Rewritten (shorter) file: the cache is stale and ignored.
    write_jsonl(path, trajs[:10])
    rewritten = FileIndex(path, cache=True, cache_min_bytes=0)
    assert not rewritten.from_cache
    wait(rewritten)
    assert rewritten.n_rows == 10


def test_rewrite_with_same_size_is_detected(run_file):
    path, _ = run_file
    fi = FileIndex(path, cache=False)
    wait(fi)
    data = path.read_bytes().replace(b'"ex000"', b'"ex00X"')
    st = os.stat(path)
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    wait(fi)
    assert "ex00X" in fi.columns()[2]["example_id"]


def test_torn_last_line_then_completed(tmp_path):
    path = tmp_path / "t.jsonl"
    trajs = make_file(path, n=4)
    line = trajs[0].to_json()
    with open(path, "a", encoding="utf-8") as f:
        f.write(line[: len(line) // 2])  # a writer in the middle of a line
    fi = FileIndex(path, cache=False)
    wait(fi)
    assert fi.n_rows == 4 and fi.bad_lines == 0
    with open(path, "a", encoding="utf-8") as f:
        f.write(line[len(line) // 2 :] + "\n")
    wait(fi)
    assert fi.n_rows == 5 and Trajectory.from_dict(fi.read(4)) == trajs[0]


def test_bad_line_is_counted_not_fatal(tmp_path):
    path = tmp_path / "t.jsonl"
    trajs = make_file(path, n=3)
    with open(path, "a", encoding="utf-8") as f:
        f.write(
            "{not json}\n" + json.dumps({"no": "example id"}) + "\n" + trajs[1].to_json() + "\n"
        )
    idx = RunIndex([path], cache=False)
    wait(idx)
    st = idx.status()
    assert st["indexed_rows"] == 4 and st["bad_lines"] == 2


def test_run_index_spans_step_files(tmp_path):
    d = tmp_path / "trajectories"
    d.mkdir()
    a = make_file(d / "step_000001.jsonl", n=5)
    b = make_file(d / "step_000002.jsonl", n=7, seed=3)
    idx = RunIndex(sorted(d.glob("step_*.jsonl")), cache=False)
    wait(idx)
    page = idx.page(Filters(), 0, 100)
    assert page["total"] == 12
    assert page["rows"][5]["ref"] == "1:0"
    assert Trajectory.from_dict(idx.read("1:6")) == b[6]
    assert Trajectory.from_dict(idx.read("0:4")) == a[4]
    with pytest.raises(KeyError, match="FILE:LINE"):
        idx.read("nonsense")
    assert idx.facets()["steps"] == [1, 2, 3]


def test_read_jsonl_and_index_agree_on_counts(run_file):
    path, _ = run_file
    idx = RunIndex([path], cache=False)
    wait(idx)
    t = idx.table()
    ref = read_jsonl(path)
    assert list(t["n_tokens"]) == [len(x.token_ids) for x in ref]
    assert list(t["n_response"]) == [len(x.response_token_ids) for x in ref]
    assert list(t["n_calls"]) == [len(x.tool_calls) for x in ref]
