"""DecodeStream (continuous batching) on the tiny model: the same tokens and logprobs as
HFEngine.generate, rows joining a running batch, and returning rows reusing their KV."""

from __future__ import annotations

import pytest
import torch

from trajlab.engines.base import SamplingParams
from trajlab.engines.hf import HFEngine
from trajlab.engines.stream import _repack, supports_stream
from trajlab.models import token_logprobs

TEXTS = ["Hello world", "The answer is", "```python\nprint(", "a", "What is 6 times 7?"]
GREEDY = SamplingParams(temperature=0, max_new_tokens=12)


@pytest.fixture(scope="module")
def prompts(tiny_tokenizer):
    return [tiny_tokenizer.encode(t, add_special_tokens=False) for t in TEXTS]


@pytest.fixture(scope="module")
def engine(tiny_model, tiny_tokenizer):
    return HFEngine(tiny_model, tiny_tokenizer, max_batch_size=16)


def drain(stream) -> dict:
    out = {}
    while stream.busy:
        for key, gen in stream.step():
            assert key not in out
            out[key] = gen
    return out


def test_tiny_model_can_stream(engine):
    assert engine.can_stream and supports_stream(engine.model)


def test_stream_gives_the_tokens_and_logprobs_of_generate(engine, prompts):
    want = engine.generate(prompts, GREEDY)
    with engine.stream(GREEDY) as stream:
        for i, p in enumerate(prompts):
            stream.add(i, p, max_new_tokens=GREEDY.max_new_tokens)
        got = drain(stream)
    for i, w in enumerate(want):
        assert got[i].token_ids == w.token_ids, f"prompt {i}"
        assert got[i].finish_reason == w.finish_reason
        torch.testing.assert_close(got[i].logprobs, w.logprobs, atol=1e-4, rtol=0)


def test_rows_joining_a_running_batch_sample_what_they_sample_alone(engine, prompts):
    params = SamplingParams(temperature=1.0, max_new_tokens=10)
    want = {
        i: engine.generate([p], SamplingParams(temperature=1.0, max_new_tokens=10, seed=100 + i))[0]
        for i, p in enumerate(prompts)
    }
    with engine.stream(params, max_rows=3) as stream:
        pending = list(enumerate(prompts))
        got = {}
        while pending or stream.busy:
            while pending and stream.free_slots:  # join as slots free up
                i, p = pending.pop(0)
                stream.add(i, p, max_new_tokens=10, seed=100 + i, index=0)
            assert len(stream.rows) + len(stream.waiting) <= 3
            got.update(stream.step())
    for i, w in want.items():
        assert got[i].token_ids == w.token_ids, f"prompt {i}"
        torch.testing.assert_close(got[i].logprobs, w.logprobs, atol=1e-4, rtol=0)


def test_a_returning_row_prefills_only_its_new_tokens(engine, tiny_model, prompts):
    observation = [5, 6, 7, 8]
    with engine.stream(GREEDY) as stream:
        for i, p in enumerate(prompts):
            stream.add(i, p, max_new_tokens=6)
        first = drain(stream)
        assert set(stream.parked) == set(range(len(prompts)))  # every row's KV is kept
        prefilled = stream.prefilled_tokens
        contexts = {i: p + first[i].token_ids + observation for i, p in enumerate(prompts)}
        for i, ctx in contexts.items():
            stream.add(i, ctx, max_new_tokens=8)
        second = drain(stream)
        # Only the last sampled token and the observation ran: the rest came from the cache.
        assert stream.prefilled_tokens - prefilled == len(prompts) * (1 + len(observation))
        stream.forget(0)
        assert 0 not in stream.parked
    fresh = engine.generate(
        list(contexts.values()), SamplingParams(temperature=0, max_new_tokens=8)
    )
    for i, f in enumerate(fresh):
        assert second[i].token_ids == f.token_ids, f"prompt {i}"
        ids = torch.tensor([contexts[i] + second[i].token_ids])
        lp = token_logprobs(tiny_model, ids, start=len(contexts[i]))[0, len(contexts[i]) :]
        torch.testing.assert_close(second[i].logprobs, lp.tolist(), atol=1e-4, rtol=0)


def test_a_returning_row_whose_context_was_cut_back_recomputes_the_rest(engine, prompts):
    # The agent loop drops tokens after a tool call's end: the cached KV then covers
    # tokens the new context does not have, and only the shared prefix may be reused.
    with engine.stream(GREEDY) as stream:
        stream.add("a", prompts[4], max_new_tokens=8)
        gen = drain(stream)["a"]
        ctx = prompts[4] + gen.token_ids[:3] + [9, 10]
        stream.add("a", ctx, max_new_tokens=6)
        again = drain(stream)["a"]
    assert (
        again.token_ids
        == engine.generate([ctx], SamplingParams(temperature=0, max_new_tokens=6))[0].token_ids
    )


def test_group_samples_share_one_prefill(engine, prompts):
    params = SamplingParams(temperature=1.0, max_new_tokens=12)
    with engine.stream(params) as stream:
        for k in range(4):
            stream.add(("g", k), prompts[4], max_new_tokens=12, seed=7, index=k)
        stream.add("other", prompts[0], max_new_tokens=12)
        first = dict(stream.step())
        assert stream.prefilled_tokens == len(prompts[4]) + len(prompts[0])
        got = first | drain(stream)
    want = engine.generate(
        [prompts[4]] * 4, SamplingParams(temperature=1.0, max_new_tokens=12, seed=7)
    )
    for k in range(4):
        assert got[("g", k)].token_ids == want[k].token_ids


def test_stop_strings_are_per_row(engine, prompts):
    free = engine.generate([prompts[0]], GREEDY)[0]
    assert len(free.text) >= 6
    stop = free.text[3:5]
    want = engine.generate([prompts[0]], GREEDY, stop=[stop])[0]
    assert want.finish_reason == "stop"
    with engine.stream(GREEDY) as stream:
        stream.add("stop", prompts[0], max_new_tokens=12, stop=[stop])
        stream.add("free", prompts[0], max_new_tokens=12)
        got = drain(stream)
    assert got["stop"].token_ids == want.token_ids and got["stop"].stop_string == stop
    assert got["free"].token_ids == free.token_ids


def test_bad_additions_are_refused(engine, prompts):
    with engine.stream(GREEDY) as stream:
        stream.add(1, prompts[0], max_new_tokens=4)
        with pytest.raises(ValueError, match="already generating"):
            stream.add(1, prompts[1], max_new_tokens=4)
        with pytest.raises(ValueError, match="prompts need 1 to"):
            stream.add(2, [], max_new_tokens=4)
        with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
            stream.add(3, prompts[1], max_new_tokens=0)
        assert stream.abort() == [1] and not stream.busy


def test_repack_moves_real_positions_right_in_order():
    mask = torch.tensor([[0, 1, 1, 0, 1], [1, 0, 0, 0, 1], [0, 0, 0, 1, 1]])
    k = torch.arange(3 * 5, dtype=torch.float32).reshape(3, 1, 5, 1)  # value = b * 5 + pos
    [(k2, _)], new_mask = _repack([(k, k.clone())], mask)
    assert new_mask.tolist() == [[1, 1, 1], [0, 1, 1], [0, 1, 1]]
    assert k2[:, 0, :, 0].tolist() == [[1, 2, 4], [0, 5, 9], [0, 13, 14]]


def test_returning_rows_are_admitted_together(engine, prompts):
    # Eight long-running rows and one short one: the short one's return waits (at most
    # ADMIT_WAIT steps) instead of costing an admission of its own right away.
    from trajlab.engines.stream import ADMIT_WAIT

    with engine.stream(GREEDY) as stream:
        for i in range(8):
            stream.add(i, prompts[4] + [i + 3], max_new_tokens=40)
        stream.add("short", prompts[0], max_new_tokens=1)
        done = dict(stream.step())  # admits all nine; "short" ends at its first token
        assert stream.admissions == 1 and "short" in done
        stream.add("short", prompts[0] + done["short"].token_ids + [7], max_new_tokens=2)
        for held in range(1, ADMIT_WAIT + 1):
            stream.step()
            assert stream.admissions == 1 and stream.held == held  # not yet
        stream.step()
        assert stream.admissions == 2 and not stream.waiting  # admitted after ADMIT_WAIT steps
