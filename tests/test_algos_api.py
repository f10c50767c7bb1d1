"""The public surface of trajlab.algos is pinned, and docs/algorithms.md names every option."""

from __future__ import annotations

from pathlib import Path

import trajlab.algos as algos
from trajlab.algos import ADVANTAGES, AGG_MODES, KL_ESTIMATORS

DOC = Path(__file__).resolve().parents[1] / "docs" / "algorithms.md"


def test_exported_names_exist():
    for name in algos.__all__:
        assert hasattr(algos, name), name


def test_registry_names_are_pinned():
    assert sorted(ADVANTAGES) == ["dr_grpo", "grpo", "gspo", "reinforce_pp_baseline", "rloo"]
    assert AGG_MODES == ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")
    assert KL_ESTIMATORS == ("none", "k1", "k2", "k3")


def test_docs_name_every_option():
    text = DOC.read_text(encoding="utf-8")
    names = [*ADVANTAGES, *AGG_MODES, *KL_ESTIMATORS[1:]]
    names += [n for n in algos.__all__ if n[0].islower() and n not in ("combine",)]
    missing = [n for n in names if n not in text]
    assert not missing, f"docs/algorithms.md does not mention {missing}"
