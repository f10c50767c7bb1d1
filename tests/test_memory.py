"""release_memory frees cyclic garbage that holds tensors; trim_heap returns freed heap pages."""

from __future__ import annotations

import ctypes
import gc
import weakref

import pytest
import torch

from trajlab.memory import peak_rss, release_memory, trim_heap


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


def _private_dirty_bytes() -> int:
    total = 0
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Dirty:", "Private_Clean:")):
                total += int(line.split()[1]) * 1024
    return total


def test_trim_heap_returns_freed_heap_pages():
    if not hasattr(ctypes.CDLL(None), "malloc_trim"):
        pytest.skip("not glibc")
    # Many small blocks, freed all but the last: glibc keeps them in its heap (they are
    # below the mmap threshold), and the last one pins the heap top, so only a trim that
    # releases pages inside the heap gives their memory back.
    blocks = [bytearray(64 * 1024) for _ in range(2000)]  # 128 MiB, every page touched
    keep = blocks[-1]
    del blocks
    held = _private_dirty_bytes()
    trim_heap()
    assert _private_dirty_bytes() < held - 64 * 2**20, "the freed 128 MiB stayed resident"
    assert len(keep) == 64 * 1024


def test_peak_rss_is_the_high_water_mark_of_the_block():
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc")
    out: dict[str, float] = {}
    with peak_rss(out, "big"):
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB, every page written
        del x
    with peak_rss(out, "small"):  # reset at the start: the first block's peak is gone
        pass
    assert out["big"] > 0
    assert out["big"] - out["small"] > 48 / 1024, out  # the 64 MiB show up, then are reset
