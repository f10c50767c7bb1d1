"""Test factories: tiny random Llama models with a real tokenizer, built offline in about a second.

    path = make_tiny_model(tmp_path / "tiny")
    model, tok = load_model(path), load_tokenizer(path)

The model is a LlamaForCausalLM with random weights (hidden 64, 2 layers by default),
so its text is gibberish, but every code path that runs the default model (KV-cache
decoding, chat templates, logprob recomputation, saving and loading) runs on it in
milliseconds. The tokenizer is a byte-level BPE trained on a small embedded corpus
(English, digits, Python, markdown fences, tool tags), so any string, including
emoji and CJK, encodes and decodes losslessly. It carries SmolLM2's special tokens
(`<|endoftext|>`, `<|im_start|>`, `<|im_end|>` as ids 0, 1, 2) and a ChatML chat
template of the same shape as SmolLM2's: `<|im_start|>role\\n...<|im_end|>\\n`.

What it does not do: produce a model that knows anything. Tests that need learning
train the tiny model themselves.
"""

from __future__ import annotations

from pathlib import Path

import torch

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2, as in SmolLM2

# ChatML, as SmolLM2 writes it, without SmolLM2's default system prompt.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# ChatML plus a `tools` list, for tests of native chat-template tool calls: the tool
# schemas go into the system turn, and calls/results use <tool_call>/<tool_response> tags.
CHATML_TOOLS_TEMPLATE = (
    "{% if tools %}{{ '<|im_start|>system\\n' }}"
    "{% if messages and messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\\n\\n' }}{% endif %}"
    '{{ \'You may call these tools. Write each call as <tool_call>{"name": ..., "arguments": {...}}</tool_call>.\\n<tools>\\n\' }}'
    "{% for tool in tools %}{{ tool | tojson }}{{ '\\n' }}{% endfor %}"
    "{{ '</tools><|im_end|>\\n' }}{% endif %}"
    "{% for message in messages %}"
    "{% if not (tools and loop.first and message['role'] == 'system') %}"
    "{% if message['role'] == 'tool' %}"
    "{{ '<|im_start|>user\\n<tool_response>\\n' + message['content'] + '\\n</tool_response><|im_end|>\\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + (message['content'] or '') }}"
    "{% for call in message.get('tool_calls') or [] %}"
    "{{ '<tool_call>\\n' + {'name': call['function']['name'], 'arguments': call['function']['arguments']} | tojson + '\\n</tool_call>' }}"
    "{% endfor %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endif %}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Enough text that the BPE learns merges for the words, numbers and syntax tests use.
_CORPUS = """\
The quick brown fox jumps over the lazy dog. A model writes code, runs it, and reads the output.
Question: Natalia sold clips to 48 of her friends in April, and then she sold half as many clips
in May. How many clips did Natalia sell altogether in April and May? Let's think step by step.
She sold 48 / 2 = 24 clips in May, so 48 + 24 = 72 clips in total. The answer is \\boxed{72}.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 12 24 42 100 256 1000 3.14159 -7 1e-5 2**10 = 1024.
```python
import math
def solve(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total
print(solve(10), math.sqrt(2))
```
```output
285 1.4142135623730951
```
<python>print(6 * 7)</python> <result>42</result> <answer>42</answer>
<search>capital of France</search> <information>Paris is the capital of France.</information>
<tool_call>{"name": "python", "arguments": {"code": "print(1 + 1)"}}</tool_call>
# Markdown heading
- a bullet, **bold**, _italic_, `inline code`, [a link](http://example.com).
| col | value |
|-----|-------|
| x   | 3     |
Therefore, the final answer is 17. We verify: 17 * 3 = 51, and 51 - 34 = 17.
<|im_start|>user
What is 6 times 7?<|im_end|>
<|im_start|>assistant
6 times 7 is 42.<|im_end|>
"""


def train_tiny_tokenizer(vocab_size: int = 512):
    """A byte-level BPE (lossless on any string) wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must be >= {256 + len(SPECIAL_TOKENS)} (bytes + specials)")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS.splitlines(keepends=True) * 4, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHATML_TEMPLATE
    return tok


def make_tiny_model(
    path: str | Path,
    vocab_size: int = 512,
    hidden: int = 64,
    layers: int = 2,
    seed: int = 0,
    heads: int = 4,
    kv_heads: int = 2,
    max_positions: int = 2048,
    init_std: float = 0.1,
    chat_template: str | None = None,
) -> Path:
    """Build and save a tiny random LlamaForCausalLM plus tokenizer at `path`; return the path.

    init_std: weight init scale. 0.1 (larger than Llama's 0.02) makes next-token
    distributions peaked enough that greedy decoding has clear winners, so tests that
    compare two decoders are not decided by float noise between near-tied logits.
    chat_template: overrides CHATML_TEMPLATE (e.g. CHATML_TOOLS_TEMPLATE).
    """
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    path = Path(path)
    tok = train_tiny_tokenizer(vocab_size)
    if chat_template is not None:
        tok.chat_template = chat_template
    eos, bos = tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|im_start|>")
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        initializer_range=init_std,
        tie_word_embeddings=True,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    with torch.random.fork_rng(devices=[]):  # don't disturb the caller's global RNG
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=bos, eos_token_id=eos, pad_token_id=eos)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
