"""The ledger invariant with the real HF engine sampling, multi-turn, with tool calls.

A random tiny model never writes a code fence, so the test uses a protocol whose call
closes at a marker the model is known to produce: the text of a token it emits
greedily. The loop then runs real sampled turns (temperature 1) separated by tool
observations, and the stored trajectory must satisfy DESIGN.md's invariants:
logprobs recomputed by the trainer's function on the stored ids equal the engine's
sampling logprobs, and tool/template tokens have loss mask 0 and no logprobs.
"""

from __future__ import annotations

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


def _run_marker_episodes(engine: HFEngine, prompt) -> list[Trajectory]:
    """Six sampled multi-turn episodes of the marker protocol with the echo tool."""
    config = AgentConfig(
        protocol="marker", tools=["echo"], max_turns=4, max_tool_calls=3, max_new_tokens_per_turn=48
    )
    loop = AgentLoop(
        engine,
        {"echo": EchoTool("echo", prefix="echo: ", limit=20, arg="code")},
        config,
        sampling=SamplingParams(temperature=1.0, seed=11),
        prompt_builder=lambda ex: prompt,
    )
    return loop.run([(Example(id=f"e{i}", question="q"), 0) for i in range(6)])


def _sources(t: Trajectory) -> list[str]:
    return [s.source for s in t.segments for _ in s.token_ids]
