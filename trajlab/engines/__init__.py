"""Engines by name: `ENGINES` maps a name to a constructor `(model, tokenizer, **kw) -> Engine`.

    engine = ENGINES["hf"](model, tokenizer, max_batch_size=16, decode_dtype=None)
    engine = make_engine("hf", "default", max_batch_size=16)     # loads the model spec first

Every constructor takes the same keywords: `max_batch_size`, `decode_dtype` (a dtype name
or None) and `fake_responses` (scripted outputs; only the fake engine reads them). Runs
build engines through trajlab.build.build_engine. Constructors import their module on
first use, so `import trajlab.engines` stays cheap and an engine's optional dependencies
are only needed when that engine is built. To add an engine, write a module with a class
that has `tokenizer` and `generate` (see base.py) and add one constructor here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from trajlab.engines.base import Engine, Generation, SamplingParams


def _hf(
    model: Any,
    tokenizer: Any,
    max_batch_size: int = 64,
    decode_dtype: str | None = None,
    fake_responses: Sequence[str] = (),
) -> Engine:
    from trajlab.engines.hf import HFEngine

    return HFEngine(model, tokenizer, max_batch_size=max_batch_size, decode_dtype=decode_dtype)


def _fake(
    model: Any,
    tokenizer: Any,
    max_batch_size: int = 64,
    decode_dtype: str | None = None,
    fake_responses: Sequence[str] = (),
) -> Engine:
    """Scripted outputs, cycled, over a real tokenizer; logprobs from `model` when given."""
    from trajlab.engines.fake import FakeEngine

    responses = list(fake_responses)
    if not responses:
        raise ValueError("the fake engine needs scripted responses (rollout.fake_responses)")
    counter = {"i": 0}

    def respond(_prompt: str) -> str:
        text = responses[counter["i"] % len(responses)]
        counter["i"] += 1
        return text

    return FakeEngine(tokenizer, respond, model=model)


ENGINES: dict[str, Callable[..., Engine]] = {
    "hf": _hf,
    "fake": _fake,
}


def make_engine(name: str, model_spec: str, dtype: str = "float32", **kw) -> Engine:
    """Load `model_spec` (an HF dir, a .gguf file or 'default') and build engine `name` on it."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; choose one of {sorted(ENGINES)}")
    from trajlab.models import load_model, load_tokenizer

    return ENGINES[name](load_model(model_spec, dtype=dtype), load_tokenizer(model_spec), **kw)


__all__ = ["ENGINES", "Engine", "Generation", "SamplingParams", "make_engine"]
