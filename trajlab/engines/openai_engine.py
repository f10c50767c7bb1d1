"""The `openai` engine: generation through any OpenAI-compatible server.

    engine = OpenAIEngine(tokenizer, base_url="http://127.0.0.1:8000/v1")
    gens = engine.generate([prompt_ids, ...], SamplingParams(temperature=0), stop=["```\\n"])

For evaluation and data synthesis against a server (`trajlab serve`, vLLM, SGLang, a
llama.cpp server). Each prompt is one `/v1/completions` request with the prompt as token
ids, `logprobs=1` and the extensions vLLM's server and `trajlab serve` understand:
`return_token_ids` (the sampled token ids come back) and `include_stop_str_in_output`
(the completed stop string stays in the output, as trajlab's engines keep it). Requests
run concurrently (`concurrency` at a time); the official `openai` client retries
connection errors, 408/409/429 and 5xx answers with exponential backoff (`max_retries`)
and gives up after `timeout_s` per request.

Token exactness: a server that returns token ids and logprobs gives generations a trainer
could use; one that returns only text gets its text re-tokenised here, which need not be
the tokens the model sampled, and logprobs it did not send are 0. Such generations carry
meta["token_exact"] = False and `token_exact` turns False; `check_trainable()` raises
then, with what to change. Sampling seeds: prompt i of a call gets seed + i, so a call
is reproducible where the server honours seeds.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from trajlab.engines.base import Generation, SamplingParams


class OpenAIEngine:
    """Engine over an OpenAI-compatible server's /v1/completions (see module docstring)."""

    def __init__(
        self,
        tokenizer: Any,
        base_url: str,
        model: str = "",
        api_key: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        concurrency: int = 8,
        client: Any = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if max_retries < 0 or timeout_s <= 0:
            raise ValueError("max_retries must be >= 0 and timeout_s > 0")
        if client is None:
            try:
                from openai import OpenAI
            except ImportError:
                raise ImportError(
                    "the openai engine needs the openai package: pip install 'trajlab[openai]'"
                ) from None

            client = OpenAI(
                base_url=base_url,
                api_key=api_key or os.environ.get("OPENAI_API_KEY") or "unused",
                timeout=timeout_s,
                max_retries=max_retries,
            )
        self.client = client
        self.tokenizer = tokenizer
        self.base_url = base_url
        self.concurrency = concurrency
        self.max_batch_size = concurrency
        self._model = model
        self.eos_token_ids = {tokenizer.eos_token_id} - {None}
        self.token_exact = True  # False once a server answer lacked token ids or logprobs

    @property
    def model(self) -> str:
        """The model name requests carry: the configured one, else the server's first."""
        if not self._model:
            models = self.client.models.list().data
            if not models:
                raise RuntimeError(f"the server at {self.base_url} lists no models")
            self._model = models[0].id
        return self._model

    def check_trainable(self) -> None:
        if not self.token_exact:
            raise RuntimeError(
                f"the server at {self.base_url} did not return token ids and logprobs, so its "
                "generations are not the exact tokens the model sampled and cannot be trained "
                "on; use a server that honours return_token_ids and logprobs (trajlab serve, "
                "vLLM), or train with rollout.engine=hf"
            )

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams,
        stop: Sequence[str] = (),
        on_tokens: Callable[[int], None] | None = None,
    ) -> list[Generation]:
        model = self.model
        jobs = list(enumerate(prompts))

        def one(job: tuple[int, Sequence[int]]) -> Generation:
            i, prompt = job
            gen = self._complete(model, list(prompt), params, list(stop), i)
            if on_tokens is not None:
                on_tokens(len(gen.token_ids))
            return gen

        if len(jobs) == 1:
            return [one(jobs[0])]
        with ThreadPoolExecutor(min(self.concurrency, len(jobs))) as pool:
            return list(pool.map(one, jobs))

    def _complete(
        self, model: str, prompt: list[int], params: SamplingParams, stop: list[str], i: int
    ) -> Generation:
        extra: dict[str, Any] = {"return_token_ids": True, "include_stop_str_in_output": True}
        if params.top_k:
            extra["top_k"] = params.top_k
        import openai

        try:
            resp = self._create(model, prompt, params, stop, i, extra)
        except openai.APIError as e:  # after the client's own retries
            raise RuntimeError(
                f"the server at {self.base_url} failed on prompt {i}: {type(e).__name__}: {e}"
            ) from e
        if not resp.choices:
            raise RuntimeError(f"the server at {self.base_url} answered with no choices")
        return self._generation(resp.choices[0], stop)

    def _create(
        self, model: str, prompt: list[int], params: SamplingParams, stop: list[str], i: int,
        extra: dict[str, Any],
    ) -> Any:  # fmt: skip
        return self.client.completions.create(
            model=model,
            prompt=prompt,
            max_tokens=params.max_new_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=None if params.seed is None else params.seed + i,
            stop=stop or None,
            logprobs=1,
            extra_body=extra,
        )

    def _generation(self, choice: Any, stop: list[str]) -> Generation:
        text = choice.text or ""
        extra = getattr(choice, "model_extra", None) or {}
        ids = extra.get("token_ids") or getattr(choice, "token_ids", None)
        lps = getattr(getattr(choice, "logprobs", None), "token_logprobs", None)
        exact = ids is not None and lps is not None and len(lps) == len(ids)
        if ids is None:
            ids = self.tokenizer.encode(text, add_special_tokens=False)
        ids = [int(t) for t in ids]
        logprobs = [float(x) for x in lps] if exact else [0.0] * len(ids)
        if not exact:
            self.token_exact = False
        found = [(text.find(s), s) for s in stop if s in text]
        hit = min(found)[1] if found else None
        if ids and ids[-1] in self.eos_token_ids:
            reason = "eos"
        elif choice.finish_reason == "stop" and hit is not None:
            reason = "stop"
        elif choice.finish_reason == "stop":
            # an end of turn the server cut off (it did not send the EOS token back)
            reason = "eos"
        else:
            reason = "length"
        return Generation(
            token_ids=ids,
            logprobs=logprobs,
            finish_reason=reason,
            stop_string=hit if reason == "stop" else None,
            text=self.tokenizer.decode(
                ids, skip_special_tokens=False, clean_up_tokenization_spaces=False
            ),
            meta={"token_exact": exact},
        )
