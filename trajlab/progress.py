"""Live progress of a rollout: episodes finished, tokens sampled, tool calls running, ETA.

    progress = RolloutProgress(total=40, desc="eval", tokens_per_episode=224)
    loop.run(jobs, progress=progress)  # the engine reports tokens, the loop tools and episodes
    progress.close()

Why: a batched rollout finishes its episodes together at the end of the batch, so a bar
that counts episodes alone sits at 0/40 for minutes. This one also counts the tokens the
engine samples at every decode step and the tool calls in flight, and redraws at least
every `refresh_s` seconds while anything moves, e.g.

    eval:  12%|#2        | 5/40 [00:31<...] 1840 tok, 58 tok/s, 3 tools running, eta ~1:49

The ETA comes from the token rate, assuming each unfinished episode needs as many tokens
as the finished ones did on average (the per-episode token budget until one has finished),
so it is an estimate and is shown with "~". Everything is called from the rollout's own
thread; nothing here starts a thread.

What it does not do: count prefill work (prompt tokens), which is in the rate only through
the time it takes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class RolloutProgress:
    """Counts for one rollout, drawn on a tqdm bar whose position is episodes finished."""

    def __init__(
        self,
        total: int,
        desc: str = "rollout",
        tokens_per_episode: int = 0,
        enabled: bool = True,
        refresh_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        bar: Any = None,
    ):
        self.total = total
        self.tokens_per_episode = tokens_per_episode  # budget, for the ETA before any finishes
        self.refresh_s = refresh_s
        self.clock = clock
        self.tokens = 0  # sampled so far
        self.finished = 0
        self.finished_tokens = 0  # tokens of the finished episodes
        self.tools_running = 0
        self.tool_calls = 0
        self.extra: dict[str, str] = {}  # caller's fields, e.g. acc=0.550
        self._start = clock()
        self._drawn = float("-inf")
        if bar is None:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc=desc, unit="ep", disable=not enabled, dynamic_ncols=True)
        self.bar = bar

    # -- what the engine and the loop report ---------------------------------------------
    def add_tokens(self, n: int) -> None:
        self.tokens += n
        self._draw()

    def tools_started(self, n: int = 1) -> None:
        self.tools_running += n
        self.tool_calls += n
        self._draw()

    def tools_finished(self, n: int = 1) -> None:
        self.tools_running -= n
        self._draw()

    def episodes_finished(self, n: int, tokens: int) -> None:
        """n episodes ended, with `tokens` model tokens between them."""
        self.finished += n
        self.finished_tokens += tokens
        self.bar.update(n)
        self._draw(force=True)

    def set(self, **fields: str) -> None:
        self.extra.update(fields)
        self._draw(force=True)

    def close(self) -> None:
        self._draw(force=True)
        self.bar.close()

    # -- what is shown -------------------------------------------------------------------
    def eta_s(self) -> float | None:
        """Seconds left at the current token rate, or None before any token."""
        elapsed = self.clock() - self._start
        if self.tokens == 0 or elapsed <= 0:
            return None
        per_episode = (
            self.finished_tokens / self.finished if self.finished else self.tokens_per_episode
        )
        expected = max(self.tokens, per_episode * self.total)
        return (expected - self.tokens) / (self.tokens / elapsed)

    def status(self) -> str:
        elapsed = max(self.clock() - self._start, 1e-9)
        parts = [f"{self.tokens} tok", f"{self.tokens / elapsed:.0f} tok/s"]
        if self.tools_running:
            parts.append(f"{self.tools_running} tools running")
        eta = self.eta_s()
        if eta is not None and self.finished < self.total:
            parts.append(f"eta ~{_clock_text(eta)}")
        parts += [f"{k}={v}" for k, v in self.extra.items()]
        return ", ".join(parts)

    def _draw(self, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._drawn < self.refresh_s:
            return
        self._drawn = now
        self.bar.set_postfix_str(self.status(), refresh=False)
        self.bar.refresh()


def _clock_text(seconds: float) -> str:
    s = int(round(seconds))
    return (
        f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )
