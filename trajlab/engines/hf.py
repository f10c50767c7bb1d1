"""The Hugging Face engine: batched sampling with a KV cache, in our own decode loop.

    engine = HFEngine.from_spec("default", max_batch_size=16)
    gens = engine.generate([prompt_ids, ...], SamplingParams(temperature=0.7, seed=1), stop=["```\\n"])

How it works, per batch of at most `max_batch_size` prompts:
  1. prefill: prompts are left-padded into one [B, L] batch (position ids come from the
     attention mask, so padding does not shift positions) and run once, filling the KV cache;
  2. decode: one token per step for every live sequence. Each step picks a token
     (greedy argmax, or a sample from the temperature/top-k/top-p filtered distribution),
     records its logprob under the full-vocabulary softmax(logits / temperature), and
     checks that sequence's own end: EOS (kept in the output), the first completed stop
     string (the completing token is kept), or max_new_tokens (capped so prompt plus
     output fit the model's context);
  3. finished sequences leave the batch: their rows are dropped from the KV cache, the
     attention mask and the position ids, so later steps only compute live rows.

Sampling is reproducible: each prompt gets its own torch.Generator seeded from
(params.seed, prompt index), so a given seed gives the same outputs on every call,
whatever the batch size or which sequences finish first (up to float differences
between batch shapes, which can flip a near-tie).

Why not `model.generate`: we need per-sequence stop strings that keep the completing
token, per-token logprobs in our convention (engines/base.py) and, later, control over
scheduling. Under greedy decoding this loop reproduces `model.generate` token for token
(tested).

Speed (docs/performance.md has the measurements):
  * identical prompts in a batch (a GRPO group's samples) are prefilled once and their KV
    rows copied to every sample;
  * the KV cache is written in place, into buffers with room to grow (trajlab/engines/
    kv.py), instead of transformers' concatenation that copies every layer's cache at every
    step; prompts are prefilled a few rows at a time (at most 4096 tokens per forward);
  * `decode_dtype="bfloat16"` decodes with a bf16 copy of the weights (native bf16 matmuls, half
    the bytes per step), refreshed whenever the policy's parameters change in place;
  * stop strings are found by decoding only the tail of a sequence that can hold a newly
    completed one (see _window), so the check stays linear in the output length.

Continuous batching (rows joining and leaving a running batch, a returning row prefilling
only what its cached prefix does not cover) is `stream()`: trajlab/engines/stream.py.
What `generate` does not do: prefix caching across calls, or trimming left padding that
no live row needs any more.
"""

from __future__ import annotations

import contextlib
import copy
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from trajlab.engines.base import Generation, SamplingParams
from trajlab.memory import trim_heap
from trajlab.models import cache_arg, is_peft

if TYPE_CHECKING:
    from trajlab.engines.stream import DecodeStream

_GOLDEN = 0x9E3779B97F4A7C15  # spreads (seed, index) pairs over the 64-bit seed space


@dataclass
class _Sequence:
    """Decoding state of one prompt."""

    index: int  # position in the caller's prompt list
    rng: torch.Generator | None
    budget: int  # max new tokens for this sequence
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str | None = None
    stop_string: str | None = None


class HFEngine:
    """Engine over a transformers causal LM and its tokenizer (see module docstring)."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        max_batch_size: int = 16,
        eos_token_ids: Sequence[int] | None = None,
        decode_dtype: torch.dtype | str | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.model = model
        self._decoder = _DecodeWeights(model, _as_dtype(decode_dtype))
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.eos_token_ids = set(
            eos_token_ids if eos_token_ids is not None else _eos_ids(model, tokenizer)
        )
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    @classmethod
    def from_spec(
        cls,
        model_spec: str,
        dtype: torch.dtype | str = torch.float32,
        device: str = "cpu",
        **kw,
    ) -> HFEngine:
        """Load a model spec (HF dir, .gguf, 'default'; see trajlab.models) into an engine."""
        from trajlab.models import load_model, load_tokenizer

        return cls(
            load_model(model_spec, dtype=dtype, device=device), load_tokenizer(model_spec), **kw
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def decode_dtype(self) -> torch.dtype:
        """The dtype the decode loop computes in (the model's own unless decode_dtype was set)."""
        return self._decoder.dtype

    @torch.inference_mode()
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams,
        stop: Sequence[str] = (),
        on_tokens: Callable[[int], None] | None = None,
    ) -> list[Generation]:
        context = getattr(self.model.config, "max_position_embeddings", None) or 1 << 62
        for i, p in enumerate(prompts):
            if not 0 < len(p) < context:
                raise ValueError(
                    f"prompt {i} has {len(p)} tokens; prompts need 1 to {context - 1} tokens "
                    f"(the model's context is {context}). Truncate it or stop the trajectory."
                )
        base_seed = params.seed if params.seed is not None else secrets.randbits(63)
        seqs = [
            _Sequence(
                index=i,
                rng=None if params.greedy else _rng(base_seed, i),
                budget=min(params.max_new_tokens, context - len(p)),  # never run past the context
            )
            for i, p in enumerate(prompts)
        ]
        # Batch prompts of similar length together so little compute goes to padding;
        # identical prompts (a GRPO group's samples) land next to each other and share
        # one prefill.
        order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), tuple(prompts[i])))
        with self._decoder.use() as model:
            for s in range(0, len(order), self.max_batch_size):
                chunk = [seqs[i] for i in order[s : s + self.max_batch_size]]
                prompt_ids = [tuple(prompts[q.index]) for q in chunk]
                self._decode_batch(model, prompt_ids, chunk, params, list(stop), on_tokens)
        trim_heap()  # the batches' KV caches are freed: give their pages back
        return [self._to_generation(q) for q in seqs]

    def release_decode_copy(self) -> None:
        """Free the bf16 decode copy's weights until the next generate call rebuilds them
        from the policy (the trainer calls this before an update, whose peak the copy
        would otherwise add to). A no-op without a copy."""
        self._decoder.release()

    @property
    def can_stream(self) -> bool:
        """Whether `stream` works for this model (trajlab.engines.stream.supports_stream)."""
        from trajlab.engines.stream import supports_stream

        return supports_stream(self.model)

    @contextlib.contextmanager
    def stream(
        self,
        params: SamplingParams,
        on_tokens: Callable[[int], None] | None = None,
        max_rows: int | None = None,
    ) -> Iterator[DecodeStream]:
        """A continuous-batching decode stream over the current weights (at most
        `max_rows`, default max_batch_size, rows at once); see trajlab.engines.stream."""
        from trajlab.engines.stream import DecodeStream

        with self._decoder.use() as model:
            yield DecodeStream(self, model, params, max_rows or self.max_batch_size, on_tokens)

    # -- the decode loop ---------------------------------------------------------

    def _decode_batch(
        self,
        model: torch.nn.Module,
        prompts: list[tuple[int, ...]],
        seqs: list[_Sequence],
        params: SamplingParams,
        stop: list[str],
        on_tokens: Callable[[int], None] | None = None,
    ) -> None:
        from transformers import DynamicCache

        from trajlab.engines.kv import ROOM, compact, prefill, supports_growing

        unique = list(dict.fromkeys(prompts))  # distinct prompts, in first-seen order
        row_of = {p: u for u, p in enumerate(unique)}
        expand = torch.tensor([row_of[p] for p in prompts], device=self.device)  # [B]
        ids, mask = self._left_pad(unique)  # [U, L], [U, L]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # [U, L]
        # KV written in place into buffers with room to grow, prefilled a few rows at a
        # time (trajlab/engines/kv.py)
        growing = supports_growing(model)
        if growing:
            room = min(ROOM, max(q.budget for q in seqs))
            cache, logits = prefill(model, ids, mask, positions, room=room)
        else:
            cache = DynamicCache(config=model.config)
            out = model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                **{cache_arg(model): cache},
                logits_to_keep=1,
            )
            logits = out.logits[:, -1].float()  # [U, V]
        if len(unique) < len(prompts):  # copy each shared prompt's KV rows to its samples
            cache.batch_select_indices(expand)
            logits, mask, positions = logits[expand], mask[expand], positions[expand]  # [B, ...]
        next_pos = positions[:, -1] + 1  # [B]
        live = list(seqs)
        while True:
            tokens, logprobs = _pick(logits, params, [q.rng for q in live])  # [b], [b]
            if on_tokens is not None:
                on_tokens(len(live))
            picked = zip(live, tokens.tolist(), logprobs.tolist())
            keep = [j for j, (q, t, lp) in enumerate(picked) if not self._append(q, t, lp, stop)]
            if not keep:
                return
            if len(keep) < len(live):  # drop finished rows everywhere, including the KV cache
                idx = torch.tensor(keep, device=mask.device)
                if growing:  # rows move down inside their buffers (no new allocation)
                    compact(cache, keep)
                else:
                    cache.batch_select_indices(idx)
                mask, next_pos, tokens = mask[idx], next_pos[idx], tokens[idx]
                live = [live[j] for j in keep]
            mask = torch.cat([mask, mask.new_ones(len(live), 1)], dim=1)  # [b, L + step]
            out = model(
                input_ids=tokens[:, None],
                attention_mask=mask,
                position_ids=next_pos[:, None],
                use_cache=True,
                **{cache_arg(model): cache},
            )
            logits = out.logits[:, -1].float()  # [b, V]
            next_pos = next_pos + 1

    def _left_pad(self, prompts: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        L = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), L), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), L), dtype=torch.long)
        for b, p in enumerate(prompts):
            ids[b, L - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[b, L - len(p) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def _append(self, q: _Sequence, token: int, logprob: float, stop: list[str]) -> bool:
        """Record one sampled token; return True if the sequence is now finished."""
        q.token_ids.append(token)
        q.logprobs.append(logprob)
        if token in self.eos_token_ids:
            q.finish_reason = "eos"
        elif stop and (hit := _first_stop(self._decode(q.token_ids[-_window(stop) :]), stop)):
            q.finish_reason, q.stop_string = "stop", hit
        elif len(q.token_ids) >= q.budget:
            q.finish_reason = "length"
        return q.finish_reason is not None

    def _decode(self, token_ids: list[int]) -> str:
        # Special tokens stay in the text, so stop strings such as "<|im_end|>" are seen.
        return self.tokenizer.decode(
            token_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False
        )

    def _to_generation(self, q: _Sequence) -> Generation:
        return Generation(
            token_ids=q.token_ids,
            logprobs=q.logprobs,
            finish_reason=q.finish_reason or "length",
            stop_string=q.stop_string,
            text=self._decode(q.token_ids),
        )


class _DecodeWeights:
    """The module the decode loop runs: the policy itself, or a copy in another dtype.

    A bf16 copy lets decoding use the CPU's bf16 matmul units (AMX or AVX512-BF16) and halves the bytes
    of weights read per step, while the policy keeps fp32 master weights for training.
    Only parameters are cast; buffers (RoPE frequencies) stay as they are. The copy is
    refreshed before a generate call whenever the policy's parameters changed since the
    last copy, which torch's in-place version counters tell us (an optimizer step bumps
    them), so the engine always samples from the current weights without the trainer
    having to remember a sync call.

    A LoRA policy (peft) decodes with its adapter folded into the weights: the extra
    low-rank matmuls and peft's per-module Python cost 24 % of decode time on the default
    model (docs/training.md). Without a copy, the adapter is merged in place for one
    generate call and unmerged after it (peft's merge_adapter / unmerge_adapter; the
    weights come back within float rounding, tested); a copy holds the merged weights
    (built once, then refreshed in place the same way, so no second fp32 model exists).
    """

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype | None) -> None:
        self.model = model
        own = next(model.parameters()).dtype
        self.dtype = dtype or own
        self.copy: torch.nn.Module | None = None
        self.versions: list[int] = []
        self.needs_copy = self.dtype != own
        self.lora = is_peft(model)  # a LoRA adapter: decoded merged

    @contextlib.contextmanager
    def use(self) -> Iterator[torch.nn.Module]:
        """The module to decode with, for the duration of one generate call."""
        if self.needs_copy:
            yield self._current_copy()
        elif self.lora:
            with _lora_merged(self.model):
                yield self.model
        else:
            yield self.model

    def release(self) -> None:
        """Free the copy's parameter storage; the next use() allocates and fills it again."""
        if self.copy is None:
            return
        for p in self.copy.parameters():
            p.data = p.data.new_empty(0)
        self.versions = []

    def _current_copy(self) -> torch.nn.Module:
        versions = [p._version for p in self.model.parameters()]
        if self.copy is not None and versions == self.versions:
            return self.copy
        with torch.no_grad():
            if self.copy is None:  # a merged copy has the base model's plain parameters
                src = copy.deepcopy(self.model)
                self.copy = src.merge_and_unload() if self.lora else src
                for p in self.copy.parameters():
                    p.requires_grad_(False)
                    p.data = p.data.to(self.dtype)
                self.copy.eval()
            elif self.lora:  # refreshed in place from the weights with the adapter merged
                with _lora_merged(self.model):
                    merged = _base_weights(self.model)
                    for name, dst in self.copy.named_parameters():
                        _refill(dst, merged[name])
            else:
                for dst, src in zip(self.copy.parameters(), self.model.parameters(), strict=True):
                    _refill(dst, src)
        self.versions = [p._version for p in self.model.parameters()]  # after any (un)merge
        return self.copy


def _refill(dst: torch.nn.Parameter, src: torch.Tensor) -> None:
    """Copy `src` into `dst` in dst's dtype, allocating it first if it was released."""
    if dst.shape != src.shape:
        dst.data = torch.empty_like(src, dtype=dst.dtype)
    dst.copy_(src)


def _base_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A peft model's base parameters under the names of its merged, unloaded model
    (`...q_proj.base_layer.weight` -> `...q_proj.weight`), adapter parameters left out."""
    return {
        name.replace(".base_layer", ""): p
        for name, p in model.get_base_model().named_parameters()
        if "lora_" not in name
    }


@contextlib.contextmanager
def _lora_merged(model: torch.nn.Module) -> Iterator[None]:
    with torch.inference_mode(False), torch.no_grad():
        model.merge_adapter()
    try:
        yield
    finally:
        with torch.inference_mode(False), torch.no_grad():
            model.unmerge_adapter()


def _as_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    from trajlab.models import as_dtype

    return None if dtype is None else as_dtype(dtype, "decode_dtype")


# -- pure helpers -------------------------------------------------------------------


def _rng(base_seed: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed((base_seed * _GOLDEN + index) % (1 << 63))


def _eos_ids(model: torch.nn.Module, tokenizer) -> list[int]:
    """EOS ids from the generation config (may be a list) and the tokenizer."""
    ids: list[int] = []
    gen = getattr(model, "generation_config", None)
    for source in (getattr(gen, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.append(source)
        elif source is not None:
            ids.extend(source)
    return ids


def _window(stop: Sequence[str]) -> int:
    """How many trailing tokens to decode to see any stop string completed by the last one.

    Checked after every token, a stop string can only be new if it ends in the last token's
    text. Every token stands for at least one byte and a character for at most four, so the
    last 4 * len(s) tokens hold all of s; 8 more keep it clear of the window's start, where
    decoding a token sequence from its middle may drop a leading space or show a partial
    character. Decoding this tail instead of the whole output keeps the check linear.
    """
    return 4 * max(len(s) for s in stop) + 8


def _first_stop(text: str, stop: Sequence[str]) -> str | None:
    """The stop string whose first occurrence in `text` ends earliest (ties: earlier in `stop`)."""
    best, best_end = None, None
    for s in stop:
        i = text.find(s)
        if i >= 0 and (best_end is None or i + len(s) < best_end):
            best, best_end = s, i + len(s)
    return best


def candidates(
    logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The tokens sampling may pick: top-k, then the top-p nucleus. [b, V] -> ([b, C], [b, C]).

    Returns candidate logits (-inf where dropped) and their vocabulary ids, or the
    untouched logits and None when neither filter is active (every token, in vocabulary
    order), so the common case skips the sort. top-p keeps the smallest set of most likely
    tokens whose probability reaches top_p, always at least one (Holtzman et al. 2020,
    arXiv:1904.09751); after top-k it uses the renormalised top-k probabilities, as
    transformers does.
    """
    ids = None
    if 0 < top_k < logits.shape[-1]:
        logits, ids = logits.topk(top_k, dim=-1)  # [b, k], sorted descending
    if top_p < 1.0:
        log_total = logits.logsumexp(-1, keepdim=True)  # [b, 1] normaliser of the current set
        if ids is None:
            logits, ids = _sorted_head(logits, log_total, top_p)  # [b, C], sorted descending
        probs = (logits - log_total).exp()
        before = probs.cumsum(-1) - probs  # mass strictly ahead of each token; 0 for the first
        logits = logits.masked_fill(before >= top_p, float("-inf"))
    return logits, ids


def _sorted_head(
    logits: torch.Tensor,
    log_total: torch.Tensor,
    top_p: float,
    heads: tuple[int, ...] = (256, 2048),
) -> tuple[torch.Tensor, torch.Tensor]:
    """The most likely tokens, sorted, enough of them to contain every row's top-p nucleus.

    Sorting a 50k vocabulary every step is slow on a CPU; LM distributions are peaked, so
    the top few hundred tokens usually already hold top_p of the mass, and then the
    nucleus is among them. Try growing heads, then fall back to a full sort. Exact always.
    """
    for head in heads:
        if head >= logits.shape[-1]:
            break
        values, ids = logits.topk(head, dim=-1)  # [b, head], sorted descending
        if bool(((values - log_total).exp().sum(-1) >= top_p).all()):
            return values, ids
    return logits.sort(dim=-1, descending=True)


def _sample_rows(probs: torch.Tensor, rngs: list[torch.Generator | None]) -> torch.Tensor:
    """Inverse-CDF sampling, one uniform draw per row from that row's generator. [b, C] -> [b].

    One scalar per sequence keeps samples independent of batch composition and costs far
    less than a per-row torch.multinomial call over the whole vocabulary.
    """
    cdf = probs.double().cumsum(-1)  # [b, C]
    u = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in rngs])  # [b]
    x = u.to(cdf.device)[:, None] * cdf[:, -1:]  # [b, 1], strictly below the total mass
    return torch.searchsorted(cdf, x, right=True).squeeze(-1).clamp(max=probs.shape[-1] - 1)


def _pick(
    logits: torch.Tensor, params: SamplingParams, rngs: list[torch.Generator | None]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose one token per row. logits [b, V] float32 -> tokens [b] long, logprobs [b] float32.

    The logprob is taken under softmax(logits / T) over the full vocabulary, before
    top-k/top-p truncation; greedy reports T = 1 (the convention in engines/base.py).
    """
    temperature = 1.0 if params.greedy else params.temperature
    scaled = logits / temperature  # [b, V]
    if params.greedy:
        tokens = scaled.argmax(-1)  # [b]
    else:
        cand_logits, cand_ids = candidates(scaled, params.top_k, params.top_p)  # [b, C]
        picked = _sample_rows(cand_logits.softmax(-1), rngs)  # [b], index into C
        tokens = picked if cand_ids is None else cand_ids.gather(-1, picked[:, None]).squeeze(-1)
    logprobs = scaled.gather(-1, tokens[:, None]).squeeze(-1) - scaled.logsumexp(-1)  # [b]
    return tokens, logprobs
