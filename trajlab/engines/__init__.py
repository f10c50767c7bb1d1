"""Engines by name: `ENGINES` maps a name to a constructor `(model_spec, **kw) -> Engine`.

    engine = make_engine("hf", "default", max_batch_size=16)

Constructors import their module on first use, so `import trajlab.engines` stays cheap
and an engine's optional dependencies are only needed when that engine is built. To add
an engine, write a module with a class that has `tokenizer` and `generate` (see base.py)
and add one line here.
"""

from __future__ import annotations

from collections.abc import Callable

from trajlab.engines.base import Engine, Generation, SamplingParams


def _hf(model_spec: str, **kw) -> Engine:
    from trajlab.engines.hf import HFEngine

    return HFEngine.from_spec(model_spec, **kw)


def _fake(model_spec: str, **kw) -> Engine:
    """Scripted outputs over a real tokenizer: make_engine("fake", spec, responses=[...])."""
    from trajlab.engines.fake import FakeEngine
    from trajlab.models import load_tokenizer

    return FakeEngine(load_tokenizer(model_spec), **kw)


ENGINES: dict[str, Callable[..., Engine]] = {
    "hf": _hf,
    "fake": _fake,
}


def make_engine(name: str, model_spec: str, **kw) -> Engine:
    """Build the engine called `name` over `model_spec` (an HF dir, a .gguf file or 'default')."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; choose one of {sorted(ENGINES)}")
    return ENGINES[name](model_spec, **kw)


__all__ = ["ENGINES", "Engine", "Generation", "SamplingParams", "make_engine"]
