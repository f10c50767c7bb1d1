"""A KV cache whose layers write new positions in place instead of concatenating.

transformers' DynamicLayer appends every decode step's keys and values with `torch.cat`,
which allocates the layer's whole cache anew and copies it: per step, every layer's KV is
read and written once more, and each new multi-megabyte buffer is fresh memory the kernel
has to fault in and zero. On a 2-core CPU at batch 64 and 300 cached tokens that was about
70 % of a decode step's time (docs/performance.md, section 2).

`GrowingLayer` keeps each layer's keys and values in a buffer with room on the right: a
step writes its one new position into that room, and `keys` / `values` are views of the
filled part, so attention reads exactly what DynamicLayer would hand it (same values, same
shapes; outputs are bit-identical, tests/test_engine_kv.py). The room is sized by the
caller (HFEngine reserves at most ROOM positions); when it runs out the buffer grows by a
quarter of its length (at least ROOM), so a turn of 96 tokens copies the cache about once
instead of at every step.

    cache = growing_cache(model, room=max_new_tokens)     # None: keep transformers' cache
    model(input_ids=..., past_key_values=cache, use_cache=True)
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer

# Positions HFEngine reserves past a prefill (at most; and the least a full buffer grows
# by). Reserving a whole turn's budget (96 tokens in the demo) would never regrow, but most
# rows stop long before it, and 96 unused positions of 64 rows are about 9 MB per layer
# (280 MB for the default model's 30). With 32 positions and growth by a quarter of the
# length, a batch copies its cache about once per turn. (The demo's peak did not move
# measurably with it: docs/performance.md, section 4.)
ROOM = 32


class GrowingLayer(DynamicLayer):
    """One layer's KV in a preallocated buffer [B, heads, capacity, dim]; see the module
    docstring. `room` is how many positions past the first update to reserve."""

    def __init__(self, room: int = 0) -> None:
        super().__init__()
        self.room = max(0, room)
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None
        self._n = 0

    @property
    def capacity(self) -> int:
        return 0 if self._k is None else self._k.shape[-2]

    def adopt(self, keys: torch.Tensor, values: torch.Tensor, room: int) -> None:
        """Start from these [B, heads, L, dim] tensors (copied once), with `room` free
        positions after them."""
        self.room = max(0, room)
        self._k = self._v = None
        self._n = 0
        self.is_initialized = False
        self.update(keys, values)

    def own(self, keys: torch.Tensor, values: torch.Tensor, filled: int) -> None:
        """Take these [B, heads, capacity, dim] buffers as they are (no copy); the first
        `filled` positions hold the cache, the rest is room."""
        self.lazy_initialization(keys, values)
        self._k, self._v, self._n = keys, values, filled
        self._views()

    def compact(self, keep: list[int]) -> None:
        """Keep these rows (ascending), in order, without a new buffer: the rows after the
        first dropped one move down into place (their filled part only), and the buffer is
        cut to len(keep) rows. Same result as batch_select_indices, which copies every
        row and its room."""
        if self._k is None or self._v is None:
            return
        if any(b <= a for a, b in zip(keep, keep[1:])):
            raise ValueError(f"compact needs ascending row indices, got {keep}")
        n = self._n
        for j, src in enumerate(keep):
            if src != j:  # src > j: front to back never overwrites a row still to move
                self._k[j, :, :n] = self._k[src, :, :n]
                self._v[j, :, :n] = self._v[src, :, :n]
        self._k, self._v = self._k[: len(keep)], self._v[: len(keep)]
        self._views()

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = self._n + key_states.shape[-2]
        if self._k is None or n > self.capacity:
            grow = self.room if self._k is None else max(ROOM, self._n // 4)
            self._reallocate(key_states, value_states, n + grow)
        assert self._k is not None and self._v is not None
        self._k[:, :, self._n : n] = key_states
        self._v[:, :, self._n : n] = value_states
        self._n = n
        self._views()
        return self.keys, self.values

    def _reallocate(self, k: torch.Tensor, v: torch.Tensor, capacity: int) -> None:
        new_k = k.new_empty(k.shape[0], k.shape[1], capacity, k.shape[-1])
        new_v = v.new_empty(v.shape[0], v.shape[1], capacity, v.shape[-1])
        if self._n:
            assert self._k is not None and self._v is not None
            new_k[:, :, : self._n] = self._k[:, :, : self._n]
            new_v[:, :, : self._n] = self._v[:, :, : self._n]
        self._k, self._v = new_k, new_v

    def _views(self) -> None:
        assert self._k is not None and self._v is not None
        self.keys = self._k[:, :, : self._n]
        self.values = self._v[:, :, : self._n]

    def get_seq_length(self) -> int:
        return self._n

    def reset(self) -> None:
        self._k = self._v = None
        self._n = 0
        super().reset()

    def crop(self, tokens_to_remove: int) -> None:
        super().crop(tokens_to_remove)  # validates, and cuts the views
        if self.is_initialized and self._k is not None:
            self._n = self.keys.shape[-2]

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self._n:
            assert self._k is not None and self._v is not None
            self._k = self._k.repeat_interleave(repeats, dim=0)
            self._v = self._v.repeat_interleave(repeats, dim=0)
            self._views()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self._n:
            assert self._k is not None and self._v is not None
            self._k, self._v = self._k[indices], self._v[indices]  # the room comes along
            self._views()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.batch_select_indices(beam_idx)


def compact(cache, keep: list[int]) -> None:
    """GrowingLayer.compact on every layer of a growing cache."""
    for layer in cache.layers:
        layer.compact(keep)


def supports_growing(model: torch.nn.Module) -> bool:
    """Whether every layer of the model's default cache is a plain DynamicLayer (full
    attention, no sliding window, no recurrent state): the layers GrowingLayer replaces."""
    from transformers import DynamicCache

    try:
        layers = DynamicCache(config=model.config).layers
    except Exception:  # a config transformers cannot build a cache from
        return False
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def growing_cache(model: torch.nn.Module, room: int):
    """A DynamicCache for `model` whose layers are GrowingLayers reserving `room`
    positions past the prefill, or None when the model's cache has other layer kinds."""
    from transformers import DynamicCache

    if not supports_growing(model):
        return None
    cache = DynamicCache(config=model.config)
    cache.layers = [GrowingLayer(room) for _ in cache.layers]
    return cache


def cache_holding(model: torch.nn.Module, kv: list[tuple[torch.Tensor, torch.Tensor]], room: int):
    """A growing cache that starts from these per-layer [B, heads, L, dim] tensors (copied
    into buffers with `room` free positions each)."""
    cache = growing_cache(model, room)
    if cache is None:
        raise ValueError(f"{type(model).__name__}'s cache layers are not all DynamicLayer")
    for layer, (k, v) in zip(cache.layers, kv, strict=True):
        layer.adopt(k, v, room)
    return cache


def stacked_cache(
    model: torch.nn.Module,
    parts: list[list[tuple[torch.Tensor, torch.Tensor]]],
    width: int,
    room: int,
):
    """A growing cache whose rows are the rows of `parts` (each a per-layer list of
    [B_i, heads, L_i, dim] keys and values, L_i <= width) stacked in order, each part
    right-aligned to `width` with zeros on its left, and `room` free positions after.
    One zeroed buffer per layer and one copy of each part: what padding each part and
    concatenating them would give, without the intermediate tensors."""
    cache = growing_cache(model, room)
    if cache is None:
        raise ValueError(f"{type(model).__name__}'s cache layers are not all DynamicLayer")
    rows = sum(part[0][0].shape[0] for part in parts)
    for layer_idx, layer in enumerate(cache.layers):
        k0, v0 = parts[0][layer_idx]
        keys = k0.new_zeros(rows, k0.shape[1], width + room, k0.shape[-1])
        values = v0.new_zeros(rows, v0.shape[1], width + room, v0.shape[-1])
        at = 0
        for part in parts:
            k, v = part[layer_idx]
            b, n = k.shape[0], k.shape[-2]
            keys[at : at + b, :, width - n : width] = k
            values[at : at + b, :, width - n : width] = v
            at += b
        layer.own(keys, values, width)
    return cache


PREFILL_TOKENS = 4096  # prompt tokens (rows x padded length) one prefill forward takes


def prefill(
    model: torch.nn.Module,
    ids: torch.Tensor,
    mask: torch.Tensor,
    positions: torch.Tensor,
    room: int,
    max_tokens: int | None = None,
):
    """Run left-padded prompts [B, L] through the model into a growing cache with `room`
    free positions, a few rows at a time (at most max_tokens, default PREFILL_TOKENS, prompt tokens per forward),
    so the activations of a large batch's prefill (several hundred MB for 64 rows of 300
    tokens) never exist at once. Returns (cache, last-position logits [B, V] in fp32).
    Rows are independent, so this computes what one forward over all rows computes, up
    to the float error of matmuls of another shape (none at all for the default model in
    13-16-row chunks of 300 tokens on an AVX2 CPU: docs/performance.md, section 4)."""
    from transformers import DynamicCache

    from trajlab.models import cache_arg

    cache = growing_cache(model, room)
    if cache is None:
        raise ValueError(f"{type(model).__name__}'s cache layers are not all DynamicLayer")
    rows, width = ids.shape
    step = max(1, (max_tokens or PREFILL_TOKENS) // max(1, width))
    logits = []
    buffers: list[tuple[torch.Tensor, torch.Tensor]] = []
    for start in range(0, rows, step):
        end = min(rows, start + step)
        part = DynamicCache(config=model.config)
        out = model(
            input_ids=ids[start:end],
            attention_mask=mask[start:end],
            position_ids=positions[start:end],
            use_cache=True,
            **{cache_arg(model): part},
            logits_to_keep=1,
        )
        logits.append(out.logits[:, -1].float())
        for i, layer in enumerate(part.layers):
            k, v = layer.keys, layer.values
            if start == 0:
                buffers.append((
                    k.new_empty(rows, k.shape[1], width + room, k.shape[-1]),
                    v.new_empty(rows, v.shape[1], width + room, v.shape[-1]),
                ))  # fmt: skip
            buffers[i][0][start:end, :, :width] = k
            buffers[i][1][start:end, :, :width] = v
    for layer, (k, v) in zip(cache.layers, buffers, strict=True):
        layer.own(k, v, width)
    return cache, torch.cat(logits)


class PrefixLayer(DynamicLayer):
    """One layer's read-only cache: the keys and values [B, heads, P, dim] of a prefix every
    row shares (an `expand` of one row is fine: no copy). `update` returns the prefix
    followed by the new positions and stores nothing, so a layer may run twice on the same
    input (activation checkpointing replays it in the backward pass) and reads the same
    states both times; gradients reach the prefix through the returned concatenation."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        self.keys, self.values = keys, values
        self.device = keys.device
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            torch.cat([self.keys, key_states], dim=-2),
            torch.cat([self.values, value_states], dim=-2),
        )


def prefix_cache(model: torch.nn.Module, one_row, rows: int):
    """A read-only cache (PrefixLayer per layer) that gives each of `rows` rows the prefix
    held by the one-row DynamicCache `one_row`, or None when the model's cache has other
    layer kinds than DynamicLayer."""
    from transformers import DynamicCache

    if not supports_growing(model):
        return None
    cache = DynamicCache(config=model.config)
    cache.layers = [
        PrefixLayer(layer.keys.expand(rows, -1, -1, -1), layer.values.expand(rows, -1, -1, -1))
        for layer in one_row.layers
    ]
    return cache
