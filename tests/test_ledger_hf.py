"""The ledger invariant with the real HF engine sampling, multi-turn, with tool calls.

A random tiny model never writes a code fence, so the test uses a protocol whose call
closes at a marker the model is known to produce: the text of a token it emits
greedily. The loop then runs real sampled turns (temperature 1) separated by tool
observations, and the stored trajectory must satisfy DESIGN.md's invariants:
logprobs recomputed by the trainer's function on the stored ids equal the engine's
sampling logprobs, and tool/template tokens have loss mask 0 and no logprobs.
"""

from __future__ import annotations

import random
import time

import pytest
import torch

from trajlab.agent import protocols
from trajlab.agent.loop import AgentConfig, AgentLoop
from trajlab.agent.protocols import CallSyntax, MarkupProtocol
from trajlab.engines.base import SamplingParams
from trajlab.engines.hf import HFEngine
from trajlab.models import load_model, load_tokenizer, token_logprobs
from trajlab.testing import make_tiny_model
from trajlab.tools.fake import EchoTool
from trajlab.types import Example, Trajectory


@pytest.fixture()
def marker_protocol(monkeypatch, tmp_path):
    path = make_tiny_model(tmp_path / "m", init_std=0.02)
    model, tok = load_model(path), load_tokenizer(path)
    prompt = [{"role": "user", "content": "Say something."}]
    ids = tok.encode(
        tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False),
        add_special_tokens=False,
    )
    # Which short strings does this model produce? Sample once and pick a frequent character.
    engine = HFEngine(model, tok)
    sample = engine.generate([ids] * 4, SamplingParams(temperature=1.0, max_new_tokens=48, seed=3))
    text = "".join(g.text for g in sample)
    marker = max((c for c in set(text) if c.isprintable() and not c.isspace()), key=text.count)
    proto = MarkupProtocol(
        name="marker",
        calls=(
            CallSyntax(
                tool="echo", open="", close=marker, arg="code", result="\n<obs>{result}</obs>\n"
            ),
        ),
    )
    monkeypatch.setitem(protocols.PROTOCOLS, "marker", proto)
    return model, tok, engine, prompt


def test_hf_engine_trajectories_with_tool_calls_keep_the_ledger_invariant(marker_protocol):
    model, tok, engine, prompt = marker_protocol
    trajs = _run_marker_episodes(engine, prompt)
    with_calls = [t for t in trajs if t.tool_calls]
    assert with_calls, "no trajectory made a tool call; the marker choice is broken"
    for t in trajs:
        ids = torch.tensor([t.token_ids])
        recomputed = token_logprobs(model, ids)[0]  # [T]
        for i, (lp, m, src) in enumerate(zip(t.sampling_logprobs(), t.loss_mask, _sources(t))):
            if src != "model":
                assert m == 0 and lp is None
            else:
                assert m == 1
                assert abs(recomputed[i].item() - lp) < 2e-4, f"{t.example_id} token {i}"
        assert Trajectory.from_json(t.to_json()) == t
    assert any(s.source == "tool" for t in with_calls for s in t.segments)
    assert sum(len(t.tool_calls) for t in trajs) >= 3  # several multi-turn episodes, not one fluke


def test_the_fast_path_keeps_the_ledger_invariant(marker_protocol):
    """The trainer's defaults on bf16 CPUs: a bf16 decode copy samples, the trainer
    recomputes under bf16 autocast. Token ids and masks stay exact; logprobs agree to
    bf16 precision (the truncated importance weights absorb the difference)."""
    model, tok, _, prompt = marker_protocol
    trajs = _run_marker_episodes(HFEngine(model, tok, decode_dtype="bfloat16"), prompt)
    assert any(t.tool_calls for t in trajs)
    diffs = []
    for t in trajs:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            recomputed = token_logprobs(model, torch.tensor([t.token_ids]))[0]  # [T]
        for i, (lp, m, src) in enumerate(zip(t.sampling_logprobs(), t.loss_mask, _sources(t))):
            assert (m == 1) == (src == "model") and (lp is None) == (src != "model")
            if src == "model":
                diffs.append(abs(recomputed[i].item() - lp))
        assert Trajectory.from_json(t.to_json()) == t
    assert max(diffs) < 0.02 and sum(diffs) / len(diffs) < 0.005, (
        max(diffs),
        sum(diffs) / len(diffs),
    )


def _run_marker_episodes(
    engine: HFEngine,
    prompt,
    continuous: bool = False,
    sampling: SamplingParams | None = None,
    tool: EchoTool | None = None,
    n: int = 6,
) -> list[Trajectory]:
    """n multi-turn episodes of the marker protocol with the echo tool (sampled at
    temperature 1 unless `sampling` says otherwise); each episode's question is appended
    to the prompt, so episodes differ."""
    config = AgentConfig(
        protocol="marker",
        tools=["echo"],
        max_turns=4,
        max_tool_calls=3,
        max_new_tokens_per_turn=48,
        continuous_batching=continuous,
    )
    loop = AgentLoop(
        engine,
        {"echo": tool or EchoTool("echo", prefix="echo: ", limit=20, arg="code")},
        config,
        sampling=sampling or SamplingParams(temperature=1.0, seed=11),
        prompt_builder=lambda ex: [{**prompt[0], "content": prompt[0]["content"] + ex.question}],
    )
    assert loop.streams == continuous
    return loop.run([(Example(id=f"e{i}", question=" " * (i % 3)), 0) for i in range(n)])


class _JitteryEcho(EchoTool):
    """The echo tool with a random delay, so calls finish out of order."""

    def __init__(self) -> None:
        super().__init__("echo", prefix="echo: ", limit=20, arg="code")
        self._rng = random.Random(0)

    def run(self, args):
        time.sleep(self._rng.uniform(0.0, 0.05))
        return super().run(args)


def test_continuous_batching_keeps_the_ledger_invariant(marker_protocol):
    model, tok, engine, prompt = marker_protocol
    trajs = _run_marker_episodes(engine, prompt, continuous=True, tool=_JitteryEcho(), n=8)
    assert sum(len(t.tool_calls) for t in trajs) >= 3
    for t in trajs:
        recomputed = token_logprobs(model, torch.tensor([t.token_ids]))[0]  # [T]
        for i, (lp, m, src) in enumerate(zip(t.sampling_logprobs(), t.loss_mask, _sources(t))):
            assert (m == 1) == (src == "model") and (lp is None) == (src != "model")
            if src == "model":
                assert abs(recomputed[i].item() - lp) < 2e-4, f"{t.example_id} token {i}"
        assert Trajectory.from_json(t.to_json()) == t


def test_continuous_batching_gives_the_greedy_trajectories_of_the_turn_loop(tmp_path, monkeypatch):
    # A larger init makes greedy text vary between prompts (at 0.02 it is all newlines);
    # calls close at a letter greedy decoding writes in most first turns.
    path = make_tiny_model(tmp_path / "m", init_std=0.1)
    tok = load_tokenizer(path)
    engine = HFEngine(load_model(path), tok)
    prompt = [{"role": "user", "content": "Say something."}]
    greedy = SamplingParams(temperature=0)
    firsts = []
    for i in range(3):
        messages = [{**prompt[0], "content": prompt[0]["content"] + " " * i}]
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tok.encode(text, add_special_tokens=False)
        gen = engine.generate([ids], SamplingParams(temperature=0, max_new_tokens=24))[0]
        firsts.append(gen.text)
    letters = sorted({c for t in firsts for c in t if c.isascii() and c.isalpha()})
    marker = max(letters, key=lambda c: sum(c in t for t in firsts))
    call = CallSyntax(
        tool="echo", open="", close=marker, arg="code", result="\n<obs>{result}</obs>\n"
    )
    monkeypatch.setitem(protocols.PROTOCOLS, "marker", MarkupProtocol(name="marker", calls=(call,)))
    turn_loop = _run_marker_episodes(engine, prompt, sampling=greedy, n=8)
    streamed = _run_marker_episodes(
        engine, prompt, continuous=True, sampling=greedy, tool=_JitteryEcho(), n=8
    )
    assert sum(len(t.tool_calls) for t in turn_loop) >= 3  # multi-turn, or the test is moot
    for a, b in zip(turn_loop, streamed):
        assert [(s.source, s.token_ids) for s in a.segments] == [
            (s.source, s.token_ids) for s in b.segments
        ], a.example_id
        assert a.stop_reason == b.stop_reason
        assert [c.result for c in a.tool_calls] == [c.result for c in b.tool_calls]
        torch.testing.assert_close(
            [x for x in a.sampling_logprobs() if x is not None],
            [x for x in b.sampling_logprobs() if x is not None],
            atol=1e-4,
            rtol=0,
        )


def _sources(t: Trajectory) -> list[str]:
    return [s.source for s in t.segments for _ in s.token_ids]
