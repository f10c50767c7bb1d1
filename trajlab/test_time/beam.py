"""Verifier-guided beam search over turns.

    result = beam_search(loop, examples, verifier, width=2, expand=2)
    result.chosen[ex.id]      # the trajectory returned for each question
    result.nodes              # every expanded node: the search tree, for tree.jsonl

A step is one model turn: the text up to a tool call (whose observation is appended
before the next step) or up to the answer, the "split at tool calls" rule. At depth 0
the prompt is expanded into width x expand first turns; at every later depth each of
the `width` best partial trajectories (by the verifier's score of the partial
trajectory) is expanded into `expand` continuations, so every depth samples width x
expand turns, batched over all questions. Trajectories that end (an answer, a budget)
leave the beam; when none is left, the finished one with the highest score is returned.
The agent's own budgets (max_turns, max_tool_calls, token budgets) bound the depth.

The verifier scores partial trajectories here: `confidence` (mean token probability so
far) and `orm:DIR` (a probe trained on finished trajectories, read as a value estimate of
the prefix) work on any prefix; a process reward model trained on step labels would be
the natural scorer and is not implemented.

What it does not do: split inside a turn (at newlines or blank lines), or search with
rollouts from each node (MCTS).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from trajlab.types import Example, Trajectory


@dataclass
class Node:
    example_id: str
    node: int
    parent: int | None  # None: a first turn (its parent is the prompt)
    depth: int
    score: float
    done: bool
    tokens: int  # model tokens this node's turn sampled
    text: str  # what the turn appended: the model's text and any observation
    kept: bool = False  # expanded further (in the beam) or returned
    sample_index: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class BeamResult:
    chosen: dict[str, Trajectory]  # example id -> the returned trajectory
    finished: dict[str, list[Trajectory]]  # example id -> every trajectory that ended
    nodes: list[Node] = field(default_factory=list)
    tokens: dict[str, int] = field(default_factory=dict)  # model tokens sampled per question
    verifier_tokens: dict[str, int] = field(default_factory=dict)


def beam_search(
    loop: Any,
    examples: Sequence[Example],
    verifier: Any,
    width: int,
    expand: int,
    on_depth: Callable[[int, int, int], None] | None = None,
) -> BeamResult:
    """Beam search of `width` x `expand` turns per depth for every example (see the module
    docstring); `loop` is an AgentLoop, `verifier` any test_time.verifiers.Verifier.
    `on_depth(depth, turns sampled, partial trajectories kept)` hears of every depth."""
    if width < 1 or expand < 1:
        raise ValueError(f"beam width and expansion must be >= 1, got {width} and {expand}")
    by_id = {ex.id: ex for ex in examples}
    result = BeamResult({}, {ex.id: [] for ex in examples})
    result.tokens = dict.fromkeys(by_id, 0)
    result.verifier_tokens = dict.fromkeys(by_id, 0)
    counter = dict.fromkeys(by_id, 0)
    roots = loop.start([(ex, 0) for ex in examples])
    # (episode, its node id or None for the prompt, its segment count, its model tokens)
    beams = [(r, None, len(r.traj.segments), 0) for r in roots]
    fan = {ex.id: width * expand for ex in examples}  # the prompt fans out to all first turns
    all_nodes: dict[tuple[str, int], Node] = {}
    depth = 0
    while beams:
        children = []
        for parent, pid, nseg, ntok in beams:
            ex_id = parent.traj.example_id
            n = fan[ex_id] if pid is None else expand
            for _ in range(n):
                idx = counter[ex_id]
                counter[ex_id] += 1
                children.append((loop.fork(parent, idx), pid, nseg, ntok))
        loop.advance([c for c, *_ in children])
        verdicts = verifier.score([(by_id[c.traj.example_id], c.traj) for c, *_ in children])
        nxt: dict[str, list[tuple[float, Any]]] = {ex_id: [] for ex_id in by_id}
        for (c, pid, nseg, ntok), v in zip(children, verdicts):
            ex_id = c.traj.example_id
            tokens = c.traj.num_model_tokens - ntok
            result.tokens[ex_id] += tokens
            result.verifier_tokens[ex_id] += int(v.cost_tokens)
            node = Node(
                ex_id, c.traj.sample_index, pid, depth, float(v.score), c.done, tokens,
                "".join(s.text for s in c.traj.segments[nseg:]), sample_index=c.traj.sample_index,
            )  # fmt: skip
            all_nodes[(ex_id, node.node)] = node
            result.nodes.append(node)
            c.traj.metadata["test_time"] = {"score": node.score, "node": node.node, "depth": depth}
            if c.done:
                result.finished[ex_id].append(c)
            else:
                nxt[ex_id].append((node.score, c))
        beams = []
        for ex_id, cands in nxt.items():
            cands.sort(key=lambda sc: (-sc[0], sc[1].traj.sample_index))
            for _, c in cands[:width]:
                all_nodes[(ex_id, c.traj.sample_index)].kept = True
                beams.append(
                    (c, c.traj.sample_index, len(c.traj.segments), c.traj.num_model_tokens)
                )
        if on_depth is not None:
            on_depth(depth, len(children), len(beams))
        depth += 1
    for ex_id, eps in result.finished.items():
        trajs = loop.finish(eps)
        result.finished[ex_id] = trajs
        if trajs:
            best = max(trajs, key=lambda t: (t.metadata["test_time"]["score"], -t.sample_index))
            result.chosen[ex_id] = best
            all_nodes[(ex_id, best.sample_index)].kept = True
    return result
