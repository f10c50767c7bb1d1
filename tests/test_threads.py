"""ThreadGovernor: one torch thread per core that other processes leave free."""

from __future__ import annotations

import logging

import pytest
import torch

from trajlab import threads as th


@pytest.fixture
def machine(monkeypatch):
    """A fake 2-core machine whose /proc tick counters the test advances."""
    state = {"busy": 0, "own": 0}
    monkeypatch.setattr(th, "_cpu_ticks", lambda: (state["busy"], state["own"]))
    monkeypatch.setattr(th, "usable_cores", lambda: 2)
    clock = {"t": 100.0}
    monkeypatch.setattr(th.time, "monotonic", lambda: clock["t"])
    monkeypatch.setattr(th.time, "sleep", lambda s: clock.__setitem__("t", clock["t"] + s))
    monkeypatch.setattr(th.os, "sysconf", lambda name: 100)  # 100 ticks per second
    before = torch.get_num_threads()
    yield state, clock
    torch.set_num_threads(before)


def _run(state, clock, seconds, own_cores, other_cores):
    clock["t"] += seconds
    state["own"] += int(own_cores * 100 * seconds)
    state["busy"] += int((own_cores + other_cores) * 100 * seconds)


def test_threads_follow_the_cores_others_leave_free(machine, caplog):
    state, clock = machine
    g = th.ThreadGovernor(recheck_s=5.0)
    assert g.adjust() == 2 and torch.get_num_threads() == 2  # idle (the first 0.2 s window)
    _run(state, clock, 6, own_cores=1.0, other_cores=1.0)  # one competitor at full speed
    with caplog.at_level(logging.WARNING):
        assert g.adjust() == 1 and torch.get_num_threads() == 1
    assert abs(g.other_busy - 1.0) < 1e-6
    assert "the machine is busy" in caplog.text
    _run(state, clock, 2, own_cores=1.0, other_cores=0.0)
    assert g.adjust() == 1  # not re-checked before recheck_s
    _run(state, clock, 4, own_cores=2.0, other_cores=0.1)  # the competitor left
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert g.adjust() == 2
    assert "the machine is busy" not in caplog.text  # warned once


def test_a_light_neighbour_does_not_cost_a_thread(machine):
    state, clock = machine
    g = th.ThreadGovernor(recheck_s=1.0)
    g.adjust()
    _run(state, clock, 2, own_cores=2.0, other_cores=0.5)  # below OVERSUBSCRIBED
    assert g.adjust() == 2


def test_a_configured_count_is_kept(machine):
    state, clock = machine
    g = th.ThreadGovernor(configured=1)
    _run(state, clock, 10, own_cores=0.0, other_cores=0.0)
    assert g.adjust() == 1 and torch.get_num_threads() == 1


def test_the_real_counters_read():
    busy, own = th._cpu_ticks()
    assert busy >= own >= 0
    assert th.usable_cores() >= 1
