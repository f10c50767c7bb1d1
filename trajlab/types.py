"""The nouns every stage passes around: Example, Segment, ToolCall, RewardBreakdown, Trajectory.

A Trajectory is a token-exact ledger. Its segments, concatenated, are exactly the
token ids the model saw and produced, in order. Model segments keep the token ids
as sampled and the engine's sampling logprobs; prompt, tool and template segments
have loss_mask 0 and no logprobs. Training reads token ids from here and never
re-tokenizes text (DESIGN.md, invariant 1).

Serialisation is plain JSON, one trajectory per line. Python's float repr is the
shortest string that round-trips, so `Trajectory.from_json(t.to_json()) == t`
holds bit for bit, logprobs included.

What this module does not do: tokenise, score or run anything.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SOURCES = ("prompt", "model", "tool", "template")
STOP_REASONS = ("answer", "length", "max_turns", "tool_error", "context_overflow", "error")


@dataclass
class Example:
    """One task instance: a question and its reference answer(s)."""

    id: str
    question: str
    answer: str | None = None  # single reference (math); None when only `answers` is given
    answers: list[str] = field(default_factory=list)  # all accepted references (QA)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def references(self) -> list[str]:
        """Every accepted answer, `answer` first."""
        refs = [self.answer] if self.answer is not None else []
        return refs + [a for a in self.answers if a not in refs]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Example:
        return cls(
            id=str(d["id"]),
            question=d["question"],
            answer=d.get("answer"),
            answers=list(d.get("answers") or []),
            meta=dict(d.get("meta") or {}),
        )


@dataclass
class Segment:
    """A run of tokens from one source.

    source:    prompt | model | tool | template
    token_ids: exact ids, in order
    logprobs:  model segments only: the engine's sampling logprob of each token
    loss_mask: 1 where the token is trained on, 0 elsewhere (always 0 unless source == model)
    text:      a decoding of token_ids for display; never re-tokenised
    """

    source: str
    token_ids: list[int]
    text: str = ""
    logprobs: list[float] | None = None
    loss_mask: list[int] | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"Segment.source must be one of {SOURCES}, got {self.source!r}")
        n = len(self.token_ids)
        if self.loss_mask is None:
            self.loss_mask = [1 if self.source == "model" else 0] * n
        if len(self.loss_mask) != n:
            raise ValueError(f"loss_mask has {len(self.loss_mask)} entries for {n} tokens")
        if self.source != "model":
            if any(self.loss_mask):
                # Tool output and templates are not the policy's actions; training on them
                # teaches the model to predict the interpreter, not to act (DESIGN invariant 2).
                raise ValueError(f"{self.source} tokens must have loss_mask 0")
            if self.logprobs is not None:
                raise ValueError(f"{self.source} tokens carry no sampling logprobs")
        elif self.logprobs is not None and len(self.logprobs) != n:
            raise ValueError(f"logprobs has {len(self.logprobs)} entries for {n} tokens")

    def __len__(self) -> int:
        return len(self.token_ids)


@dataclass
class ToolCall:
    """One tool invocation and what came back.

    status is the tool's own word: ok, error, timeout, output_limit, parse_error,
    unknown_tool, limit (a call budget was exhausted), ...
    """

    tool: str
    args: dict[str, Any]
    result: str = ""
    ok: bool = True
    latency_s: float = 0.0
    error: str | None = None
    status: str = "ok"
    turn: int = 0  # index of the model turn that made the call
    metadata: dict[str, Any] = field(
        default_factory=dict
    )  # tool-specific records, e.g. retrieved hits

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ToolCall:
        return cls(**d)


@dataclass
class RewardBreakdown:
    """A scalar reward and the named components it was built from."""

    total: float
    components: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not math.isfinite(self.total):
            raise ValueError(f"reward total must be finite, got {self.total}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RewardBreakdown:
        return cls(total=d["total"], components=dict(d.get("components") or {}))


@dataclass
class Trajectory:
    """A whole episode: prompt, model turns, tool observations, the end and its score."""

    example_id: str
    group_id: str = ""
    sample_index: int = 0
    segments: list[Segment] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    stop_reason: str | None = None
    reward: RewardBreakdown | None = None
    prediction: str | None = None  # the extracted final answer, if any
    metadata: dict[str, Any] = field(default_factory=dict)

    # -- views -------------------------------------------------------------
    @property
    def token_ids(self) -> list[int]:
        return [t for s in self.segments for t in s.token_ids]

    @property
    def loss_mask(self) -> list[int]:
        return [m for s in self.segments for m in s.loss_mask]  # type: ignore[union-attr]

    @property
    def prompt_length(self) -> int:
        """Tokens before the first non-prompt segment."""
        n = 0
        for s in self.segments:
            if s.source != "prompt":
                break
            n += len(s)
        return n

    @property
    def response_token_ids(self) -> list[int]:
        return self.token_ids[self.prompt_length :]

    @property
    def response_loss_mask(self) -> list[int]:
        return self.loss_mask[self.prompt_length :]

    def sampling_logprobs(self) -> list[float | None]:
        """Per-token sampling logprob over the whole sequence, None where there is none."""
        out: list[float | None] = []
        for s in self.segments:
            out.extend(s.logprobs if s.logprobs is not None else [None] * len(s))
        return out

    @property
    def response_text(self) -> str:
        return "".join(s.text for s in self.segments if s.source != "prompt")

    @property
    def model_text(self) -> str:
        return "".join(s.text for s in self.segments if s.source == "model")

    @property
    def num_model_tokens(self) -> int:
        return sum(len(s) for s in self.segments if s.source == "model")

    def add(self, segment: Segment) -> None:
        self.segments.append(segment)

    # -- serialisation -----------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trajectory:
        return cls(
            example_id=d["example_id"],
            group_id=d.get("group_id", ""),
            sample_index=d.get("sample_index", 0),
            segments=[Segment(**s) for s in d.get("segments", [])],
            tool_calls=[ToolCall.from_dict(c) for c in d.get("tool_calls", [])],
            stop_reason=d.get("stop_reason"),
            reward=RewardBreakdown.from_dict(d["reward"]) if d.get("reward") else None,
            prediction=d.get("prediction"),
            metadata=dict(d.get("metadata") or {}),
        )

    def to_json(self) -> str:
        """One JSONL line. A segment's loss_mask is left out where it is its source's
        default (all 1 for model tokens, all 0 for every other source), which from_dict
        rebuilds: on a long prompt it would otherwise be a third of the line."""
        d = self.to_dict()
        for seg, s in zip(d["segments"], self.segments):
            mask = s.loss_mask or []
            if all(mask) if s.source == "model" else not any(mask):
                del seg["loss_mask"]
        return json.dumps(d, ensure_ascii=False, allow_nan=False)

    @classmethod
    def from_json(cls, line: str) -> Trajectory:
        return cls.from_dict(json.loads(line))


def write_jsonl(path: str | Path, trajectories: Iterable[Trajectory], append: bool = False) -> int:
    """Write trajectories one per line; returns how many were written."""
    n = 0
    with open(path, "a" if append else "w", encoding="utf-8") as f:
        for t in trajectories:
            f.write(t.to_json() + "\n")
            n += 1
        f.flush()
    return n


def iter_jsonl(path: str | Path) -> Iterator[Trajectory]:
    """Read trajectories back; a truncated last line (an interrupted write) is skipped."""
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            traj = Trajectory.from_json(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1 and not line.endswith("\n"):
                return  # torn final write from a killed run
            raise ValueError(f"{path}:{i + 1}: not valid JSON, so not a trajectory") from None
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(
                f"{path}:{i + 1}: not a trajectory record ({type(e).__name__}: {e}); "
                "trajectories are the trajectories.jsonl of a trajlab run, not task rows"
            ) from None
        yield traj


def read_jsonl(path: str | Path) -> list[Trajectory]:
    return list(iter_jsonl(path))
