"""A scripted engine for tests: it "generates" text you give it, token-exactly.

    engine = FakeEngine(tokenizer, ["```python\\nprint(6*7)\\n```", "The answer is \\boxed{42}."])

Each request takes the next scripted response (or calls `responder(prompt_text)`),
tokenises it, and then behaves like a real engine: it stops at the first completed
stop string (keeping the completing token), at `max_new_tokens`, or at the end of
the script, where it appends EOS like a model that finished its turn.

Logprobs: with `model=` given they are that model's real logprobs of the scripted
tokens (teacher forcing, same convention as engines/base.py), so ledger tests can
check them against a recomputation; otherwise they are a fixed -1.0 per token.

What it does not do: sample. Temperature, top-p and seeds are ignored.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

import torch

from trajlab.engines.base import Generation, SamplingParams


class FakeEngine:
    def __init__(
        self,
        tokenizer,
        responses: Sequence[str] | Callable[[str], str],
        model: torch.nn.Module | None = None,
        append_eos: bool = True,
    ) -> None:
        self.tokenizer = tokenizer
        self.model = model
        self.append_eos = append_eos
        if callable(responses):
            self._responder = responses
            self._queue: deque[str] | None = None
        else:
            self._responder = None
            self._queue = deque(responses)
        self.requests: list[list[int]] = []  # every prompt seen, for assertions

    def _next_text(self, prompt_ids: Sequence[int]) -> str:
        if self._responder is not None:
            return self._responder(self.tokenizer.decode(list(prompt_ids)))
        if not self._queue:
            raise RuntimeError("FakeEngine ran out of scripted responses; add more to the script")
        return self._queue.popleft()

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams,
        stop: Sequence[str] = (),
        on_tokens: Callable[[int], None] | None = None,
    ) -> list[Generation]:
        out = []
        for prompt in prompts:
            self.requests.append(list(prompt))
            out.append(self._one(list(prompt), self._next_text(prompt), params, stop))
            if on_tokens is not None:
                on_tokens(len(out[-1].token_ids))
        return out

    def _one(
        self, prompt: list[int], text: str, params: SamplingParams, stop: Sequence[str]
    ) -> Generation:
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        eos = self.tokenizer.eos_token_id
        finish, stop_string = "eos", None
        # Walk tokens the way a real engine decodes: stop at the first token whose
        # decoded prefix completes a stop string.
        for k in range(1, len(ids) + 1):
            if k > params.max_new_tokens:
                ids, finish = ids[: params.max_new_tokens], "length"
                break
            decoded = self.tokenizer.decode(ids[:k])
            hit = next((s for s in stop if s in decoded), None)
            if hit is not None:
                ids, finish, stop_string = ids[:k], "stop", hit
                break
        else:
            if self.append_eos and eos is not None:
                if len(ids) >= params.max_new_tokens:
                    ids, finish = ids[: params.max_new_tokens], "length"
                else:
                    ids = ids + [eos]
            else:
                finish = "length"
        return Generation(
            token_ids=ids,
            logprobs=self._logprobs(prompt, ids, params),
            finish_reason=finish,
            stop_string=stop_string,
            text=self.tokenizer.decode(ids),
        )

    @torch.inference_mode()
    def _logprobs(self, prompt: list[int], ids: list[int], params: SamplingParams) -> list[float]:
        if self.model is None or not ids:
            return [-1.0] * len(ids)
        temperature = params.temperature if params.temperature > 0 else 1.0
        full = torch.tensor([prompt + ids])  # [1, T]
        logits = self.model(full).logits[0, len(prompt) - 1 : -1].float() / temperature  # [n, V]
        lp = torch.log_softmax(logits, dim=-1)
        return lp.gather(-1, torch.tensor(ids)[:, None])[:, 0].tolist()
