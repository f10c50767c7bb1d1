"""The Engine seam: prompt token ids in, sampled token ids and their logprobs out.

Every engine (hf, fake, openai-compatible) implements one method, `generate`.
The agent loop owns the prompt; the engine never sees text, only token ids, so
what is generated is exactly what is stored and later trained on.

Logprob convention (used by every engine and by `trajlab.models.token_logprobs`):
the log-probability of the sampled token under softmax(logits / temperature) of
the full vocabulary, before top-k/top-p truncation. Greedy decoding
(temperature 0) reports logprobs at temperature 1. This is the distribution the
trainer recomputes, so sampling and training logprobs agree up to float error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

FINISH_REASONS = ("stop", "eos", "length")


def check_sampling(temperature: float, top_p: float, auto: float | None = None) -> None:
    """Raise ValueError naming the field when a temperature or top_p cannot be meant:
    a negative temperature (other than `auto`, a config's "pick for me" value), a
    non-finite one, or top_p outside (0, 1]."""
    import math

    if not math.isfinite(temperature) or (temperature < 0 and temperature != auto):
        also = f", or {auto:g} for the default" if auto is not None else ""
        raise ValueError(
            f"temperature must be >= 0 (0 is greedy, > 0 samples{also}), got {temperature}"
        )
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (1 turns nucleus sampling off), got {top_p}")


@dataclass
class SamplingParams:
    """How to sample. temperature 0 means greedy."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 disables top-k
    max_new_tokens: int = 256
    seed: int | None = None

    def __post_init__(self) -> None:
        check_sampling(self.temperature, self.top_p)
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class Generation:
    """One sampled continuation.

    finish_reason: stop (a stop string was completed; `stop_string` says which),
    eos (an end-of-sequence token was sampled; it is included in token_ids),
    length (max_new_tokens reached).
    """

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str
    stop_string: str | None = None
    text: str = ""  # decoding of token_ids, for display
    meta: dict = field(default_factory=dict)


@runtime_checkable
class Engine(Protocol):
    """Anything that can continue token-id prompts."""

    tokenizer: object  # a transformers PreTrainedTokenizer(Fast)

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams,
        stop: Sequence[str] = (),
        on_tokens: Callable[[int], None] | None = None,
    ) -> list[Generation]:
        """Continue each prompt. Each sequence stops on its own at the first completed
        stop string (the token that completes it is kept), at EOS, or at max_new_tokens.
        `on_tokens(n)`, when given, is called as tokens are sampled (n since the last
        call), so a long batch shows progress; an engine may leave the parameter out, and
        the agent loop then reports its tokens per turn instead."""
        ...
