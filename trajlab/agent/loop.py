"""The agent loop: a batch of episodes stepped through an explicit state machine.

    loop = AgentLoop(engine, tools={"python": PythonTool()}, config=AgentConfig(protocol="code"))
    trajectories = loop.run([(example, sample_index), ...])

Each episode is in one of three states:

    GENERATE ──► (parse the turn) ──► ACT ──► GENERATE ... ──► DONE(stop_reason)

GENERATE: all episodes waiting for the model are sent to the engine together, one
batch per (token budget, stop strings) key. The sampled tokens are appended exactly
as generated, with their logprobs, as a `model` segment; if the turn ran past the end
of a tool call, the tokens after it are dropped (never re-tokenised).
ACT: calls run concurrently in a thread pool (the sandbox pool does the isolation);
each observation is appended as `template` and `tool` segments with loss mask 0.
DONE: one of answer | length | max_turns | tool_error | context_overflow | error.

Budgets: max turns, max tool calls (in total and per tool), max new tokens per turn and
per trajectory, and the context length. When a call budget is spent, the next turn is
generated without the tool stop strings so the model must finish (ToRL's last round);
a call written in that turn is recorded on the trajectory but not run.

Failures are data, never exceptions out of `run`: a malformed call becomes an observation
telling the model what was wrong; a crashing tool ends that episode with `tool_error`;
an engine failure ends the affected episodes with `error`. Other episodes go on.

Continuous batching (`continuous_batching: true`; the hf engine's `stream`, any other
engine through a stream of plain generate calls):
instead of generating every waiting episode's turn together and then running every
call, one decode batch runs throughout; an episode whose turn ends leaves it, its call
runs in the pool while the others keep decoding, and it rejoins as soon as its
observation is appended, prefilling only the tokens its cached KV does not cover; new
episodes join as slots free up (trajlab/engines/stream.py). The trajectories hold the
same segments either way; greedy outputs are the same (tested), sampled ones are seeded
per (episode, turn).

Step by step: `start`, `advance` (one turn of every episode), `fork` (copy a partial
episode) and `finish` are what `run` is made of; test-time search (trajlab/test_time)
drives them itself to expand and prune partial trajectories.

What this loop does not do: score trajectories (see rewards/) or batch across calls of
`run`.
"""

from __future__ import annotations

import inspect
import logging
import time
import traceback
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from trajlab.agent.protocols import (
    ANSWER_RE,
    PROTOCOLS,
    Action,
    NativeProtocol,
    get_protocol,
    truncate_observation,
)
from trajlab.config import at_least, opt
from trajlab.engines.base import Engine, Generation, SamplingParams
from trajlab.progress import RolloutProgress
from trajlab.tools.base import Tool, ToolResult, keeps_sessions, tool_schema
from trajlab.types import Example, Segment, ToolCall, Trajectory

log = logging.getLogger(__name__)


@dataclass
class AgentConfig:
    protocol: str = opt("code", "how tool calls are written and answered", choices=tuple(PROTOCOLS))
    tools: list[str] = opt(["python"], "tools the model may call (empty: plain reasoning, no tool)")
    max_turns: int = opt(4, "maximum model generation turns per trajectory")
    max_tool_calls: int = opt(3, "maximum tool calls per trajectory, all tools together")
    max_calls_per_tool: dict[str, int] = opt({}, "optional per-tool call limits, e.g. {search: 2}")
    max_new_tokens_per_turn: int = opt(512, "token budget of one generation turn")
    max_new_tokens: int = opt(1024, "token budget of the whole response (model and tool tokens)")
    max_context: int = opt(0, "context length limit in tokens; 0 uses the model's own limit")
    observation_max_chars: int = opt(
        400, "keep head and tail of longer observations (CIR: 200 + 200); 0 keeps all"
    )
    stateful: bool = opt(False, "keep Python variables between the calls of one trajectory")
    tool_threads: int = opt(8, "threads that wait on tool calls concurrently")
    continuous_batching: bool = opt(
        False,
        "one running decode batch that episodes leave while their tool call runs and rejoin "
        "with a prefill of the observation only (hf; other engines overlap calls only)",
    )

    def __post_init__(self) -> None:
        for name, lo in (
            ("max_turns", 1),
            ("max_tool_calls", 0),
            ("max_new_tokens_per_turn", 1),
            ("max_new_tokens", 1),
        ):
            if getattr(self, name) < lo:
                raise ValueError(f"{name} must be >= {lo}, got {getattr(self, name)}")
        at_least(self, max_context=0, observation_max_chars=0, tool_threads=1)


@dataclass
class _Episode:
    example: Example
    traj: Trajectory
    ids: list[int]  # the whole context so far
    prompt_len: int
    turns: int = 0
    calls: int = 0
    calls_by_tool: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    void_turns: int = 0
    sessions: dict[str, Any] = field(default_factory=dict)  # tool name -> its session
    pending: Action | None = None
    done: bool = False

    @property
    def response_len(self) -> int:
        return len(self.ids) - self.prompt_len


PromptBuilder = Callable[[Example], list[dict[str, str]]]


class AgentLoop:
    def __init__(
        self,
        engine: Engine,
        tools: dict[str, Tool],
        config: AgentConfig,
        sampling: SamplingParams | None = None,
        prompt_builder: PromptBuilder | None = None,
    ) -> None:
        self.engine = engine
        self.tok = engine.tokenizer
        # engines may report sampled tokens as they go (Engine.generate's on_tokens)
        self._engine_reports_tokens = "on_tokens" in inspect.signature(engine.generate).parameters
        self._progress: RolloutProgress | None = None
        self.config = config
        self.sampling = sampling or SamplingParams()
        self.protocol = get_protocol(config.protocol)
        missing = [t for t in config.tools if t not in tools]
        if missing:
            raise ValueError(
                f"tools {missing} are enabled in the config but were not provided to the agent loop"
            )
        self.tools = {name: tools[name] for name in config.tools}
        _check_protocol_can_call(self.protocol, self.tools)
        if prompt_builder is None:
            from trajlab.tasks.prompts import render_messages

            proto_name = config.protocol if config.tools else "none"

            def prompt_builder(ex: Example) -> list[dict[str, str]]:
                return render_messages(ex, proto_name)

        self.prompt_builder = prompt_builder
        self.max_context = config.max_context or _model_context(engine)
        self._tokenizer_id = _fingerprint(self.tok)
        if isinstance(self.protocol, NativeProtocol) and self.tools:
            _check_template_supports_tools(self.tok, self._schemas())

    # -- public -------------------------------------------------------------
    def run(
        self,
        jobs: Sequence[tuple[Example, int]],
        group_ids: Sequence[str] | None = None,
        progress: RolloutProgress | None = None,
    ) -> list[Trajectory]:
        """Roll out one trajectory per (example, sample_index) job, in the order given.
        `progress`, when given, hears of every sampled token, tool call and ended episode."""
        self._progress = progress
        try:
            episodes = [
                self._start(ex, i, group_ids[k] if group_ids else ex.id)
                for k, (ex, i) in enumerate(jobs)
            ]
            t0 = time.perf_counter()
            with ThreadPoolExecutor(max_workers=max(1, self.config.tool_threads)) as pool:
                if self.streams:
                    self._run_streaming(episodes, pool)
                else:
                    self._run_turns(episodes, pool)
        finally:
            self._progress = None
        for e in episodes:
            self._finish(e)
        log.debug("rolled out %d trajectories in %.1fs", len(episodes), time.perf_counter() - t0)
        return [e.traj for e in episodes]

    # -- step by step (test-time search) ----------------------------------------
    # run() is start, advance until every episode is done, finish. Search over turns
    # calls them itself: it advances partial episodes one turn, forks the promising ones
    # and drops the rest; every fork stays a token-exact ledger entry.

    def start(
        self, jobs: Sequence[tuple[Example, int]], group_ids: Sequence[str] | None = None
    ) -> list[_Episode]:
        """Episodes for the jobs, each holding only its prompt."""
        return [self._start(ex, i, group_ids[k] if group_ids else ex.id) for k, (ex, i) in
                enumerate(jobs)]  # fmt: skip

    def advance(self, episodes: Sequence[_Episode]) -> None:
        """One turn of every episode not yet done: their generations together, then their
        tool calls, whose observations are appended. An episode may end on the way."""
        waiting = [e for e in episodes if not e.done and e.pending is None]
        if not waiting:
            return
        self._generate(waiting)
        calling = [e for e in waiting if not e.done and e.pending is not None]
        if calling:
            with ThreadPoolExecutor(max_workers=max(1, self.config.tool_threads)) as pool:
                self._act(calling, pool)

    def fork(self, e: _Episode, sample_index: int) -> _Episode:
        """An independent copy of a partial episode, to be continued differently. Segments
        are shared as they are (never modified after they are appended); counters, the
        context and the call list are copied."""
        if e.sessions:
            raise ValueError("an episode with stateful tool sessions cannot be forked")
        if e.pending is not None:
            raise ValueError("an episode with a call in flight cannot be forked")
        t = e.traj
        traj = Trajectory(
            example_id=t.example_id, group_id=t.group_id, sample_index=sample_index,
            segments=list(t.segments), tool_calls=list(t.tool_calls),
            stop_reason=t.stop_reason, metadata=dict(t.metadata),
        )  # fmt: skip
        return _Episode(
            example=e.example, traj=traj, ids=list(e.ids), prompt_len=e.prompt_len,
            turns=e.turns, calls=e.calls, calls_by_tool=defaultdict(int, e.calls_by_tool),
            void_turns=e.void_turns, done=e.done,
        )  # fmt: skip

    def resume(self, example: Example, traj: Trajectory, cut: int, sample_index: int) -> _Episode:
        """A partial episode holding the first `cut` segments of a stored trajectory, to be
        continued as if this loop had sampled them. segments[cut] must be a model turn (so
        the cut falls after the prompt or after an observation), and the stored prompt must
        be the one this loop renders for `example` with its tokenizer."""
        if self.config.stateful:
            raise ValueError("a stored trajectory cannot be resumed with stateful tool sessions")
        if not 0 < cut < len(traj.segments) or traj.segments[cut].source != "model":
            raise ValueError(f"cut {cut} of {traj.example_id!r} is not where a turn starts")
        segs = traj.segments[:cut]
        ep = self._start(example, sample_index, traj.group_id)
        if segs[0].token_ids != ep.traj.segments[0].token_ids:
            raise ValueError(
                f"trajectory {traj.example_id!r} was sampled from another prompt (other prompt "
                "template, protocol or tokenizer) than this loop renders"
            )
        turns = sum(s.source == "model" for s in segs)
        calls = [c for c in traj.tool_calls if c.turn <= turns and c.status != "limit"]
        ep.traj.segments = list(segs)
        ep.traj.tool_calls = list(calls)
        ep.ids = [i for s in segs for i in s.token_ids]
        ep.turns, ep.calls = turns, len(calls)
        for c in calls:
            ep.calls_by_tool[c.tool] += 1
        return ep

    def finish(self, episodes: Sequence[_Episode]) -> list[Trajectory]:
        """The trajectories of episodes (done or not), with their metadata filled in."""
        for e in episodes:
            self._finish(e)
        return [e.traj for e in episodes]

    def _run_turns(self, episodes: list[_Episode], pool: ThreadPoolExecutor) -> None:
        """GENERATE every waiting episode's turn together, then ACT on every call."""
        while True:
            waiting = [e for e in episodes if not e.done and e.pending is None]
            if not waiting:
                return
            self._generate(waiting)
            self._act([e for e in episodes if not e.done and e.pending is not None], pool)

    # -- states ----------------------------------------------------------------
    def _start(self, example: Example, sample_index: int, group_id: str) -> _Episode:
        traj = Trajectory(example_id=example.id, group_id=group_id, sample_index=sample_index)
        messages = self.prompt_builder(example)
        text = self._render_prompt(messages)
        ids = self.tok.encode(text, add_special_tokens=False)
        traj.add(Segment("prompt", ids, text=text))
        ep = _Episode(example=example, traj=traj, ids=list(ids), prompt_len=len(ids))
        ep.traj.metadata["messages"] = messages
        if self.config.stateful:
            ep.sessions = {n: t.open_session() for n, t in self.tools.items() if keeps_sessions(t)}
        if len(ids) >= self.max_context:
            self._end(
                ep,
                "context_overflow",
                f"prompt has {len(ids)} tokens; context limit is {self.max_context}",
            )
        return ep

    def _generate(self, episodes: list[_Episode]) -> None:
        batches: dict[tuple[int, tuple[str, ...]], list[_Episode]] = defaultdict(list)
        for e in episodes:
            plan = self._turn_plan(e)
            if plan is not None:
                batches[plan].append(e)
        for (budget, stops), group in batches.items():
            params = SamplingParams(
                temperature=self.sampling.temperature,
                top_p=self.sampling.top_p,
                top_k=self.sampling.top_k,
                max_new_tokens=budget,
                seed=self._turn_seed(group[0].turns),
            )
            progress = self._progress
            report = progress is not None and self._engine_reports_tokens
            hook = {"on_tokens": progress.add_tokens} if report else {}
            try:
                gens = self.engine.generate(
                    [e.ids for e in group], params, stop=list(stops), **hook
                )
                if progress is not None and not report:
                    progress.add_tokens(sum(len(g.token_ids) for g in gens))
                if len(gens) != len(group):
                    raise RuntimeError(
                        f"engine returned {len(gens)} generations for {len(group)} prompts"
                    )
            except Exception as exc:  # an engine failure ends these episodes, not the batch
                log.error("engine failed on %d episodes: %s", len(group), exc)
                for e in group:
                    self._end(e, "error", f"engine error: {exc!r}")
                continue
            for e, g in zip(group, gens):
                self._take_turn(e, g, final=not stops)

    def _take_turn(self, e: _Episode, g: Generation, final: bool) -> None:
        e.turns += 1
        text = g.text or self.tok.decode(g.token_ids)
        ids, logprobs = list(g.token_ids), list(g.logprobs)
        action = self.protocol.parse(text, list(self.tools))
        if final:
            # Generated without tool stop strings: nothing will be run, keep the whole turn.
            e.ids.extend(ids)
            e.traj.add(Segment("model", ids, text=text, logprobs=logprobs))
            if ANSWER_RE.search(text):
                self._end(e, "answer")
            elif action.kind in ("call", "bad_call") and self.tools:
                # The call budget is spent: the call is recorded but never run.
                e.traj.tool_calls.append(
                    ToolCall(
                        action.tool or "?",
                        action.args,
                        ok=False,
                        status="limit",
                        error="call budget exhausted",
                        turn=e.turns,
                    )
                )
                self._end(e, "max_turns")
            else:
                e.void_turns += action.kind == "void" and bool(self.tools)
                self._end(e, "length" if g.finish_reason == "length" else "answer")
            return
        if action.end is not None and action.end < len(text):
            # The turn ran past the end of the call (e.g. a stop token spanning the fence):
            # drop the tokens after it, as CIR's interaction-boundary matching does.
            keep = _tokens_covering(self.tok, ids, action.end)
            ids, logprobs = ids[:keep], logprobs[:keep]
            text = self.tok.decode(ids)
        e.ids.extend(ids)
        e.traj.add(Segment("model", ids, text=text, logprobs=logprobs))
        if action.kind in ("call", "bad_call"):
            e.pending = action
            return
        if action.kind == "void":
            e.void_turns += 1
        self._end(e, "length" if g.finish_reason == "length" else "answer")

    def _act(self, episodes: list[_Episode], pool: ThreadPoolExecutor) -> None:
        started = [(e, e.pending, *self._start_call(e, pool)) for e in episodes]
        running = sum(fut is not None for _, _, fut, _ in started)
        if self._progress is not None and running:
            self._progress.tools_started(running)
        for e, action, fut, result in started:
            self._finish_call(e, action, fut, result)
        if self._progress is not None and running:
            self._progress.tools_finished(running)

    def _start_call(
        self, e: _Episode, pool: ThreadPoolExecutor
    ) -> tuple[Future | None, ToolResult | None]:
        """Submit the episode's pending call: (its future, None), or (None, the result)
        when it cannot run (a malformed call, a per-tool limit)."""
        action = e.pending
        assert action is not None
        e.calls += 1
        if action.kind == "bad_call":
            error = action.error
            return None, ToolResult(
                output=f"Error: {error}", ok=False, status="parse_error", error=error
            )
        e.calls_by_tool[action.tool] += 1
        limit = self.config.max_calls_per_tool.get(action.tool)
        if limit is not None and e.calls_by_tool[action.tool] > limit:
            msg = f"the {action.tool} tool may be called at most {limit} times"
            return None, ToolResult(output=f"Error: {msg}", ok=False, status="limit", error=msg)
        tool = e.sessions.get(action.tool) or self.tools[action.tool]
        return pool.submit(_timed_run, tool, action.args), None

    def _finish_call(
        self, e: _Episode, action: Action, fut: Future | None, result: ToolResult | None
    ) -> None:
        """Record the call's result (waiting for it if needed) and append the observation;
        a tool that raised ends this episode only."""
        e.pending = None
        if fut is not None:
            try:
                result = fut.result()
            except Exception as exc:  # the tool itself broke: end this episode only
                e.traj.tool_calls.append(
                    ToolCall(
                        action.tool or "?",
                        action.args,
                        ok=False,
                        status="tool_error",
                        error=repr(exc),
                        turn=e.turns,
                    )
                )
                self._end(
                    e,
                    "tool_error",
                    f"tool {action.tool} raised: {exc!r}\n{traceback.format_exc(limit=3)}",
                )
                return
        assert result is not None
        e.traj.tool_calls.append(
            ToolCall(
                action.tool or "?",
                action.args,
                result=result.output,
                ok=result.ok,
                latency_s=result.latency_s,
                error=result.error,
                status=result.status,
                turn=e.turns,
                metadata=dict(result.metadata),
            )
        )
        self._append_observation(e, action.tool or "?", result.output)

    # -- continuous batching -------------------------------------------------------
    @property
    def streams(self) -> bool:
        """Whether `run` overlaps turns and calls through one decode stream
        (config.continuous_batching) instead of turn-by-turn batches. An engine without a
        stream of its own gets trajlab.engines.stream.GenerateStream (no KV reuse)."""
        return self.config.continuous_batching

    def _run_streaming(self, episodes: list[_Episode], pool: ThreadPoolExecutor) -> None:
        """GENERATE and ACT overlapped: an episode leaves the decode batch when its turn
        ends, its call runs in the pool while the others decode, and it rejoins the batch
        (prefilling only the observation) when the result is in."""
        from trajlab.engines.stream import open_stream

        ready = deque(k for k, e in enumerate(episodes) if not e.done)
        calls: dict[Future, tuple[int, Action]] = {}
        final: dict[int, bool] = {}
        progress = self._progress
        s = self.sampling
        params = SamplingParams(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k)
        hook = progress.add_tokens if progress is not None else None
        with open_stream(self.engine, params, on_tokens=hook) as stream:
            while ready or stream.busy or calls:
                while ready and stream.free_slots > 0:
                    k = ready.popleft()
                    self._join(stream, k, episodes[k], final)
                for k, gen in self._step(stream, episodes, final):
                    e = episodes[k]
                    self._take_turn(e, gen, final=final.pop(k))
                    if e.pending is not None:
                        action = e.pending
                        fut, result = self._start_call(e, pool)
                        if fut is None:
                            self._finish_call(e, action, None, result)
                        else:
                            calls[fut] = (k, action)
                            if progress is not None:
                                progress.tools_started(1)
                            continue
                    self._after_turn(stream, k, e, ready)
                if calls:
                    idle = not (stream.busy or ready)
                    done, _ = wait(calls, timeout=None if idle else 0, return_when=FIRST_COMPLETED)
                    for fut in done:
                        k, action = calls.pop(fut)
                        self._finish_call(episodes[k], action, fut, None)
                        if progress is not None:
                            progress.tools_finished(1)
                        self._after_turn(stream, k, episodes[k], ready)

    def _join(self, stream: Any, k: int, e: _Episode, final: dict[int, bool]) -> None:
        plan = self._turn_plan(e)
        if plan is None:  # ended on its budget
            stream.forget(k)
            return
        budget, stops = plan
        final[k] = not stops
        seed = self._turn_seed(e.turns)
        stream.add(k, e.ids, max_new_tokens=budget, stop=list(stops), seed=seed, index=k)

    def _step(
        self, stream: Any, episodes: list[_Episode], final: dict[int, bool]
    ) -> list[tuple[int, Generation]]:
        """One stream step. An engine failure ends every episode the stream holds (those
        in `final`, which maps each joined episode to its turn's kind), including any whose
        turn had finished in the failed step, and empties the stream."""
        if not stream.busy:
            return []
        try:
            return stream.step()
        except Exception as exc:
            stream.abort()
            log.error("engine failed on %d episodes: %s", len(final), exc)
            for k in final:
                self._end(episodes[k], "error", f"engine error: {exc!r}")
            final.clear()
            return []

    @staticmethod
    def _after_turn(stream: Any, k: int, e: _Episode, ready: deque) -> None:
        if e.done:
            stream.forget(k)
        else:
            ready.append(k)

    # -- helpers ---------------------------------------------------------------
    def _turn_plan(self, e: _Episode) -> tuple[int, tuple[str, ...]] | None:
        """(token budget, stop strings) of the episode's next turn, or None after ending
        it because no budget is left."""
        budget = min(
            self.config.max_new_tokens_per_turn,
            self.config.max_new_tokens - e.response_len,
            self.max_context - len(e.ids),
        )
        if budget <= 0:
            reason = "context_overflow" if self.max_context - len(e.ids) <= 0 else "length"
            self._end(e, reason)
            return None
        stops = () if self._final_turn(e) else tuple(self.protocol.stop_strings(list(self.tools)))
        return budget, stops

    def _turn_seed(self, turns: int) -> int | None:
        """The sampling seed of a turn: one per turn number, so turns do not repeat draws."""
        return None if self.sampling.seed is None else self.sampling.seed + 7919 * turns

    def _final_turn(self, e: _Episode) -> bool:
        return (
            e.turns + 1 >= self.config.max_turns
            or e.calls >= self.config.max_tool_calls
            or not self.tools
        )

    def _append_observation(self, e: _Episode, tool: str, output: str) -> None:
        shown = truncate_observation(output, self.config.observation_max_chars)
        if isinstance(self.protocol, NativeProtocol):
            pieces = _native_observation(self.tok, e.traj.metadata["messages"], tool, shown)
        else:
            pre, post = self.protocol.render_result(tool, "\x00").split("\x00")
            pieces = [("template", pre), ("tool", shown), ("template", post)]
        added = 0
        for source, text in pieces:
            if not text:
                continue
            ids = self.tok.encode(text, add_special_tokens=False)
            e.traj.add(Segment(source, ids, text=text))
            e.ids.extend(ids)
            added += len(ids)
        if len(e.ids) >= self.max_context:
            self._end(e, "context_overflow", "observation filled the context")
        elif e.response_len >= self.config.max_new_tokens:
            self._end(e, "length")

    def _schemas(self) -> list[dict[str, Any]]:
        """The schemas the enabled tools offer under `native` (tools without one are not offered)."""
        return [s for s in map(tool_schema, self.tools.values()) if s]

    def _render_prompt(self, messages: list[dict[str, str]]) -> str:
        if getattr(self.tok, "chat_template", None):
            kw: dict[str, Any] = {}
            if isinstance(self.protocol, NativeProtocol) and self.tools:
                kw["tools"] = self._schemas()
            return self.tok.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False, **kw
            )
        # Base models without a chat template: plain text, system text first.
        return "\n\n".join(m["content"] for m in messages) + "\n\n"

    def _end(self, e: _Episode, reason: str, error: str | None = None) -> None:
        if self._progress is not None and not e.done:
            self._progress.episodes_finished(1, e.traj.num_model_tokens)
        e.done = True
        e.pending = None
        e.traj.stop_reason = reason
        if error:
            e.traj.metadata["error"] = error

    def _finish(self, e: _Episode) -> None:
        for name, session in e.sessions.items():
            try:
                session.close()
            except Exception as exc:  # closing a session must not lose the trajectory
                log.warning("closing a %s session failed: %r", name, exc)
        e.sessions = {}
        md = e.traj.metadata
        md.pop("messages", None)
        md.update(
            turns=e.turns,
            tool_calls=len(e.traj.tool_calls),
            tool_calls_by_tool=dict(e.calls_by_tool),
            void_turns=e.void_turns,
            response_tokens=e.response_len,
            model_tokens=e.traj.num_model_tokens,
            protocol=self.config.protocol,
            reference=e.example.answer if e.example.answer is not None else e.example.answers,
        )
        if self._tokenizer_id:
            md["tokenizer"] = self._tokenizer_id


def _fingerprint(tok: Any) -> str:
    """The tokenizer's fingerprint (trajlab.models) when it has a vocabulary, else ''."""
    if not hasattr(tok, "get_vocab"):
        return ""
    from trajlab.models import tokenizer_fingerprint

    return tokenizer_fingerprint(tok)


def _timed_run(tool: Tool, args: dict[str, Any]) -> ToolResult:
    t0 = time.perf_counter()
    r = tool.run(args)
    if not r.latency_s:
        r.latency_s = time.perf_counter() - t0
    return r


def _tokens_covering(tok: Any, ids: list[int], end_char: int) -> int:
    """Smallest k such that decode(ids[:k]) reaches `end_char` characters."""
    k = len(ids)
    while k > 1 and len(tok.decode(ids[: k - 1])) >= end_char:
        k -= 1
    return k


def _model_context(engine: Engine) -> int:
    model = getattr(engine, "model", None)
    n = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return int(n) if n else 8192


def _check_protocol_can_call(protocol: Any, tools: dict[str, Tool]) -> None:
    """Every enabled tool must be callable under the protocol: a markup protocol needs a
    call syntax for it, `native` needs its schema. Otherwise the model could never call it."""
    if isinstance(protocol, NativeProtocol):
        unusable = [n for n, t in tools.items() if not tool_schema(t)]
        fix = "give the tool a `schema` (trajlab.tools.base.function_schema)"
    else:
        unusable = [n for n in tools if n not in protocol.tools()]
        fix = (
            f"{protocol.name} writes calls to {', '.join(protocol.tools())} only; use a protocol "
            "with a call syntax for the tool, or native (it offers any tool with a schema)"
        )
    if unusable:
        raise ValueError(
            f"protocol {protocol.name!r} cannot call tool(s) {', '.join(unusable)}; {fix}"
        )


_PLACEHOLDER = "\x01TRAJLAB-ASSISTANT-TURN\x01"


def _check_template_supports_tools(tok: Any, schemas: list[dict[str, Any]]) -> None:
    msgs = [{"role": "user", "content": "hi"}]
    if not getattr(tok, "chat_template", None):
        raise ValueError(
            "protocol 'native' needs a tokenizer with a chat template; use protocol 'code' or 'tags'"
        )
    plain = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    with_tools = tok.apply_chat_template(
        msgs,
        tokenize=False,
        add_generation_prompt=True,
        tools=schemas,
    )
    if plain == with_tools:
        raise ValueError(
            "this tokenizer's chat template ignores the `tools` list, so protocol 'native' cannot offer tools; "
            "use protocol 'code' or 'tags' instead"
        )


def _native_observation(
    tok: Any, messages: list[dict[str, str]], tool: str, result: str
) -> list[tuple[str, str]]:
    """Template text between the end of an assistant turn and the next assistant turn.

    Rendered twice (with and without the tool message) and cut at a placeholder, so the
    model's own tokens are never rendered or re-tokenised.
    """
    asst = {"role": "assistant", "content": _PLACEHOLDER}
    a = tok.apply_chat_template(messages + [asst], tokenize=False)
    b = tok.apply_chat_template(
        messages + [asst, {"role": "tool", "name": tool, "content": result}],
        tokenize=False,
        add_generation_prompt=True,
    )
    cut = a.index(_PLACEHOLDER) + len(_PLACEHOLDER)
    if not b.startswith(a[:cut]):
        raise ValueError(
            "chat template renders earlier turns differently when a tool message follows"
        )
    obs = b[cut:]
    at = obs.rfind(result) if result else -1
    if at < 0:
        return [("template", obs)]
    return [("template", obs[:at]), ("tool", result), ("template", obs[at + len(result) :])]
