"""Test-time search: answer clusters, selection rules, verifiers and `trajlab test-time`,
checked against outcomes worked out by hand."""

from __future__ import annotations

import json
import math
from collections import defaultdict

import pytest
import torch

from trajlab.agent.loop import AgentConfig
from trajlab.config import ConfigError
from trajlab.engines.fake import FakeEngine
from trajlab.models import load_model, load_tokenizer, next_token_logprobs
from trajlab.test_time.answers import answer_equality, cluster_answers
from trajlab.test_time.run import TestTimeConfig as TTConfig
from trajlab.test_time.run import run_test_time
from trajlab.test_time.select import best_of_n, choose, majority, weighted_majority
from trajlab.test_time.verifiers import (
    ConfidenceVerifier,
    JudgeVerifier,
    RewardVerifier,
    make_verifier,
)
from trajlab.testing import make_tiny_model
from trajlab.types import Example, Segment, Trajectory, read_jsonl

# -- answers and rules ----------------------------------------------------------------


def test_math_answers_cluster_by_value_and_unanswered_samples_do_not_vote():
    same = answer_equality("math")
    assert cluster_answers(["18", "18.0", "$18", "20", None, "20", " "], same) == [
        0, 0, 0, 1, None, 1, None,
    ]  # fmt: skip
    assert cluster_answers(["\\frac{1}{2}", "0.5", "1/2"], same) == [0, 0, 0]


def test_qa_answers_cluster_by_normalised_text():
    same = answer_equality("qa")
    assert cluster_answers(["The Eiffel Tower", "eiffel tower!", "Paris"], same) == [0, 0, 1]
    with pytest.raises(ValueError, match="answer kind"):
        answer_equality("code")


def test_majority_takes_the_largest_cluster_and_the_first_seen_on_ties():
    assert majority([1, 0, 0]) == 1  # cluster 0 has two votes; its first member is sample 1
    assert majority([0, 1, 1, None, 0]) == 0  # 2 against 2: the cluster seen first
    assert majority([None, None]) is None
    assert majority([]) is None


def test_weighted_majority_sums_scores_and_returns_the_best_member():
    assert weighted_majority([0, 1, 1], [0.9, 0.5, 0.3]) == 0  # 0.9 > 0.5 + 0.3
    assert weighted_majority([0, 1, 1], [0.7, 0.3, 0.5]) == 2  # 0.8 > 0.7: best member is 2
    assert weighted_majority([0, 1, 1], [1.0, 1.0, 1.0]) == majority([0, 1, 1])
    with pytest.raises(ValueError, match="2 clusters but 1 scores"):
        weighted_majority([0, 1], [1.0])


def test_best_of_n_takes_the_highest_score_first_on_ties():
    assert best_of_n([0.2, 0.9, 0.9]) == 1
    assert best_of_n([]) is None
    assert choose("best_of_n", [None, 0], [0.8, 0.1]) == 0  # unanswered samples may win
    with pytest.raises(ValueError, match="method must be one of"):
        choose("beam", [0], [1.0])


# -- verifiers ------------------------------------------------------------------------


def _traj(text: str, logprobs: list[float], ex: str = "q", i: int = 0) -> Trajectory:
    t = Trajectory(example_id=ex, sample_index=i)
    t.add(Segment("prompt", [1, 2], "Q"))
    t.add(Segment("model", list(range(len(logprobs))), text, logprobs=logprobs))
    return t


def test_confidence_is_the_geometric_mean_token_probability():
    t = _traj("x", [math.log(0.5), math.log(0.125)])
    (v,) = ConfidenceVerifier().score([(Example("q", "Q", "1"), t)])
    assert v.score == pytest.approx(0.25)  # exp((ln 0.5 + ln 0.125) / 2) = sqrt(1/16)
    empty = Trajectory("q", segments=[Segment("prompt", [1], "Q")])
    assert ConfidenceVerifier().score([(Example("q", "Q", "1"), empty)])[0].score == 0.0


def test_reward_verifier_scores_with_the_named_reward():
    ex = Example("q", "What is 2+2?", "4")
    boxed, bare = _traj("so \\boxed{5}", [-1.0]), _traj("it is 4", [-1.0])
    v = RewardVerifier("format_boxed")
    assert [x.score for x in v.score([(ex, boxed), (ex, bare)])] == [1.0, 0.0]
    assert [x.score for x in RewardVerifier("math_correct").score([(ex, boxed), (ex, bare)])] == [
        0.0,
        1.0,
    ]
    with pytest.raises(ConfigError, match="verifier"):
        make_verifier("reward:no_such_reward")
    with pytest.raises(ConfigError, match="unknown verifier 'prm'"):
        make_verifier("prm")
    assert make_verifier("none") is None


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = make_tiny_model(tmp_path_factory.mktemp("tiny-tt") / "m")
    return load_model(path), load_tokenizer(path)


def test_next_token_logprobs_of_left_padded_rows_match_each_row_alone(tiny):
    model, _ = tiny
    rows = [[5, 9, 17, 3], [44, 2]]
    ids = torch.tensor([rows[0], [0, 0, *rows[1]]])
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    got = next_token_logprobs(model, ids, mask)
    for r, row in enumerate(rows):
        with torch.no_grad():
            ref = model(torch.tensor([row])).logits[0, -1].float().log_softmax(-1)
        torch.testing.assert_close(got[r], ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="left-padded"):
        next_token_logprobs(model, ids, torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]))


def _word_logprob(model, prompt: list[int], spelling: list[int]) -> float:
    """log P(spelling | prompt) by a plain forward pass: the reference for the judge."""
    ids = torch.tensor([prompt + spelling])
    with torch.no_grad():
        lp = model(ids).logits[0].float().log_softmax(-1)
    return sum(float(lp[len(prompt) - 1 + j, tok]) for j, tok in enumerate(spelling))


@pytest.mark.parametrize("words", [(("y",), ("n",)), (("yes", " Yes"), ("no",))])
def test_judge_scores_p_yes_and_stores_a_token_exact_grading(tiny, words):
    # ("y", "n") are one token each in the tiny vocabulary; "yes", " Yes", "no" are 2-3.
    model, tok = tiny
    judge = JudgeVerifier(model, tok, model_spec="tiny", batch_size=2, yes_words=words[0],
                          no_words=words[1])  # fmt: skip
    ex = Example("q", "What is 6 times 7?", "42")
    items = [(ex, _traj(f"The answer is \\boxed{{{a}}}.", [-1.0], i=i)) for i, a in
             enumerate((42, 41, 7))]  # fmt: skip
    verdicts = judge.score(items)
    enc = lambda w: tok.encode(w, add_special_tokens=False)  # noqa: E731
    for (e, t), v in zip(items, verdicts):
        prompt = judge.prompt_ids(e, t)
        p = {w: math.exp(_word_logprob(model, prompt, enc(w))) for w in (*words[0], *words[1])}
        p_yes = sum(p[w] for w in words[0]) / sum(p.values())
        assert v.score == pytest.approx(p_yes, abs=1e-4)
        g = v.trajectory
        assert g.token_ids[: len(prompt)] == prompt and g.prompt_length == len(prompt)
        likely = max(words[0] if p_yes >= 0.5 else words[1], key=p.get)
        said = g.segments[1]
        assert said.token_ids == enc(likely) and g.prediction == ("yes" if p_yes >= 0.5 else "no")
        assert sum(said.logprobs) == pytest.approx(math.log(p[likely]), abs=1e-4)
        assert g.metadata["judge"]["of_sample"] == t.sample_index
        assert v.cost_tokens == len(prompt) + len(said)
        assert "What is 6 times 7?" in tok.decode(prompt)


# -- the run --------------------------------------------------------------------------

# Per question, the answer of each sample (None: no answer). R marks the right one.
SCRIPT = {
    "q0": ["5", "42", "42", "6"],  # right answer 42
    "q1": ["10", "11", "11", "11"],  # right answer 10
    "q2": ["3", "3", "3", "3"],  # right answer 3
    "q3": [None, "8", "9", "9"],  # right answer 9
}
ANSWERS = {"q0": "42", "q1": "10", "q2": "3", "q3": "9"}


def _scripted_engine(tok):
    calls: dict[str, int] = defaultdict(int)

    def respond(prompt: str) -> str:
        q = prompt.rsplit("Question ", 1)[1].split(":")[0]
        i = calls[q]
        calls[q] += 1
        a = SCRIPT[q][i % 4]
        return "I am not sure." if a is None else f"The answer is \\boxed{{{a}}}."

    return FakeEngine(tok, respond)


def _task(tmp_path):
    path = tmp_path / "task.jsonl"
    path.write_text(
        "".join(
            json.dumps({"id": q, "question": f"Question {q}: what is it?", "answer": a}) + "\n"
            for q, a in ANSWERS.items()
        )
    )
    return str(path)


def _config(tmp_path, **kw):
    base = dict(
        model="fake",
        task=_task(tmp_path),
        budgets=[1, 2, 4],
        batch_size=4,
        progress=False,
        temperature=1.0,
        prompt="question",
        agent=AgentConfig(protocol="code", tools=[]),
        out=str(tmp_path / "tt"),
    )
    return TTConfig(**{**base, **kw})


def test_vote_curve_matches_the_hand_count(tiny, tmp_path):
    _, tok = tiny
    m = run_test_time(_config(tmp_path), engine=_scripted_engine(tok), argv=["trajlab"])
    curve = {r["k"]: r for r in m["curve"]}
    # k=1: q1, q2 right. k=2: q0 ties 5/42 -> 5 (first seen), q1 ties 10/11 -> 10, q3 has
    # one vote (8). k=4: 42 wins q0 (2 of 4), 11 wins q1 (3 of 4), 9 wins q3.
    assert [curve[k]["accuracy"] for k in (1, 2, 4)] == [0.5, 0.5, 0.75]
    assert [curve[k]["sample_accuracy"] for k in (1, 2, 4)] == [0.5, 0.5, 0.5625]
    assert [curve[k]["pass_at_k"] for k in (1, 2, 4)] == [0.5, 0.75, 1.0]
    assert curve[1]["answered_rate"] == 0.75  # q3's first sample has no answer
    assert curve[4]["gain_over_sample"] == pytest.approx(0.1875)
    lo, hi = curve[4]["accuracy_ci"]
    assert 0.0 <= lo <= 0.75 <= hi <= 1.0
    out = tmp_path / "tt"
    for name in ("run.json", "config.json", "metrics.json", "summary.md", "curve.png",
                 "trajectories.jsonl", "chosen.jsonl", "samples/trajectories.jsonl"):  # fmt: skip
        assert (out / name).exists(), name
    trajs = read_jsonl(out / "trajectories.jsonl")
    assert len(trajs) == 16
    chosen_at = {
        (t.example_id, t.sample_index): t.metadata["test_time"]["chosen_at"] for t in trajs
    }
    assert chosen_at[("q0", 0)] == [1, 2] and chosen_at[("q0", 1)] == [4]
    assert chosen_at[("q3", 1)] == [2] and chosen_at[("q3", 0)] == []
    chosen = read_jsonl(out / "chosen.jsonl")
    assert [(t.example_id, t.sample_index, t.prediction) for t in chosen] == [
        ("q0", 1, "42"), ("q1", 1, "11"), ("q2", 0, "3"), ("q3", 2, "9"),
    ]  # fmt: skip
    assert json.loads((out / "run.json").read_text())["kind"] == "test_time"
    assert "| 4 |" in (out / "summary.md").read_text()


def test_samples_of_an_eval_run_are_reused_and_an_answer_reading_reward_is_the_oracle(
    tiny, tmp_path
):
    _, tok = tiny
    run_test_time(_config(tmp_path), engine=_scripted_engine(tok))
    samples = tmp_path / "tt" / "samples"
    cfg = TTConfig(samples=str(samples), method="best_of_n", verifier="reward:math_correct",
                         budgets=[1, 2, 4], out=str(tmp_path / "bon"))  # fmt: skip
    m = run_test_time(cfg)  # no engine: nothing is sampled
    for r in m["curve"]:
        assert r["accuracy"] == r["pass_at_k"]  # best-of-N under the gold reward is pass@k
    assert m["samples_run"] == str(samples) and not (tmp_path / "bon" / "samples").exists()
    with pytest.raises(ConfigError, match="fewer than the budget 8"):
        run_test_time(TTConfig(samples=str(samples), budgets=[8], out=str(tmp_path / "x")))
    with pytest.raises(ConfigError, match="not an evaluation run directory"):
        run_test_time(TTConfig(samples=str(tmp_path), out=str(tmp_path / "y")))


def test_judge_gradings_are_stored_and_reused(tiny, tmp_path, monkeypatch):
    _, tok = tiny
    judge_dir = make_tiny_model(tmp_path / "judge", seed=1)
    cfg = _config(tmp_path, method="best_of_n", verifier="judge", judge_model=str(judge_dir))
    m = run_test_time(cfg, engine=_scripted_engine(tok))
    gradings = read_jsonl(tmp_path / "tt" / "judge.jsonl")
    assert len(gradings) == 16 and {g.metadata["judge"]["model"] for g in gradings} == {
        str(judge_dir)
    }
    scores = {(g.example_id, g.metadata["judge"]["of_sample"]): g.metadata["judge"]["p_yes"]
              for g in gradings}  # fmt: skip
    for t in read_jsonl(tmp_path / "tt" / "trajectories.jsonl"):
        assert t.metadata["test_time"]["score"] == scores[(t.example_id, t.sample_index)]
    assert m["curve"][-1]["verifier_tokens_per_question"] > 0
    # Another selection rule over the same samples reads the stored gradings: no judge runs.
    from trajlab.test_time.verifiers import JudgeVerifier as JV

    monkeypatch.setattr(JV, "score", lambda *a: pytest.fail("the judge ran again"))
    again = run_test_time(
        _config(tmp_path, method="weighted_vote", verifier="judge", judge_model=str(judge_dir)),
        engine=_scripted_engine(tok),
    )
    assert again["method"] == "weighted_vote"
    assert len(read_jsonl(tmp_path / "tt" / "judge.jsonl")) == 16


def test_config_errors_name_the_fix():
    with pytest.raises(ValueError, match="cannot serve the budget 8"):
        TTConfig(n=4, budgets=[2, 8])
    with pytest.raises(ValueError, match="needs a verifier"):
        TTConfig(method="best_of_n", verifier="none")
    with pytest.raises(ValueError, match="budgets must be positive"):
        TTConfig(budgets=[0, 2])
    c = TTConfig(budgets=[4, 1, 2, 2])
    assert c.budgets == [1, 2, 4] and c.n == 4 and c.temperature == 1.0
    assert TTConfig(method="weighted_vote").verifier == "confidence"


def test_cli_on_a_tiny_model_writes_the_curve_and_reuses_its_samples(tmp_path):
    import subprocess
    import sys

    model = make_tiny_model(tmp_path / "tiny")
    out = tmp_path / "run"

    def trajlab(*args):
        return subprocess.run(
            [sys.executable, "-m", "trajlab.cli", "test-time", *args],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip

    r = trajlab("--model", str(model), "--task", "arith", "--limit", "3", "--budgets", "1,2",
                "--tools", "none", "--max-new-tokens-per-turn", "12", "--max-turns", "1",
                "--out", str(out), "--no-progress")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "k=2" in r.stdout and f"view {out}" in r.stdout
    m = json.loads((out / "metrics.json").read_text())
    assert [row["k"] for row in m["curve"]] == [1, 2] and m["num_examples"] == 3
    assert len(read_jsonl(out / "samples" / "trajectories.jsonl")) == 6
    r = trajlab("--samples", str(out / "samples"), "--method", "best_of_n", "--verifier",
                "judge", "--budgets", "2", "--out", str(tmp_path / "bon"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert len(read_jsonl(tmp_path / "bon" / "judge.jsonl")) == 6
    r = trajlab("--samples", str(out / "samples"), "--budgets", "4", "--out", str(tmp_path / "x"))
    assert r.returncode != 0 and "fewer than the budget 4" in r.stderr
    r = trajlab("--budgets", "1,x", "--out", str(tmp_path / "y"))
    assert r.returncode != 0 and "--budgets: 'x' is not an integer" in r.stderr


# -- the outcome reward model ---------------------------------------------------------


def test_last_token_states_of_right_padded_rows_match_each_row_alone(tiny):
    from trajlab.test_time.orm import last_token_states

    model, _ = tiny
    seqs = [[5, 9, 17, 3, 8], [44, 2], [7, 7, 7]]
    got = last_token_states(model, seqs, batch_size=2)
    for row, seq in zip(got, seqs):
        with torch.no_grad():
            ref = model.model(torch.tensor([seq])).last_hidden_state[0, -1]
        torch.testing.assert_close(torch.from_numpy(row), ref.float(), atol=1e-5, rtol=1e-5)


def test_the_probe_learns_a_separable_label_and_refuses_one_class():
    import numpy as np

    from trajlab.test_time.orm import train_orm

    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 6)).astype(np.float32)
    y = (x[:, 2] > 0).astype(int)  # the label is the sign of one feature
    groups = [f"q{i // 4}" for i in range(80)]
    probe, auc = train_orm(x, y, groups, folds=4)
    assert auc > 0.95
    z = ((x - probe["mean"]) / probe["scale"]) @ np.asarray(probe["coef"]) + probe["intercept"]
    assert ((z > 0) == (y == 1)).mean() > 0.9
    assert abs(probe["coef"][2]) == max(map(abs, probe["coef"]))
    with pytest.raises(ConfigError, match="nothing to learn"):
        train_orm(x, np.zeros(80, dtype=int), groups)
    with pytest.raises(ConfigError, match="too few right"):
        train_orm(x, np.eye(1, 80, dtype=int)[0], groups)


def test_orm_cli_trains_from_scored_samples_and_the_verifier_uses_it(tiny, tmp_path):
    import argparse

    from trajlab.test_time import orm

    _, tok = tiny
    model_dir = make_tiny_model(tmp_path / "base")
    run_test_time(_config(tmp_path), engine=_scripted_engine(tok))
    samples, out = tmp_path / "tt" / "samples", tmp_path / "orm"
    p = argparse.ArgumentParser()
    orm.configure(p)
    args = p.parse_args(["--samples", str(samples), "--out", str(out), "--model", str(model_dir),
                         "--dtype", "float32", "--folds", "2"])  # fmt: skip
    assert orm.main(args) == 0
    spec = json.loads((out / "orm.json").read_text())
    assert spec["base_model"] == str(model_dir) and spec["dtype"] == "float32"
    assert (
        spec["train"]["trajectories"] == 16 and spec["train"]["positives"] == 9
    )  # 2 + 1 + 4 + 2 in SCRIPT
    assert len(spec["probe"]["coef"]) == 64 and 0.0 <= spec["train"]["cv_auc"] <= 1.0
    with pytest.raises(ConfigError, match="exists"):
        orm.main(args)  # a trained probe is never overwritten
    cfg = TTConfig(samples=str(samples), method="best_of_n", verifier=f"orm:{out}",
                   budgets=[1, 4], out=str(tmp_path / "bon"))  # fmt: skip
    run_test_time(cfg)
    scores = [
        t.metadata["test_time"]["score"]
        for t in read_jsonl(tmp_path / "bon" / "trajectories.jsonl")
    ]
    assert len(scores) == 16 and all(0.0 < s < 1.0 for s in scores)
    with pytest.raises(ConfigError, match="no orm.json"):
        make_verifier(f"orm:{tmp_path / 'nothing'}")


# -- step by step: the loop's turn API and beam search ---------------------------------


def _calc():
    from trajlab.tools.base import ToolResult
    from trajlab.tools.fake import ScriptedTool

    return ScriptedTool("python", {f"print({k})": str(k) for k in range(10)},
                        default=ToolResult(output="?", ok=False, status="error"))  # fmt: skip


def _code(k: int) -> str:
    return f"Let me run it.\n```python\nprint({k})\n```\n"


# Responses by what the context ends with, in call order; the verifier's score of each.
TURNS = {
    "prompt": [_code(1), _code(2), "So \\boxed{5}.", _code(3)],
    "1": ["So \\boxed{1}."],
    "2": ["So \\boxed{2}.", "So \\boxed{4}."],
    "3": ["So \\boxed{3}.", _code(9)],
    "9": ["So \\boxed{9}.", "So \\boxed{8}."],
}
SCORES = {_code(1): 0.1, _code(2): 0.9, "So \\boxed{5}.": 0.3, _code(3): 0.5,
          "So \\boxed{2}.": 0.4, "So \\boxed{4}.": 0.8, "So \\boxed{3}.": 0.6, _code(9): 0.7,
          "So \\boxed{9}.": 0.95, "So \\boxed{8}.": 0.2}  # fmt: skip


def _turn_engine(tok):
    import re

    calls: dict[str, int] = defaultdict(int)

    def respond(prompt: str) -> str:
        outs = re.findall(r"```output\n(\d)", prompt.rsplit("What is it?", 1)[1])
        key = outs[-1] if outs else "prompt"
        i = calls[key]
        calls[key] += 1
        return TURNS[key][i]

    return FakeEngine(tok, respond)


class LastTurnScore:
    name = "scripted"

    def score(self, items):
        from trajlab.test_time.verifiers import Verdict

        out = []
        for _, t in items:
            last = [s.text for s in t.segments if s.source == "model"][-1]
            key = next(k for k in SCORES if last.startswith(k.rstrip("\n")))
            out.append(Verdict(SCORES[key], cost_tokens=1))
        return out


def _loop(tok):
    from trajlab.agent.loop import AgentLoop

    cfg = AgentConfig(protocol="code", tools=["python"], max_turns=3, max_tool_calls=2)
    return AgentLoop(_turn_engine(tok), {"python": _calc()}, cfg)


def test_start_advance_finish_is_run(tiny):
    _, tok = tiny
    ex = Example("q", "What is it?", "9")
    whole = _loop(tok).run([(ex, 0)])[0]
    loop = _loop(tok)
    (e,) = loop.start([(ex, 0)])
    while not e.done:
        loop.advance([e])
    (stepped,) = loop.finish([e])
    for t in (stepped, whole):
        for c in t.tool_calls:
            c.latency_s = 0.0  # the one field that is a measurement
    assert stepped.to_dict() == whole.to_dict() and stepped.stop_reason == "answer"
    assert [c.result for c in stepped.tool_calls] == ["1"]


def test_forks_continue_independently_from_a_shared_prefix(tiny):
    _, tok = tiny
    loop = _loop(tok)
    (root,) = loop.start([(Example("q", "What is it?", "9"), 0)])
    a, b = loop.fork(root, 1), loop.fork(root, 2)
    loop.advance([a, b])  # _code(1) and _code(2), each with its own observation
    assert [c.result for c in a.traj.tool_calls] == ["1"]
    assert [c.result for c in b.traj.tool_calls] == ["2"]
    assert root.traj.segments == a.traj.segments[:1] == b.traj.segments[:1] and not root.turns
    c = loop.fork(b, 3)
    loop.advance([c])
    assert (
        len(b.traj.segments) < len(c.traj.segments)
        and c.traj.segments[: len(b.traj.segments)] == b.traj.segments
    )
    for t in loop.finish([a, b, c]):
        assert t.token_ids[: len(t.loss_mask)] == t.token_ids  # one id per mask entry
        assert all(m == 0 for s in t.segments if s.source != "model" for m in s.loss_mask)


def test_beam_search_keeps_the_top_width_by_the_verifier_and_returns_the_best_finished(tiny):
    from trajlab.test_time.beam import beam_search

    _, tok = tiny
    ex = Example("q", "What is it?", "9")
    depths = []
    r = beam_search(_loop(tok), [ex], LastTurnScore(), width=2, expand=2,
                    on_depth=lambda *d: depths.append(d))  # fmt: skip
    # depth 0: 4 first turns; code(2) 0.9 and code(3) 0.5 stay, boxed{5} ends (0.3).
    # depth 1: boxed{2} 0.4, boxed{4} 0.8, boxed{3} 0.6 end; code(9) 0.7 stays alone.
    # depth 2: boxed{9} 0.95, boxed{8} 0.2. The best finished is boxed{9}.
    assert r.chosen["q"].model_text.endswith("So \\boxed{9}.<|im_end|>")
    assert [c.result for c in r.chosen["q"].tool_calls] == ["3", "9"]
    assert sorted(t.metadata["test_time"]["score"] for t in r.finished["q"]) == [
        0.2, 0.3, 0.4, 0.6, 0.8, 0.95,
    ]  # fmt: skip
    assert [n.depth for n in r.nodes] == [0] * 4 + [1] * 4 + [2] * 2
    assert depths == [(0, 4, 2), (1, 4, 1), (2, 2, 0)]  # (depth, turns sampled, kept)
    kept = sorted((n.depth, n.score) for n in r.nodes if n.kept)
    assert kept == [(0, 0.5), (0, 0.9), (1, 0.7), (2, 0.95)]
    parents = {n.node: n.parent for n in r.nodes}
    chosen = r.chosen["q"].sample_index
    assert parents[chosen] is not None and parents[parents[chosen]] is not None
    assert r.tokens["q"] == sum(n.tokens for n in r.nodes) and r.verifier_tokens["q"] == 10
    with pytest.raises(ValueError, match="width and expansion"):
        beam_search(_loop(tok), [ex], LastTurnScore(), width=0, expand=2)


def test_beam_method_through_the_run_writes_the_tree_and_compares_with_the_samples(tiny, tmp_path):
    _, tok = tiny
    cfg = _config(tmp_path, method="beam", verifier="confidence", budgets=[2, 4])
    m = run_test_time(cfg, engine=_scripted_engine(tok))
    # The scripted engine keeps counting per question: the 4 samples take answers 0-3,
    # budget 2 gets answers 0, 1 and budget 4 answers 2, 3, 0, 1 (SCRIPT). Every turn
    # ends the episode and the fake engine's logprobs are all -1, so confidence ties and
    # the first fork wins: answer 0 at budget 2 (q1, q2 right), answer 2 at budget 4 (q0,
    # q2, q3 right).
    curve = {r["k"]: r for r in m["curve"]}
    assert curve[2]["accuracy"] == 0.5 and curve[4]["accuracy"] == 0.75
    assert curve[4]["sample_accuracy"] == 0.5625 and curve[4]["pass_at_k"] == 1.0
    out = tmp_path / "tt"
    tree = [json.loads(line) for line in (out / "tree.jsonl").read_text().splitlines()]
    assert sorted({(n["k"], n["example_id"]) for n in tree}) == sorted(
        (k, q) for k in (2, 4) for q in SCRIPT
    )
    assert len(tree) == 4 * (2 + 4) and all(n["depth"] == 0 and n["done"] for n in tree)
    for k in (2, 4):
        tokens = sum(n["tokens"] for n in tree if n["k"] == k) / 4
        assert curve[k]["model_tokens_per_question"] == tokens
    beam = read_jsonl(out / "beam.jsonl")
    assert len(beam) == 24 and sum(t.metadata["test_time"]["chosen"] for t in beam) == 8
    assert all("correct" in t.metadata for t in beam)
    assert len(read_jsonl(out / "chosen.jsonl")) == 4
    with pytest.raises(ValueError, match="not multiples of beam_expand=2"):
        TTConfig(method="beam", budgets=[1, 2])


def test_one_plot_over_several_runs(tiny, tmp_path, capsys):
    from trajlab.test_time import report

    _, tok = tiny
    run_test_time(_config(tmp_path), engine=_scripted_engine(tok))
    samples = str(tmp_path / "tt" / "samples")
    run_test_time(TTConfig(samples=samples, method="best_of_n", budgets=[1, 2, 4],
                           out=str(tmp_path / "bon")))  # fmt: skip
    png = tmp_path / "all.png"
    assert report.main([str(tmp_path / "tt"), str(tmp_path / "bon"), "--out", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit):
        report.main([str(tmp_path), "--out", str(png)])  # not a test-time run
    assert "no metrics.json" in capsys.readouterr().err


# -- a process reward model from Monte-Carlo labels -------------------------------------


def _mc_engine(tok):
    """Turn 1 runs print(1) or print(2) (alternating); after print(1) the next turn is
    right and wrong in turn, after print(2) always wrong; a direct answer is wrong."""
    import re

    calls: dict[str, int] = defaultdict(int)

    def respond(prompt: str) -> str:
        outs = re.findall(r"```output\n(.*?)\n", prompt)
        key = outs[-1] if outs else "prompt"
        i = calls[key]
        calls[key] += 1
        if key == "prompt":
            return [_code(1), _code(2), "So \\boxed{5}."][i % 3]
        if "1" in key:
            return ["So \\boxed{9}.", "So \\boxed{1}."][i % 2]
        return "So \\boxed{2}."

    return FakeEngine(tok, respond)


def _mc_samples(tok, tmp_path):
    from trajlab.eval.harness import EvalConfig, evaluate

    task = tmp_path / "mc.jsonl"
    task.write_text("".join(json.dumps({"id": f"q{i}", "question": f"Question {i}: what is "
                                        "it?", "answer": "9"}) + "\n" for i in range(4)))  # fmt: skip
    cfg = EvalConfig(
        model="fake", task=str(task), n=3, batch_size=12, progress=False, temperature=1.0,
        prompt="question", agent=AgentConfig(protocol="code", tools=["python"], max_turns=3),
        tool_plugins={"python": "trajlab.tools.fake:echo_python"}, out=str(tmp_path / "s"),
    )  # fmt: skip
    evaluate(cfg, engine=_mc_engine(tok))
    return tmp_path / "s"


def test_a_stored_prefix_resumes_where_its_turn_starts(tiny, tmp_path):
    from trajlab.eval.harness import EvalConfig, _build_loop
    from trajlab.test_time.prm import step_cuts

    _, tok = tiny
    run = _mc_samples(tok, tmp_path)
    cfg = EvalConfig(**{**json.loads((run / "config.json").read_text()), "agent": AgentConfig(
        protocol="code", tools=["python"], max_turns=3)})  # fmt: skip
    loop, _ = _build_loop(cfg, _mc_engine(tok), None)
    t = next(t for t in read_jsonl(run / "trajectories.jsonl") if t.tool_calls)
    ex = Example(t.example_id, f"Question {t.example_id[1:]}: what is it?", "9")
    (cut,) = step_cuts(t)
    e = loop.resume(ex, t, cut, sample_index=7)
    assert e.ids == [i for s in t.segments[:cut] for i in s.token_ids]
    assert (e.turns, e.calls, dict(e.calls_by_tool)) == (1, 1, {"python": 1}) and not e.done
    loop.advance([e])
    (r,) = loop.finish([e])
    assert r.segments[:cut] == t.segments[:cut] and r.sample_index == 7
    assert r.token_ids[: len(r.loss_mask)] == r.token_ids and r.stop_reason == "answer"
    with pytest.raises(ValueError, match="not where a turn starts"):
        loop.resume(ex, t, cut - 1, 0)
    with pytest.raises(ValueError, match="another prompt"):
        loop.resume(Example(ex.id, "Another question?", "9"), t, cut, 0)


def test_prm_labels_prefixes_by_monte_carlo_resumes_and_the_verifier_reads_it(tiny, tmp_path):
    import argparse

    from trajlab.test_time import prm

    _, tok = tiny
    run = _mc_samples(tok, tmp_path)
    trajs = read_jsonl(run / "trajectories.jsonl")
    # 12 samples: first turns cycle print(1), print(2), boxed{5} over the questions
    assert sum(len(prm.step_cuts(t)) for t in trajs) == 8
    model_dir = make_tiny_model(tmp_path / "base")
    out = tmp_path / "prm"
    p = argparse.ArgumentParser()
    prm.configure(p)
    args = p.parse_args(["--samples", str(run), "--out", str(out), "--rollouts", "2",
                         "--model", str(model_dir), "--dtype", "float32", "--folds", "2",
                         "--batch-size", "4"])  # fmt: skip
    assert prm.main(args, engine=_mc_engine(tok)) == 0
    rows = [json.loads(x) for x in (out / "labels.jsonl").read_text().splitlines()]
    assert len(rows) == 8
    by_sample = {(t.example_id, t.sample_index): t for t in trajs}
    for r in rows:
        ran = by_sample[(r["example_id"], r["sample_index"])].tool_calls[0].args["code"]
        # after print(1) one continuation of two is right, after print(2) none
        assert r["label"] == (0.5 if "1" in ran else 0.0) and r["turn"] == 1
    rollouts = read_jsonl(out / "rollouts.jsonl")
    assert len(rollouts) == 16 and all("correct" in t.metadata for t in rollouts)
    spec = json.loads((out / "prm.json").read_text())
    assert spec["kind"] == "prm" and spec["train"]["prefixes"] == 8
    assert spec["train"]["trajectories"] == 12 and spec["train"]["mean_prefix_label"] == 0.25
    assert {"cv_cross_entropy", "constant_cross_entropy"} <= set(spec["train"])
    with pytest.raises(ConfigError, match="exists"):
        prm.main(args, engine=_mc_engine(tok))

    # interrupted: the last label line cut short; a rerun labels only that prefix again
    (out / "prm.json").unlink()
    text = (out / "labels.jsonl").read_text()
    (out / "labels.jsonl").write_text(text[: len(text) - 20])
    calls = []

    def counted(tok_):
        eng = _mc_engine(tok_)
        inner = eng.generate

        def generate(prompts, *a, **kw):
            calls.append(len(prompts))
            return inner(prompts, *a, **kw)

        eng.generate = generate
        return eng

    assert prm.main(args, engine=counted(tok)) == 0
    assert sum(calls) == 2  # one prefix x 2 continuations
    assert len((out / "labels.jsonl").read_text().splitlines()) == 8
    assert len(read_jsonl(out / "rollouts.jsonl")) == 16

    v = make_verifier(f"prm:{out}")
    scores = [x.score for x in v.score([(Example(t.example_id, "", "9"), t) for t in trajs])]
    assert v.name == f"prm:{out}" and all(0.0 < s < 1.0 for s in scores)
    with pytest.raises(ConfigError, match="no prm.json"):
        make_verifier(f"prm:{tmp_path / 'nothing'}")


def test_the_value_probe_fits_soft_labels():
    import numpy as np

    from trajlab.test_time.prm import train_value_probe

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 1))
    y = 1.0 / (1.0 + np.exp(-2.0 * x[:, 0]))  # soft labels: the generating probability
    groups = [f"q{i // 4}" for i in range(400)]
    probe, stats = train_value_probe(x, y, groups, [False] * 400, folds=4)
    # a logistic fit to its own probabilities recovers the slope, in standardised units
    assert probe["coef"][0] / probe["scale"][0] == pytest.approx(2.0, rel=0.1)
    assert stats["cv_cross_entropy"] < stats["constant_cross_entropy"]
    assert stats["cv_prefix_correlation"] > 0.95
    with pytest.raises(ConfigError, match="nothing to learn"):
        train_value_probe(x, np.full(400, 0.5), groups, [False] * 400)
