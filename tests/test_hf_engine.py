"""HFEngine on the tiny model: parity with model.generate, the logprob ledger, stops, seeds."""

from __future__ import annotations

import math

import pytest
import torch

from trajlab.engines import ENGINES, make_engine
from trajlab.engines.base import Engine, SamplingParams
from trajlab.engines.hf import HFEngine, _pick, candidates
from trajlab.models import token_logprobs

TEXTS = [
    "Hello world",
    "The answer is",
    "```python\nprint(",
    "a",
    "What is 6 times 7? Let's think step by step.",
]


@pytest.fixture(scope="module")
def prompts(tiny_tokenizer):
    return [tiny_tokenizer.encode(t, add_special_tokens=False) for t in TEXTS]


@pytest.fixture(scope="module")
def engine(tiny_model, tiny_tokenizer):
    return HFEngine(tiny_model, tiny_tokenizer, max_batch_size=2)


GREEDY = SamplingParams(temperature=0, max_new_tokens=16)


def _recomputed(model, prompt, gen, temperature=1.0):
    ids = torch.tensor([prompt + gen.token_ids])
    return token_logprobs(model, ids, temperature=temperature, start=len(prompt))[0, len(prompt) :]


def test_is_an_engine(engine):
    assert isinstance(engine, Engine)


def test_greedy_matches_hf_generate(engine, tiny_model, prompts):
    gens = engine.generate(prompts, GREEDY)
    for prompt, gen in zip(prompts, gens):
        ref = tiny_model.generate(
            torch.tensor([prompt]), max_new_tokens=16, do_sample=False, pad_token_id=2
        )[0, len(prompt) :].tolist()
        assert gen.token_ids == ref[: len(gen.token_ids)]
        assert gen.finish_reason in ("eos", "length")
        if gen.finish_reason == "length":
            assert len(gen.token_ids) == 16 == len(ref)


def test_batched_equals_one_at_a_time(tiny_model, tiny_tokenizer, prompts):
    batched = HFEngine(tiny_model, tiny_tokenizer, max_batch_size=8).generate(prompts, GREEDY)
    single = HFEngine(tiny_model, tiny_tokenizer, max_batch_size=1).generate(prompts, GREEDY)
    for a, b in zip(batched, single):
        assert a.token_ids == b.token_ids
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=0, max_new_tokens=12),
        SamplingParams(temperature=1.0, max_new_tokens=12, seed=0),
        SamplingParams(temperature=0.7, top_p=0.8, top_k=40, max_new_tokens=12, seed=1),
        SamplingParams(temperature=1.5, top_k=5, max_new_tokens=12, seed=2),
    ],
)
def test_logprobs_match_token_logprobs(engine, tiny_model, prompts, params):
    """The ledger invariant: sampling logprobs == logprobs recomputed on the same ids."""
    for prompt, gen in zip(prompts, engine.generate(prompts, params)):
        assert len(gen.logprobs) == len(gen.token_ids) > 0
        expected = _recomputed(tiny_model, prompt, gen, params.temperature)
        torch.testing.assert_close(torch.tensor(gen.logprobs), expected, atol=1e-4, rtol=1e-4)


def test_same_seed_same_outputs_independent_of_batching(tiny_model, tiny_tokenizer, prompts):
    params = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=10, seed=7)
    big = HFEngine(tiny_model, tiny_tokenizer, max_batch_size=8)
    a = big.generate(prompts, params)
    b = big.generate(prompts, params)
    c = HFEngine(tiny_model, tiny_tokenizer, max_batch_size=1).generate(prompts, params)
    d = big.generate(
        prompts, SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=10, seed=8)
    )
    assert [g.token_ids for g in a] == [g.token_ids for g in b] == [g.token_ids for g in c]
    assert [g.token_ids for g in a] != [g.token_ids for g in d]


def test_samples_of_one_prompt_differ(engine, prompts):
    gens = engine.generate(
        [prompts[0]] * 4, SamplingParams(temperature=1.0, max_new_tokens=8, seed=0)
    )
    assert len({tuple(g.token_ids) for g in gens}) > 1


def test_top_k_1_is_greedy(engine, prompts):
    greedy = engine.generate(prompts, GREEDY)
    top1 = engine.generate(
        prompts, SamplingParams(temperature=1.0, top_k=1, max_new_tokens=16, seed=3)
    )
    assert [g.token_ids for g in top1] == [g.token_ids for g in greedy]


def test_max_new_tokens(engine, prompts):
    engine_no_eos = HFEngine(engine.model, engine.tokenizer, eos_token_ids=[])
    for gen in engine_no_eos.generate(
        prompts, SamplingParams(temperature=1.0, max_new_tokens=5, seed=0)
    ):
        assert gen.finish_reason == "length" and len(gen.token_ids) == 5 and gen.stop_string is None


def test_eos_stops_and_is_kept(tiny_model, tiny_tokenizer, prompts):
    free = HFEngine(tiny_model, tiny_tokenizer, eos_token_ids=[]).generate(prompts[:1], GREEDY)[0]
    eos = free.token_ids[4]  # pretend the 5th greedy token is EOS
    k = free.token_ids.index(eos)
    gen = HFEngine(tiny_model, tiny_tokenizer, eos_token_ids=[eos]).generate(prompts[:1], GREEDY)[0]
    assert gen.finish_reason == "eos" and gen.stop_string is None
    assert gen.token_ids == free.token_ids[: k + 1]


def _first_completion(tokenizer, token_ids, stop):
    """Index of the first token after which the decoded new text contains `stop`."""
    for k in range(1, len(token_ids) + 1):
        if stop in tokenizer.decode(token_ids[:k]):
            return k
    return None


def test_stop_string_keeps_completing_token(tiny_model, tiny_tokenizer, prompts):
    engine = HFEngine(tiny_model, tiny_tokenizer, eos_token_ids=[])
    free = engine.generate(prompts, GREEDY)
    # A stop string from the middle of each free-running text, spanning several characters.
    stops = []
    for g in free:
        text = g.text
        stops.append(text[len(text) // 2 : len(text) // 2 + 3])
    for prompt, g, stop in zip(prompts, free, stops):
        if not stop.strip("\ufffd"):
            continue
        gen = engine.generate([prompt], GREEDY, stop=[stop])[0]
        k = _first_completion(tiny_tokenizer, g.token_ids, stop)
        assert gen.finish_reason == "stop" and gen.stop_string == stop
        assert gen.token_ids == g.token_ids[:k]
        assert stop in gen.text and stop not in tiny_tokenizer.decode(gen.token_ids[:-1])


def test_each_sequence_stops_on_its_own(tiny_model, tiny_tokenizer, prompts):
    """One stop string ends one row early; the rows still running must be unaffected."""
    engine = HFEngine(tiny_model, tiny_tokenizer, max_batch_size=8, eos_token_ids=[])
    free = engine.generate(prompts, GREEDY)
    stop = free[1].text[2:5]
    gens = engine.generate(prompts, GREEDY, stop=[stop])
    assert gens[1].finish_reason == "stop" and len(gens[1].token_ids) < 16
    for g, f in zip(gens, free):
        k = _first_completion(tiny_tokenizer, f.token_ids, stop)
        assert g.token_ids == f.token_ids[: k or len(f.token_ids)]
        assert g.logprobs == pytest.approx(f.logprobs[: len(g.logprobs)], abs=1e-5)


def test_earliest_completed_stop_string_wins(tiny_model, tiny_tokenizer, prompts):
    engine = HFEngine(tiny_model, tiny_tokenizer, eos_token_ids=[])
    free = engine.generate(prompts[:1], GREEDY)[0]
    early, late = free.text[1:3], free.text[-3:]
    gen = engine.generate(prompts[:1], GREEDY, stop=[late, early])[0]
    assert gen.stop_string == early


def test_text_is_the_decoding(engine, prompts, tiny_tokenizer):
    for gen in engine.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=8, seed=5)):
        assert gen.text == tiny_tokenizer.decode(gen.token_ids)


def test_prompt_lengths_are_checked(engine):
    with pytest.raises(ValueError, match="prompt 1 has 0 tokens"):
        engine.generate([[5, 6], []], GREEDY)
    with pytest.raises(ValueError, match="prompt 0 has 2048 tokens.*context is 2048"):
        engine.generate([[5] * 2048], GREEDY)


def test_generation_stops_at_the_context_length(tiny_model, tiny_tokenizer):
    engine = HFEngine(tiny_model, tiny_tokenizer, eos_token_ids=[])
    gen = engine.generate([[5] * 2045], SamplingParams(temperature=0, max_new_tokens=10))[0]
    assert gen.finish_reason == "length" and len(gen.token_ids) == 3


def test_make_engine(tiny_model_dir):
    assert set(ENGINES) >= {"hf", "fake"}
    engine = make_engine("hf", str(tiny_model_dir), max_batch_size=3)
    assert isinstance(engine, HFEngine) and engine.max_batch_size == 3
    with pytest.raises(ValueError, match=r"unknown engine 'vllm'.*\['fake', 'hf'\]"):
        make_engine("vllm", str(tiny_model_dir))


# -- pure sampling helpers ----------------------------------------------------------------


def test_candidates_hand_values():
    inf = float("-inf")
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    values, ids = candidates(logits)
    assert ids is None and torch.equal(values, logits)
    values, ids = candidates(logits, top_k=2)
    assert values.tolist() == [[3.0, 2.0]] and ids.tolist() == [[0, 1]]

    probs = torch.log(torch.tensor([[0.15, 0.5, 0.05, 0.3]]))

    # Sorted: 0.5, 0.3, 0.15, 0.05 (ids 1, 3, 0, 2). Mass ahead of each: 0, 0.5, 0.8, 0.95.
    def kept(**kw):
        values, ids = candidates(probs, **kw)
        return sorted(ids[torch.isfinite(values)].tolist())

    assert kept(top_p=0.45) == [1]
    assert kept(top_p=0.79) == [1, 3]
    assert kept(top_p=0.81) == [0, 1, 3]
    assert kept(top_p=1e-9) == [1]  # at least one token always survives
    # After top-k=2 the nucleus uses renormalised probs: 0.5/0.8 = 0.625 is ahead of id 3
    # (0.5 without top-k).
    assert kept(top_p=0.55) == [1, 3]
    assert kept(top_k=2, top_p=0.55) == [1]
    assert kept(top_k=2, top_p=0.63) == [1, 3]
    assert candidates(probs, top_k=3)[0].shape == (1, 3)
    assert inf not in candidates(probs, top_k=2)[0].tolist()[0]


# Over 3000 tokens the top-p=0.9 nucleus lies within the top 256 (scale 8), within the
# top 2048 (scale 1.5), or needs the full sort (scale 0.5): every path of _sorted_head.
@pytest.mark.parametrize("scale", [0.5, 1.5, 8.0])
@pytest.mark.parametrize("top_k", [0, 300])
def test_candidates_match_a_full_sort(scale, top_k):
    logits = torch.randn(3, 3000, generator=torch.Generator().manual_seed(0)) * scale
    values, ids = candidates(logits, top_k=top_k, top_p=0.9)
    for row in range(3):
        ranked = logits[row].sort(descending=True)
        vals, order = ranked.values, ranked.indices
        if top_k:
            vals, order = vals[:top_k], order[:top_k]
        probs = vals.softmax(-1)
        n = int(((probs.cumsum(-1) - probs) < 0.9).sum())
        assert sorted(ids[row][torch.isfinite(values[row])].tolist()) == sorted(order[:n].tolist())


def test_pick_samples_the_tempered_distribution():
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1]])).repeat(4000, 1)  # [N, 3]
    params = SamplingParams(temperature=2.0, seed=0)
    rngs = [torch.Generator().manual_seed(i) for i in range(4000)]
    tokens, logprobs = _pick(logits, params, rngs)
    tempered = torch.tensor([0.6, 0.3, 0.1]).sqrt()
    tempered = tempered / tempered.sum()
    freq = torch.bincount(tokens, minlength=3).float() / 4000
    torch.testing.assert_close(freq, tempered, atol=0.03, rtol=0)
    torch.testing.assert_close(logprobs, tempered.log()[tokens])
    # top-p 0.5 leaves only the most likely token, whatever the draw.
    tokens, logprobs = _pick(logits[:50], SamplingParams(temperature=1.0, top_p=0.5), rngs[:50])
    assert set(tokens.tolist()) == {0}
    # top-k 2 after tempering: p ~ [sqrt .6, sqrt .3] renormalised; token 2 never appears.
    tokens, _ = _pick(logits, SamplingParams(temperature=2.0, top_k=2), rngs)
    two = torch.tensor([0.6, 0.3]).sqrt()
    freq = torch.bincount(tokens, minlength=3).float() / 4000
    torch.testing.assert_close(
        freq, torch.cat([two / two.sum(), torch.zeros(1)]), atol=0.03, rtol=0
    )
    # Greedy: argmax, logprob at temperature 1.
    tokens, logprobs = _pick(logits[:1], SamplingParams(temperature=0), [None])
    assert tokens.tolist() == [0] and logprobs.item() == pytest.approx(math.log(0.6), abs=1e-6)


# -- shared prompt prefill and the bf16 decode copy -----------------------------------


def test_shared_prompt_prefill_gives_the_outputs_of_separate_prefills(
    tiny_model, tiny_tokenizer, prompts
):
    # A GRPO-shaped batch: each prompt repeated; repeats share one prefill when batched
    # together, and must sample exactly what they sample when prefilled on their own.
    group = [p for p in prompts[:3] for _ in range(3)]
    params = SamplingParams(temperature=1.0, max_new_tokens=8, seed=11)
    shared = HFEngine(tiny_model, tiny_tokenizer, max_batch_size=16).generate(group, params)
    alone = HFEngine(tiny_model, tiny_tokenizer, max_batch_size=1).generate(group, params)
    assert [g.token_ids for g in shared] == [g.token_ids for g in alone]
    for a, b in zip(shared, alone):
        torch.testing.assert_close(a.logprobs, b.logprobs, atol=1e-4, rtol=0)
    for k, (prompt, gen) in enumerate(zip(group, shared)):
        want = _recomputed(tiny_model, prompt, gen).tolist()
        torch.testing.assert_close(gen.logprobs, want, atol=1e-4, rtol=0, msg=f"row {k}")


def test_bf16_decode_copy_follows_the_policy_weights(tiny_model_dir, tiny_tokenizer, prompts):
    from trajlab.models import load_model

    policy = load_model(tiny_model_dir)  # our own copy: this test changes its weights
    engine = HFEngine(policy, tiny_tokenizer, max_batch_size=8, decode_dtype="bfloat16")
    assert engine.decode_dtype == torch.bfloat16
    assert next(policy.parameters()).dtype == torch.float32  # the policy is untouched
    before = engine.generate(prompts, GREEDY)
    copy = engine._decoder.copy
    assert all(p.dtype == torch.bfloat16 for p in copy.parameters())
    assert all(not b.is_floating_point() or b.dtype != torch.bfloat16 for b in copy.buffers())

    # An in-place update of the policy (what an optimizer step does) reaches the copy.
    with torch.no_grad():
        for p in policy.parameters():
            p.mul_(-1.5)
    after = engine.generate(prompts, GREEDY)
    assert engine._decoder.copy is copy  # refreshed in place, not rebuilt
    for dst, src in zip(copy.parameters(), policy.parameters()):
        torch.testing.assert_close(dst, src.to(torch.bfloat16))
    assert [g.token_ids for g in before] != [g.token_ids for g in after]
    fresh = HFEngine(policy, tiny_tokenizer, max_batch_size=8, decode_dtype="bfloat16")
    assert [g.token_ids for g in fresh.generate(prompts, GREEDY)] == [g.token_ids for g in after]


def test_released_decode_copy_is_rebuilt_from_the_current_weights(
    tiny_model_dir, tiny_tokenizer, prompts
):
    """What the trainer does around an update: free the copy, change the weights, decode."""
    from trajlab.models import load_model

    policy = load_model(tiny_model_dir)
    engine = HFEngine(policy, tiny_tokenizer, max_batch_size=8, decode_dtype="bfloat16")
    engine.release_decode_copy()  # before any copy exists: nothing to free
    engine.generate(prompts, GREEDY)
    copy = engine._decoder.copy
    engine.release_decode_copy()
    assert all(p.numel() == 0 for p in copy.parameters())  # its storage is gone
    with torch.no_grad():
        for p in policy.parameters():
            p.mul_(-1.5)
    after = engine.generate(prompts, GREEDY)
    assert engine._decoder.copy is copy  # the same module, refilled
    for dst, src in zip(copy.parameters(), policy.parameters(), strict=True):
        assert dst.dtype == torch.bfloat16
        torch.testing.assert_close(dst, src.to(torch.bfloat16))
    fresh = HFEngine(policy, tiny_tokenizer, max_batch_size=8, decode_dtype="bfloat16")
    assert [g.token_ids for g in fresh.generate(prompts, GREEDY)] == [g.token_ids for g in after]
    same = HFEngine(policy, tiny_tokenizer, decode_dtype="float32")
    same.release_decode_copy()  # no copy: the policy itself is never freed
    assert all(p.numel() > 0 for p in policy.parameters())


def test_decode_dtype_is_checked(tiny_model, tiny_tokenizer):
    with pytest.raises(ValueError, match="decode_dtype must be one of"):
        HFEngine(tiny_model, tiny_tokenizer, decode_dtype="fp8")
    same = HFEngine(tiny_model, tiny_tokenizer, decode_dtype="float32")
    with same._decoder.use() as m:
        assert m is tiny_model  # no copy when the dtype already matches


def _lora_policy(tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    from trajlab.models import load_model

    policy = get_peft_model(
        load_model(tiny_model_dir),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"]),
    )
    with torch.no_grad():  # a trained adapter: B starts at zero, which would merge nothing
        g = torch.Generator().manual_seed(0)
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return policy


def test_lora_policy_decodes_merged_and_comes_back_unmerged(
    tiny_model_dir, tiny_tokenizer, prompts
):
    policy = _lora_policy(tiny_model_dir)
    weights = {k: v.clone() for k, v in policy.state_dict().items()}
    engine = HFEngine(policy, tiny_tokenizer, max_batch_size=8)
    merges = []
    real_merge = policy.merge_adapter
    policy.merge_adapter = lambda *a, **k: merges.append(1) or real_merge(*a, **k)
    params = SamplingParams(temperature=1.0, max_new_tokens=12, seed=3)
    gens = engine.generate(prompts, params)
    assert merges == [1]  # one merge per generate call, not per step
    # Unmerged afterwards: adapters active again, every weight back within float rounding.
    assert not any(getattr(m, "merged", False) for m in policy.modules())
    for k, v in policy.state_dict().items():
        torch.testing.assert_close(v, weights[k], atol=1e-6, rtol=1e-6, msg=k)
    # The merged decode samples what the unmerged (adapter-on) policy scores.
    for k, (prompt, gen) in enumerate(zip(prompts, gens)):
        want = _recomputed(policy, prompt, gen).tolist()
        torch.testing.assert_close(gen.logprobs, want, atol=1e-4, rtol=0, msg=f"row {k}")
    # ...and differs from the base model's own samples (the adapter is really applied).
    with policy.disable_adapter():
        base = HFEngine(policy.get_base_model(), tiny_tokenizer).generate(prompts, params)
    assert [g.token_ids for g in base] != [g.token_ids for g in gens]


def test_lora_policy_bf16_copy_is_merged_and_follows_the_adapter(
    tiny_model_dir, tiny_tokenizer, prompts
):
    policy = _lora_policy(tiny_model_dir)
    engine = HFEngine(policy, tiny_tokenizer, max_batch_size=8, decode_dtype="bfloat16")
    before = engine.generate(prompts, GREEDY)
    copy = engine._decoder.copy
    assert not any("lora" in n for n, _ in copy.named_parameters())  # plain merged weights
    assert all(p.dtype == torch.bfloat16 for p in copy.parameters())
    with torch.no_grad():  # an optimizer step on the adapter only
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.mul_(-3.0)
    weights = {k: v.clone() for k, v in policy.state_dict().items()}
    after = engine.generate(prompts, GREEDY)
    assert engine._decoder.copy is copy  # refreshed in place from the new adapter
    assert [g.token_ids for g in before] != [g.token_ids for g in after]
    for k, v in policy.state_dict().items():  # the refresh's merge was undone
        torch.testing.assert_close(v, weights[k], atol=1e-6, rtol=1e-6, msg=k)
    versions = list(engine._decoder.versions)
    engine.generate(prompts, GREEDY)
    assert engine._decoder.versions == versions  # no spurious refresh after an unmerge
    import copy as copy_module

    merged = copy_module.deepcopy(policy).merge_and_unload()
    rebuilt = dict(engine._decoder.copy.named_parameters())
    for name, p in merged.named_parameters():
        torch.testing.assert_close(rebuilt[name], p.detach().to(torch.bfloat16), msg=name)
