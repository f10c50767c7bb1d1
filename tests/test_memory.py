"""release_memory frees cyclic garbage that holds tensors."""

from __future__ import annotations

import gc
import weakref

import torch

from trajlab.memory import release_memory


class _Holder:
    pass


def test_release_memory_frees_tensors_held_by_reference_cycles():
    gc.disable()  # make sure only release_memory() can run the cycle collector
    try:
        a, b = _Holder(), _Holder()
        a.other, b.other = b, a  # a cycle, like an engine and the loop that holds it
        a.weights = torch.zeros(1024, 1024)
        alive = weakref.ref(a.weights)
        del a, b
        assert alive() is not None  # unreachable, but not freed: the cycle keeps it
        release_memory()
        assert alive() is None
    finally:
        gc.enable()
