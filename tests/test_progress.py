"""Rollout progress: tokens, tool calls in flight and episodes reach the bar while a batch
is still running, redraws are rate-limited, and the ETA follows the token rate."""

from __future__ import annotations

import pytest

from trajlab.agent.loop import AgentConfig, AgentLoop
from trajlab.engines.fake import FakeEngine
from trajlab.progress import RolloutProgress
from trajlab.tools.fake import ScriptedTool
from trajlab.types import Example


class Bar:
    """Records what a tqdm bar would show."""

    def __init__(self):
        self.n, self.shown, self.closed = 0, [], False

    def update(self, n):
        self.n += n

    def set_postfix_str(self, text, refresh=True):
        self.text = text

    def refresh(self):
        self.shown.append((self.n, self.text))

    def close(self):
        self.closed = True


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_counts_rate_eta_and_rate_limited_redraws():
    clock, bar = Clock(), Bar()
    p = RolloutProgress(4, tokens_per_episode=100, refresh_s=2.0, clock=clock, bar=bar)
    clock.t = 1.0
    p.add_tokens(50)  # first draw: 50 tok in 1 s, 4 x 100 expected -> 350 left at 50/s
    assert bar.shown[-1] == (0, "50 tok, 50 tok/s, eta ~0:07")
    clock.t = 1.5
    p.add_tokens(25)  # within refresh_s of the last draw: counted, not drawn
    assert len(bar.shown) == 1 and p.tokens == 75
    p.tools_started(3)
    clock.t = 3.0
    p.add_tokens(75)
    assert bar.shown[-1] == (0, "150 tok, 50 tok/s, 3 tools running, eta ~0:05")
    p.tools_finished(3)
    p.episodes_finished(2, tokens=60)  # finished ones used 30 each: 4 x 30 < 150 seen
    assert bar.shown[-1] == (2, "150 tok, 50 tok/s, eta ~0:00")
    p.set(acc="0.500")
    assert bar.shown[-1][1].endswith("acc=0.500")
    p.episodes_finished(2, tokens=90)
    p.close()
    assert bar.closed and "eta" not in bar.shown[-1][1]  # all done: no ETA


def test_hour_long_eta_is_written_with_hours():
    clock, bar = Clock(), Bar()
    p = RolloutProgress(100, tokens_per_episode=1000, clock=clock, bar=bar)
    clock.t = 10.0
    p.add_tokens(20)  # 2 tok/s, 99,980 tokens left
    assert "eta ~13:53:10" in bar.shown[-1][1]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from trajlab.models import load_tokenizer
    from trajlab.testing import make_tiny_model

    return load_tokenizer(make_tiny_model(tmp_path_factory.mktemp("tiny") / "model"))


@pytest.mark.parametrize("reports_tokens", [True, False], ids=["engine-reports", "loop-reports"])
def test_agent_loop_reports_every_token_tool_call_and_episode(tok, reports_tokens):
    script = ["```python\nprint(6*7)\n```\n", "The answer is \\boxed{42}."] * 2

    class TurnEngine(FakeEngine):  # an engine without on_tokens: the loop counts per turn
        def generate(self, prompts, params, stop=()):
            return super().generate(prompts, params, stop)

    engine = (FakeEngine if reports_tokens else TurnEngine)(tok, script)
    tool = ScriptedTool("python", {"print(6*7)": "42"})
    loop = AgentLoop(engine, {"python": tool}, AgentConfig(), prompt_builder=_prompt)
    clock, bar = Clock(), Bar()
    p = RolloutProgress(2, clock=clock, bar=bar)
    trajs = loop.run(
        [(Example("q", "6 x 7?", "42"), 0), (Example("q", "6 x 7?", "42"), 1)], progress=p
    )
    model_tokens = sum(t.num_model_tokens for t in trajs)
    assert p.tokens >= model_tokens > 0  # sampled; the loop may drop a few after a call
    assert (p.finished, p.finished_tokens, bar.n) == (2, model_tokens, 2)
    assert (p.tool_calls, p.tools_running) == (2, 0)
    assert loop.run([(Example("q", "6 x 7?", "42"), 0)]) and p.finished == 2  # detached after


def _prompt(ex):
    return [{"role": "user", "content": ex.question}]


def test_hf_engine_reports_tokens_while_it_decodes(tiny_model_dir):
    from trajlab.engines.base import SamplingParams
    from trajlab.engines.hf import HFEngine

    engine = HFEngine.from_spec(str(tiny_model_dir))
    calls: list[int] = []
    gens = engine.generate(
        [[1, 2, 3], [4, 5]],
        SamplingParams(temperature=0.0, max_new_tokens=6),
        on_tokens=calls.append,
    )
    assert sum(calls) == sum(len(g.token_ids) for g in gens)
    assert len(calls) == max(len(g.token_ids) for g in gens)  # once per decode step
