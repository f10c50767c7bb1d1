"""Continuous batching for the HF engine: sequences join and leave one running decode
batch, and a sequence that comes back with more context prefills only the new part.

    with engine.stream(params, on_tokens=progress.add_tokens) as stream:
        stream.add("ep3", ids, max_new_tokens=96, stop=["```\\n"], seed=17, index=3)
        while stream.busy:
            for key, gen in stream.step():       # generations that finished this step
                ...                              # e.g. start a tool call for `key`
        stream.add("ep3", ids + turn + observation, ...)  # reuses ep3's cached prefix
        stream.forget("ep3")                     # its episode ended: drop the cached KV

How it works. The running batch is one KV cache [B, heads, L, dim] per layer with every
row left-padded (an attention mask marks real positions, position ids count real tokens
only), and the logits each row samples its next token from. `step()`:
  1. admits the rows added since the last step (held back until a quarter of the batch is
     waiting, for at most ADMIT_WAIT steps, so returning rows join together): a row whose
     key has a parked KV keeps the longest prefix that KV shares with its new tokens and
     prefills the rest on top of it;
     a new row prefills its whole prompt (identical new prompts, a GRPO group, once). The
     admitted rows are prefilled as one batch ([left pad][cached part][pad][new tokens],
     holes masked), repacked left-padded and appended, so no hole survives;
  2. samples one token for every row (trajlab.engines.hf._pick: the same sampler, logprob
     convention and per-row generators as HFEngine.generate);
  3. parks the KV of every row that finished (EOS, a stop string, its token budget) and
     drops it from the batch; the columns no row uses any more are trimmed;
  4. runs the model on the sampled tokens of the rows still going.
So rows waiting on a tool leave the batch, other rows keep decoding, and a row whose
observation is ready re-enters with a prefill of the observation only.

Reproducibility: a row's generator is seeded from (seed, index), as HFEngine.generate seeds
prompt `index` of a call, so a row samples what it would alone, up to float differences
between batch shapes (which can flip a near-tie).

Engines without a stream of their own (the fake engine, remote ones) get `GenerateStream`
through `open_stream`: the same interface, each step one `generate` call per (budget, stop
strings, seed) for the rows added since the last step, so an agent loop can run every
engine the same way (without KV reuse: a returning row is prefilled whole).

What it does not do: preempt rows when memory runs out (admission is bounded by
`max_rows` only), or share a cached prefix between different keys.
"""

from __future__ import annotations

import contextlib
import secrets
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from trajlab.engines.base import Generation, SamplingParams
from trajlab.engines.kv import cache_holding, compact, stacked_cache, supports_growing
from trajlab.models import cache_arg

if TYPE_CHECKING:
    from trajlab.engines.hf import HFEngine


ADMIT_WAIT = 4  # decode steps a waiting row may be held back for others to join it


@dataclass
class _Row:
    key: Hashable
    prompt: list[int]  # everything before this generation
    budget: int
    stop: list[str]
    rng: torch.Generator | None
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str | None = None
    stop_string: str | None = None

    @property
    def covered(self) -> list[int]:
        """Tokens whose KV the cache holds: the prompt and every sampled token but the last
        (the last one is only fed to the model at the next step)."""
        return self.prompt + self.token_ids[:-1]


@dataclass
class _Parked:
    tokens: list[int]  # the tokens the KV covers, in order
    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer: [heads, n, dim] keys, values


class DecodeStream:
    """A running decode batch that rows join and leave (see the module docstring)."""

    def __init__(
        self,
        engine: HFEngine,
        model: torch.nn.Module,
        params: SamplingParams,
        max_rows: int,
        on_tokens: Callable[[int], None] | None = None,
    ) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        self.engine, self.model, self.params = engine, model, params
        self.max_rows = max_rows
        self.on_tokens = on_tokens
        self.context = getattr(model.config, "max_position_embeddings", None) or 1 << 62
        self.rows: list[_Row] = []  # the running batch, in cache order
        self.waiting: list[_Row] = []  # added, not yet admitted
        self.parked: dict[Hashable, _Parked] = {}
        self.kv: list[tuple[torch.Tensor, torch.Tensor]] = []  # per layer [B, heads, L, dim]
        self._cache = None  # the growing cache self.kv lives in, while no row joins or leaves
        self.mask = torch.zeros(0, 0, dtype=torch.long)  # [B, L]
        self.next_pos = torch.zeros(0, dtype=torch.long)  # [B]
        self.logits: torch.Tensor | None = None  # [B, V]: what each row samples next from
        self.prefilled_tokens = 0  # tokens run through prefill (new rows' uncached parts)
        self.reused_tokens = 0  # tokens whose KV came from a parked row instead
        self.admissions = 0  # prefill + repack rounds
        self.held = 0  # steps the waiting rows have waited so far

    # -- public -------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return bool(self.rows or self.waiting)

    @property
    def free_slots(self) -> int:
        return self.max_rows - len(self.rows) - len(self.waiting)

    def add(
        self,
        key: Hashable,
        prompt_ids: Sequence[int],
        max_new_tokens: int,
        stop: Sequence[str] = (),
        seed: int | None = None,
        index: int = 0,
    ) -> None:
        """Queue a generation for `key`; it joins the batch at the next step."""
        if any(r.key == key for r in self.rows + self.waiting):
            raise ValueError(f"{key!r} is already generating in this stream")
        if not 0 < len(prompt_ids) < self.context:
            raise ValueError(
                f"prompt of {key!r} has {len(prompt_ids)} tokens; prompts need 1 to "
                f"{self.context - 1} tokens (the model's context is {self.context})"
            )
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        from trajlab.engines.hf import _rng

        base = seed if seed is not None else secrets.randbits(63)
        self.waiting.append(
            _Row(
                key=key,
                prompt=list(prompt_ids),
                budget=min(max_new_tokens, self.context - len(prompt_ids)),
                stop=list(stop),
                rng=None if self.params.greedy else _rng(base, index),
            )
        )

    def forget(self, key: Hashable) -> None:
        """Drop the parked KV of `key` (its episode is over)."""
        self.parked.pop(key, None)

    def abort(self) -> list[Hashable]:
        """Empty the batch (after an engine error); returns the keys that were generating."""
        keys = [r.key for r in self.rows + self.waiting]
        self.rows, self.waiting, self.parked, self.kv = [], [], {}, []
        self._cache = None
        self.mask = self.mask[:0, :0]
        self.next_pos, self.logits = self.next_pos[:0], None
        return keys

    @torch.inference_mode()
    def step(self) -> list[tuple[Hashable, Generation]]:
        """Admit waiting rows, sample one token per row, and return the generations that
        finished, each once."""
        from trajlab.engines.hf import _pick

        if self.waiting and self._admit_now():
            self._admit(self.waiting)
            self.waiting, self.held = [], 0
        elif self.waiting:
            self.held += 1
        if not self.rows:
            return []
        assert self.logits is not None
        tokens, logprobs = _pick(self.logits, self.params, [r.rng for r in self.rows])
        if self.on_tokens is not None:
            self.on_tokens(len(self.rows))
        finished: list[tuple[Hashable, Generation]] = []
        keep: list[int] = []
        for j, (r, t, lp) in enumerate(zip(self.rows, tokens.tolist(), logprobs.tolist())):
            if self.engine._append(r, t, lp, r.stop):  # HFEngine's stop checks
                self.parked[r.key] = _Parked(r.covered, self._row_kv(j))
                finished.append((r.key, self.engine._to_generation(r)))
            else:
                keep.append(j)
        if len(keep) < len(self.rows):
            self._select(keep)
            tokens = tokens[keep]
        if self.rows:
            self._forward_tokens(tokens)
        return finished

    # -- admission -------------------------------------------------------------------

    def _admit_now(self) -> bool:
        """Admit waiting rows together rather than one by one: each admission is a prefill
        and a copy of the whole batch's KV, so rows returning from tools one at a time
        wait until a quarter of the batch is waiting, or for at most ADMIT_WAIT steps."""
        return not self.rows or len(self.waiting) * 4 >= len(self.rows) or self.held >= ADMIT_WAIT

    def _admit(self, new: list[_Row]) -> None:
        """Prefill the new rows on top of their parked prefixes and repack the batch."""
        self.admissions += 1
        cached: list[list[tuple[torch.Tensor, torch.Tensor]] | None] = []
        suffixes: list[tuple[int, ...]] = []
        starts: list[int] = []
        for r in new:
            parked = self.parked.pop(r.key, None)
            c = _common_prefix(parked.tokens, r.prompt) if parked else 0
            c = min(c, len(r.prompt) - 1)  # at least one token runs, for the next logits
            cached.append([(k[:, :c], v[:, :c]) for k, v in parked.kv] if c else None)
            suffixes.append(tuple(r.prompt[c:]))
            starts.append(c)
            self.reused_tokens += c
        # Rows with nothing cached and the same prompt (a group's samples) prefill once.
        unique: dict[tuple, int] = {}
        source: list[int] = []
        for j, (c, s) in enumerate(zip(starts, suffixes)):
            dedup_key = ("fresh", s) if c == 0 else ("row", j)
            source.append(unique.setdefault(dedup_key, len(unique)))
        firsts = [source.index(u) for u in range(len(unique))]
        kv, mask, logits = self._prefill([cached[j] for j in firsts],
                                         [suffixes[j] for j in firsts],
                                         [starts[j] for j in firsts])  # fmt: skip
        expand = torch.tensor(source, dtype=torch.long)
        kv = [(k[expand], v[expand]) for k, v in kv]
        mask, logits = mask[expand], logits[expand]
        self._merge(new, kv, mask, logits)

    def _prefill(
        self,
        cached: list[list[tuple[torch.Tensor, torch.Tensor]] | None],
        suffixes: list[tuple[int, ...]],
        starts: list[int],
    ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor, torch.Tensor]:
        """One forward over the new rows: [pad][cached part][pad][suffix] per row."""
        from transformers import DynamicCache

        b = len(suffixes)
        lc, ls = max(starts), max(len(s) for s in suffixes)
        device = self.engine.device
        ids = torch.full((b, ls), self.engine.pad_token_id, dtype=torch.long)
        mask = torch.zeros(b, lc + ls, dtype=torch.long)
        pos = torch.zeros(b, ls, dtype=torch.long)
        for j, (c, s) in enumerate(zip(starts, suffixes)):
            ids[j, ls - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[j, lc - c : lc] = 1
            mask[j, lc + ls - len(s) :] = 1
            pos[j, ls - len(s) :] = torch.arange(c, c + len(s))
        cache = DynamicCache(config=self.model.config)
        if lc:
            layers = []
            for layer in range(len(next(c for c in cached if c is not None))):
                k0, v0 = next(c for c in cached if c is not None)[layer]
                heads, dim = k0.shape[0], k0.shape[-1]
                k = k0.new_zeros(b, heads, lc, dim)
                v = v0.new_zeros(b, heads, lc, v0.shape[-1])
                for j, c in enumerate(cached):
                    if c is not None:
                        n = c[layer][0].shape[1]
                        k[j, :, lc - n :], v[j, :, lc - n :] = c[layer]
                layers.append((k, v))
            cache = _cache_from(layers, self.model)
        self.prefilled_tokens += sum(len(s) for s in suffixes)
        out = self.model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=pos.to(device),
            use_cache=True,
            **{cache_arg(self.model): cache},
            logits_to_keep=1,
        )
        kv = [(layer.keys, layer.values) for layer in cache.layers]
        return kv, mask.to(device), out.logits[:, -1].float()

    def _merge(
        self,
        new: list[_Row],
        kv: list[tuple[torch.Tensor, torch.Tensor]],
        mask: torch.Tensor,
        logits: torch.Tensor,
    ) -> None:
        """Append the prefilled rows, repacked left-padded, to the batch. Only they can hold
        holes: the running batch stays left-padded (decode appends on the right, `_select`
        drops rows and left columns). Both parts are copied once, into the new growing
        cache's buffers (kv.stacked_cache), with room for every row's remaining budget."""
        kv, mask = _repack(kv, mask)
        parts, masks = ([self.kv], [self.mask]) if self.rows else ([], [])
        parts.append(kv)
        masks.append(mask)
        width = max(m.shape[1] for m in masks)
        self.rows = self.rows + new
        room = max(r.budget - len(r.token_ids) for r in self.rows) + 1
        self._cache = stacked_cache(self.model, parts, width, room)  # one copy of each part
        self.kv = [(layer.keys, layer.values) for layer in self._cache.layers]
        self.mask = torch.cat([_pad_left(m, width) for m in masks])
        self.logits = torch.cat([self.logits, logits]) if len(masks) > 1 else logits
        self.next_pos = self.mask.sum(-1)  # real tokens so far: the next position

    # -- the running batch --------------------------------------------------------------

    def _forward_tokens(self, tokens: torch.Tensor) -> None:
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.rows), 1)], dim=1)
        if self._cache is None:  # left columns were trimmed: copy the batch into a new buffer
            room = max(r.budget - len(r.token_ids) for r in self.rows) + 1
            self._cache = cache_holding(self.model, self.kv, room)
        cache = self._cache
        out = self.model(
            input_ids=tokens[:, None],
            attention_mask=self.mask,
            position_ids=self.next_pos[:, None],
            use_cache=True,
            **{cache_arg(self.model): cache},
        )
        self.kv = [(layer.keys, layer.values) for layer in cache.layers]
        self.logits = out.logits[:, -1].float()
        self.next_pos = self.next_pos + 1

    def _select(self, keep: list[int]) -> None:
        """Keep these rows only (moved down inside the cache's buffers), or, when the
        left columns no kept row uses can be trimmed, copy the kept part out."""
        idx = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
        self.rows = [self.rows[j] for j in keep]
        mask = self.mask[idx]
        used = mask.any(0).nonzero()
        first = int(used[0]) if len(used) else mask.shape[1]
        if first == 0 and self._cache is not None:  # rows move down inside their buffers
            compact(self._cache, keep)
            self.kv = [(layer.keys, layer.values) for layer in self._cache.layers]
        else:
            self.kv = [(k[idx, :, first:], v[idx, :, first:]) for k, v in self.kv]
            self._cache = None
        self.mask = mask[:, first:]
        self.next_pos = self.next_pos[idx]
        assert self.logits is not None
        self.logits = self.logits[idx]

    def _row_kv(self, j: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        real = self.mask[j].bool()
        return [(k[j][:, real].clone(), v[j][:, real].clone()) for k, v in self.kv]


class GenerateStream:
    """DecodeStream's interface over any engine's `generate` (see the module docstring)."""

    def __init__(
        self,
        engine: Any,
        params: SamplingParams,
        max_rows: int,
        on_tokens: Callable[[int], None] | None = None,
    ) -> None:
        self.engine, self.params, self.max_rows, self.on_tokens = (
            engine,
            params,
            max_rows,
            on_tokens,
        )
        self.waiting: list[tuple[Hashable, list[int], int, tuple[str, ...], int | None]] = []

    @property
    def busy(self) -> bool:
        return bool(self.waiting)

    @property
    def free_slots(self) -> int:
        return self.max_rows - len(self.waiting)

    def add(
        self,
        key: Hashable,
        prompt_ids: Sequence[int],
        max_new_tokens: int,
        stop: Sequence[str] = (),
        seed: int | None = None,
        index: int = 0,
    ) -> None:
        if any(w[0] == key for w in self.waiting):
            raise ValueError(f"{key!r} is already generating in this stream")
        self.waiting.append((key, list(prompt_ids), max_new_tokens, tuple(stop), seed))

    def forget(self, key: Hashable) -> None:
        pass  # nothing is cached

    def abort(self) -> list[Hashable]:
        keys = [w[0] for w in self.waiting]
        self.waiting = []
        return keys

    def step(self) -> list[tuple[Hashable, Generation]]:
        groups: dict[tuple, list] = defaultdict(list)
        for w in self.waiting:
            groups[w[2:]].append(w)
        finished = []
        for (budget, stop, seed), rows in groups.items():
            p = self.params
            params = SamplingParams(p.temperature, p.top_p, p.top_k, budget, seed)
            gens = self.engine.generate([w[1] for w in rows], params, stop=list(stop))
            if len(gens) != len(rows):
                raise RuntimeError(
                    f"engine returned {len(gens)} generations for {len(rows)} prompts"
                )
            if self.on_tokens is not None:
                self.on_tokens(sum(len(g.token_ids) for g in gens))
            finished += [(w[0], g) for w, g in zip(rows, gens)]
        self.waiting = []
        return finished


@contextlib.contextmanager
def open_stream(
    engine: Any,
    params: SamplingParams,
    on_tokens: Callable[[int], None] | None = None,
    max_rows: int | None = None,
) -> Iterator[DecodeStream | GenerateStream]:
    """The engine's own continuous-batching stream where it has one that works for its
    model, else a GenerateStream over its `generate`."""
    if getattr(engine, "can_stream", False):
        with engine.stream(params, on_tokens=on_tokens, max_rows=max_rows) as stream:
            yield stream
    else:
        yield GenerateStream(
            engine, params, max_rows or getattr(engine, "max_batch_size", 64), on_tokens
        )


# -- pure helpers ------------------------------------------------------------------------


def supports_stream(model: torch.nn.Module) -> bool:
    """Whether the model's KV cache is a plain DynamicLayer per layer (full attention, no
    sliding window or recurrent state), the layout DecodeStream edits directly."""
    return supports_growing(model)


def _cache_from(kv: list[tuple[torch.Tensor, torch.Tensor]], model: torch.nn.Module):
    """A DynamicCache holding these per-layer [B, heads, L, dim] tensors as they are."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    for layer, (k, v) in zip(cache.layers, kv, strict=True):
        layer.lazy_initialization(k, v)
        layer.keys, layer.values = k, v
    return cache


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _pad_left(t: torch.Tensor, width: int) -> torch.Tensor:
    """Zero-pad the sequence dimension (-2 for KV [B, heads, L, dim], -1 for a mask [B, L])
    on the left to `width`."""
    dim = -1 if t.dim() == 2 else -2
    missing = width - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def _repack(
    kv: list[tuple[torch.Tensor, torch.Tensor]], mask: torch.Tensor
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    """Move every row's real positions to the right end, in order: [B, L] with holes ->
    [B, L'] left-padded, L' the longest row. One gather per layer."""
    lengths = mask.sum(-1)  # [B]
    width = int(lengths.max()) if len(lengths) else 0
    # Real positions first (stable), so row b's real columns, in order, are order[b, :n_b].
    order = torch.sort(1 - mask, dim=-1, stable=True).indices  # [B, L]
    slot = torch.arange(width, device=mask.device)[None]  # [1, W]
    take = slot - (width - lengths)[:, None]  # [B, W]: index into a row's real positions
    valid = take >= 0
    src = order.gather(1, take.clamp(min=0))  # [B, W]
    new_mask = valid.long()
    packed = []
    for k, v in kv:
        heads, dim = k.shape[1], k.shape[-1]
        gk = src[:, None, :, None].expand(-1, heads, -1, dim)
        k2 = k.gather(2, gk) * valid[:, None, :, None]
        gv = src[:, None, :, None].expand(-1, v.shape[1], -1, v.shape[-1])
        v2 = v.gather(2, gv) * valid[:, None, :, None]
        packed.append((k2, v2))
    return packed, new_mask
