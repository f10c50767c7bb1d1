"""GrowingLayer (KV written in place): the same keys, values and model outputs as
transformers' concatenating DynamicLayer, whatever the room, and the engines that use it
give the tokens and logprobs they gave before."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

import trajlab.engines.kv as kv_mod
from trajlab.engines.base import SamplingParams
from trajlab.engines.hf import HFEngine
from trajlab.engines.kv import (
    GrowingLayer,
    cache_holding,
    growing_cache,
    prefill,
    stacked_cache,
    supports_growing,
)


def kv(b: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 2, n, 4, generator=g), torch.randn(b, 2, n, 4, generator=g)


def same(a: DynamicLayer, b: DynamicLayer) -> None:
    assert a.get_seq_length() == b.get_seq_length()
    assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)


@pytest.mark.parametrize("room", [0, 1, 3, 50])
def test_growing_layer_holds_what_dynamic_layer_holds(room):
    grow, ref = GrowingLayer(room), DynamicLayer()
    for layer in (grow, ref):
        out = layer.update(*kv(3, 5, 0))
    assert torch.equal(out[0], grow.keys)
    same(grow, ref)
    for step in range(1, 9):  # decode steps, past the room when it is small
        new = kv(3, 1, step)
        got, want = grow.update(*new), ref.update(*new)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        same(grow, ref)
    assert grow.capacity >= 13
    idx = torch.tensor([2, 0, 0])
    grow.batch_select_indices(idx)
    ref.batch_select_indices(idx)
    same(grow, ref)
    for layer in (grow, ref):
        layer.update(*kv(3, 2, 99))
    same(grow, ref)
    grow.crop(-3)
    ref.crop(-3)
    same(grow, ref)
    for layer in (grow, ref):  # after a crop, updates overwrite the cut positions
        layer.update(*kv(3, 1, 7))
    same(grow, ref)
    grow.batch_repeat_interleave(2)
    ref.batch_repeat_interleave(2)
    same(grow, ref)


def test_room_is_reserved_once_and_views_share_the_buffer():
    layer = GrowingLayer(room=4)
    layer.update(*kv(2, 3, 0))
    assert layer.capacity == 7
    buf = layer._k
    for step in range(4):
        layer.update(*kv(2, 1, step + 1))
    assert layer._k is buf and layer.get_seq_length() == 7  # no reallocation within the room
    assert layer.keys.data_ptr() == buf.data_ptr()
    layer.update(*kv(2, 1, 9))  # past the room: grows, keeps what it held
    assert layer._k is not buf and layer.capacity > 8
    assert torch.equal(layer.keys[:, :, :7], buf)


def test_adopt_starts_from_given_tensors():
    k, v = kv(2, 6, 0)
    layer = GrowingLayer()
    layer.adopt(k, v, room=2)
    assert layer.capacity == 8 and torch.equal(layer.keys, k) and torch.equal(layer.values, v)
    assert layer.keys.data_ptr() != k.data_ptr()  # copied: the caller's tensors stay as they are


def test_crop_rejects_positive_counts_like_dynamic_layer():
    layer = GrowingLayer()
    layer.update(*kv(1, 3, 0))
    with pytest.raises(ValueError, match="positive"):
        layer.crop(2)


@torch.inference_mode()
def test_model_outputs_are_bit_identical_with_left_padding(tiny_model):
    """A left-padded prefill, rows copied and dropped, then decode steps: the logits of the
    growing cache equal the concatenating cache's exactly."""
    assert supports_growing(tiny_model)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 300, (3, 9), generator=g)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[0, :4] = 0
    mask[2, :2] = 0
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = {}
    for name, cache in {
        "grow": growing_cache(tiny_model, room=2),  # small room: the run regrows it
        "cat": DynamicCache(config=tiny_model.config),
    }.items():
        m, p = mask.clone(), pos[:, -1:] + 1
        out = tiny_model(input_ids=ids, attention_mask=m, position_ids=pos, past_key_values=cache)
        rows = [out.logits[:, -1]]
        expand = torch.tensor([0, 0, 1, 2, 2])
        cache.batch_select_indices(expand)
        m, p = m[expand], p[expand]
        tok = torch.randint(0, 300, (5, 1), generator=torch.Generator().manual_seed(1))
        for step in range(6):
            if step == 3:  # two rows finish
                keep = torch.tensor([0, 2, 4])
                cache.batch_select_indices(keep)
                m, p, tok = m[keep], p[keep], tok[keep]
            m = torch.cat([m, m.new_ones(len(m), 1)], dim=1)
            out = tiny_model(input_ids=tok, attention_mask=m, position_ids=p, past_key_values=cache)
            rows.append(out.logits[:, -1])
            tok, p = out.logits[:, -1].argmax(-1, keepdim=True), p + 1
        logits[name] = rows
    for a, b in zip(logits["grow"], logits["cat"], strict=True):
        assert torch.equal(a, b)


def test_cache_holding_refuses_models_with_other_layer_kinds(monkeypatch, tiny_model):
    monkeypatch.setattr("trajlab.engines.kv.supports_growing", lambda m: False)
    assert growing_cache(tiny_model, 4) is None
    with pytest.raises(ValueError, match="DynamicLayer"):
        cache_holding(tiny_model, [kv(1, 2, 0)], 4)


def test_a_sliding_window_model_keeps_transformers_cache(tmp_path):
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, sliding_window=4,
    )  # fmt: skip
    assert not supports_growing(MistralForCausalLM(config))


@torch.inference_mode()
@pytest.mark.parametrize("max_tokens", [1, 20, 10_000])
def test_prefill_in_row_chunks_equals_one_forward(tiny_model, max_tokens):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 300, (5, 9), generator=g)
    mask = torch.ones(5, 9, dtype=torch.long)
    mask[1, :3] = 0
    mask[4, :7] = 0
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    ref = DynamicCache(config=tiny_model.config)
    out = tiny_model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=ref,
                     logits_to_keep=1)  # fmt: skip
    cache, logits = prefill(tiny_model, ids, mask, pos, room=3, max_tokens=max_tokens)
    # one forward when the rows fit; in chunks, matmuls of other shapes: float error only
    close = torch.equal if max_tokens >= 45 else lambda a, b: torch.allclose(a, b, atol=1e-5)
    assert close(logits, out.logits[:, -1].float())
    for a, b in zip(cache.layers, ref.layers, strict=True):
        assert a.get_seq_length() == b.get_seq_length() == 9 and a.capacity == 12
        assert close(a.keys, b.keys) and close(a.values, b.values)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("prefill_tokens", [8, 4096])
def test_engine_generations_unchanged_by_the_growing_cache(
    monkeypatch, tiny_model, tiny_tokenizer, temperature, prefill_tokens
):
    """HFEngine.generate with in-place KV (prefilled in chunks of rows, or at once) gives
    the tokens and logprobs (exactly) that the concatenating cache gives: group prefill
    copies, rows of unequal lengths leaving."""
    monkeypatch.setattr(kv_mod, "PREFILL_TOKENS", prefill_tokens)
    monkeypatch.setattr(kv_mod, "ROOM", 5)  # 24-token rows outgrow it: buffers regrow
    engine = HFEngine(tiny_model, tiny_tokenizer, max_batch_size=8)
    texts = ["Hello world", "The answer is", "a", "What is 6 times 7?"]
    prompts = [tiny_tokenizer.encode(t, add_special_tokens=False) for t in texts] * 2
    params = SamplingParams(temperature=temperature, max_new_tokens=24, seed=3)
    stop = ["JJ", "ance", "VVV", "ow", "\n", "."]  # rows of this model end at different steps
    got = engine.generate(prompts, params, stop=stop)
    monkeypatch.setattr("trajlab.engines.kv.supports_growing", lambda m: False)
    want = engine.generate(prompts, params, stop=stop)
    assert len({len(g.token_ids) for g in want}) > 1  # rows really left at different steps
    for a, b in zip(got, want, strict=True):
        assert a.token_ids == b.token_ids and a.finish_reason == b.finish_reason
        if prefill_tokens == 4096:  # one prefill forward, as before: exactly the same numbers
            assert a.logprobs == b.logprobs
        else:  # prefilled a row at a time: matmuls of another shape, float error only
            assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)


def test_engine_uses_the_growing_cache(monkeypatch, tiny_model, tiny_tokenizer):
    made = []
    original = kv_mod.growing_cache

    def spy(model, room):
        cache = original(model, room)
        made.append((room, cache))
        return cache

    monkeypatch.setattr(kv_mod, "growing_cache", spy)
    engine = HFEngine(tiny_model, tiny_tokenizer)
    ids = tiny_tokenizer.encode("Hello", add_special_tokens=False)
    engine.generate([ids], SamplingParams(temperature=0, max_new_tokens=5))
    assert [room for room, _ in made] == [5]  # min(ROOM, the token budget)
    assert all(isinstance(layer, GrowingLayer) for layer in made[0][1].layers)


def test_compact_keeps_rows_in_place_like_batch_select():
    grow, ref = GrowingLayer(room=5), DynamicLayer()
    for layer in (grow, ref):
        layer.update(*kv(6, 4, 0))
        layer.update(*kv(6, 1, 1))
    buf = grow._k
    grow.compact([0, 2, 3, 5])
    ref.batch_select_indices(torch.tensor([0, 2, 3, 5]))
    same(grow, ref)
    assert grow._k.data_ptr() == buf.data_ptr()  # no new buffer
    for layer in (grow, ref):  # decoding goes on in the room
        layer.update(*kv(4, 1, 2))
    same(grow, ref)
    with pytest.raises(ValueError, match="ascending"):
        grow.compact([1, 0])


def test_stacked_cache_is_padding_then_concatenation(tiny_model):
    layers = tiny_model.config.num_hidden_layers
    a = [kv(2, 3, i) for i in range(layers)]
    b = [kv(3, 5, 10 + i) for i in range(layers)]
    cache = stacked_cache(tiny_model, [a, b], width=6, room=4)
    for layer, (ka, va), (kb, vb) in zip(cache.layers, a, b, strict=True):
        pad_a, pad_b = torch.zeros(2, 2, 3, 4), torch.zeros(3, 2, 1, 4)
        want_k = torch.cat([torch.cat([pad_a, ka], 2), torch.cat([pad_b, kb], 2)])
        want_v = torch.cat([torch.cat([pad_a, va], 2), torch.cat([pad_b, vb], 2)])
        assert torch.equal(layer.keys, want_k) and torch.equal(layer.values, want_v)
        assert layer.capacity == 10 and layer.get_seq_length() == 6
