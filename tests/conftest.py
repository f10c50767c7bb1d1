"""Shared pytest fixtures. Session-scoped fixtures are built once per test run.

tiny_model_dir: a tiny random Llama + real byte-level BPE tokenizer + ChatML template
(trajlab.testing.make_tiny_model), saved in a temp dir. tiny_model / tiny_tokenizer are
loaded from it once and shared: do not train or modify them in place; a test that
changes weights loads its own copy with trajlab.models.load_model(tiny_model_dir).

Nothing in the tests reaches the Hugging Face Hub: the offline switches are set before
any test imports huggingface_hub, transformers or datasets.
"""

from __future__ import annotations

import os

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.pop("TRAJLAB_DATA", None)  # local benchmark copies come from each test's own dir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from trajlab.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from trajlab.models import load_model

    return load_model(tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from trajlab.models import load_tokenizer

    return load_tokenizer(tiny_model_dir)
