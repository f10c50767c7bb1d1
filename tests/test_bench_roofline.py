"""Unit tests for the FLOP counting of benchmarks/bench_roofline.py (no timing is asserted).

Hand-computed values for the tiny test model, and a cross-check against torch's own
FLOP counter (torch.utils.flop_counter) running the real model.
"""

from __future__ import annotations

import pytest
import torch
from bench_helpers import load_benchmark

rl = load_benchmark("bench_roofline")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from trajlab.models import load_model
    from trajlab.testing import make_tiny_model

    path = make_tiny_model(tmp_path_factory.mktemp("tiny"))  # hidden 64, 2 layers, 4/2 heads
    return load_model(path)


def test_shape_of_tiny_model(tiny):
    s = rl.ModelShape.from_config(tiny.config)
    V = tiny.config.vocab_size
    assert (s.layers, s.hidden, s.attn, s.kv, s.intermediate, s.vocab) == (2, 64, 64, 32, 128, V)
    # q, o: 64*64 each; k, v: 64*32 each; gate, up, down: 64*128 each
    assert s.layer_params == 2 * 4096 + 2 * 2048 + 3 * 8192 == 36864
    assert s.head_params == 64 * V
    # the same as the weights of the model's Linear layers
    layer0 = sum(
        m.weight.numel() for m in tiny.model.layers[0].modules() if isinstance(m, torch.nn.Linear)
    )
    assert layer0 == s.layer_params
    assert tiny.lm_head.weight.numel() == s.head_params
    calls = sum(c for _, _, c in s.step_gemms())
    assert calls == 7 * 2 + 1
    assert sum(k * n * c for k, n, c in s.step_gemms()) == 2 * 36864 + 64 * V


def test_causal_keys():
    assert rl.causal_keys(0, 3) == 1 + 2 + 3
    assert rl.causal_keys(5, 2) == 6 + 7
    assert rl.causal_keys(4, 0) == 0


def test_generation_and_training_flops_by_hand(tiny):
    s = rl.ModelShape.from_config(tiny.config)
    V = s.vocab
    prefill, decode = rl.generation_flops(s, prompt_len=3, new_tokens=2)
    # prefill: 3 positions through 2 layers, 1 LM-head row, 1+2+3 = 6 attended pairs
    assert prefill == 2 * 2 * 36864 * 3 + 2 * 64 * V * 1 + 4 * 2 * 64 * 6
    # one decode step (the second token): 1 position attending to 4 keys
    assert decode == 2 * 2 * 36864 + 2 * 64 * V + 4 * 2 * 64 * 4
    assert rl.generation_flops(s, 3, 1)[1] == 0  # one new token comes from the prefill alone
    # training [2, 4], LM head from position 2: 2 * 2 rows, 2 * (1+2+3+4) pairs, x3
    fwd = 2 * 2 * 36864 * 8 + 2 * 64 * V * 4 + 4 * 2 * 64 * 20
    assert rl.training_flops(s, batch=2, seq=4, start=2) == 3 * fwd
    # start 0 still skips position 0, which has no prefix
    assert rl.training_flops(s, 2, 4, 0) == rl.training_flops(s, 2, 4, 1)


def test_formula_matches_torch_flop_counter(tiny):
    """torch counts every matmul the real model runs; attention over all T*T pairs (no causal skip)."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import DynamicCache

    s = rl.ModelShape.from_config(tiny.config)
    T = 6
    ids = torch.arange(3, 3 + T)[None]
    # torch's counter does not see CPU's fused SDPA kernel; eager attention is plain matmuls.
    tiny.set_attn_implementation("eager")
    with torch.no_grad():
        counter = FlopCounterMode(display=False)
        with counter:
            tiny(input_ids=ids)  # logits for every position
        assert counter.get_total_flops() == rl.forward_flops(s, T, T, T * T)

        cache = DynamicCache(config=tiny.config)
        tiny(input_ids=ids, past_key_values=cache, use_cache=True)
        counter = FlopCounterMode(display=False)
        with counter:  # one decode step: one query against T + 1 keys
            tiny(input_ids=ids[:, :1], past_key_values=cache, use_cache=True)
        assert counter.get_total_flops() == rl.forward_flops(s, 1, 1, T + 1)
    tiny.set_attn_implementation("sdpa")


def test_module_timer_counts_calls(tiny):
    timer = rl.ModuleTimer({"layers": tiny.get_decoder(), "lm_head": tiny.get_output_embeddings()})
    try:
        with torch.no_grad():
            tiny(input_ids=torch.tensor([[3, 4, 5]]))
            tiny(input_ids=torch.tensor([[3, 4]]))
            tiny(input_ids=torch.tensor([[6]]))  # a one-position call: not a prefill
        assert timer.calls == {"layers": 3, "lm_head": 3}
        assert timer.seconds["layers"] > timer.prefill_seconds["layers"] > 0
        assert timer.prefill_seconds["lm_head"] == 0  # its input is hidden states, not ids
        timer.reset()
        assert timer.calls == {"layers": 0, "lm_head": 0}
    finally:
        timer.remove()
    with torch.no_grad():
        tiny(input_ids=torch.tensor([[3]]))
    assert timer.calls["layers"] == 0  # hooks are gone


def test_gemm_gflops_runs():
    for dtype in (torch.float32, torch.bfloat16):
        median, best = rl.gemm_gflops(4, 8, 16, dtype, reps=3)
        assert 0 < median <= best


def test_rep_times_loops_short_calls():
    calls = []
    times = rl.rep_times(lambda: calls.append(1), reps=2, min_s=0.001)
    assert len(times) == 2 and all(t > 0 for t in times)
    assert len(calls) > 10  # a trivial call is looped, not timed once


def test_generation_and_training_benchmarks_run_on_tiny_model(tiny, tmp_path):
    """The measuring functions end to end on the tiny model: FLOPs follow from the token counts."""
    from trajlab.engines.hf import HFEngine
    from trajlab.models import load_tokenizer

    s = rl.ModelShape.from_config(tiny.config)
    tok = load_tokenizer(tiny.name_or_path)
    engine = HFEngine(tiny, tok, max_batch_size=4)
    g = rl.bench_generation(engine, s, batch=3, new_tokens=5)
    assert g["batch"] == 3 and g["dtype"] == "float32"
    assert 3 <= g["new_tokens"] <= 15
    prompts = rl.chat_prompts(tok, 3)
    assert g["prompt_tokens"] == sum(len(p) for p in prompts)
    assert g["flops_prefill"] == sum(rl.generation_flops(s, len(p), 1)[0] for p in prompts)
    assert g["flops_decode"] > 0 or g["new_tokens"] == 3
    assert g["layers_s"] > g["prefill_s"] > 0 and g["lm_head_s"] > 0

    # fp32 weights decoding with a bf16 copy: the copy is what runs, and what is timed
    engine = HFEngine(tiny, tok, max_batch_size=4, decode_dtype="bfloat16")
    g = rl.bench_generation(engine, s, batch=2, new_tokens=3)
    assert (g["weights"], g["dtype"]) == ("float32", "bfloat16")
    assert g["layers_s"] > 0 and g["lm_head_s"] > 0

    t = rl.bench_training(tiny, s, batch=2, seq=8, start=3, autocast="none", reps=1)
    assert t["flops"] == rl.training_flops(s, 2, 8, 3)
    assert t["forward_s"] > 0 and t["backward_s"] > 0
    assert t["bwd_lm_head_recompute_s"] > 0  # the checkpointed LM head runs again in backward
    assert not tiny.training  # handed back in eval mode
