"""The Tool seam: one call in, one observation out.

A tool is any object with a `name` and a `run(args) -> ToolResult` method. The
agent loop parses the model's call into `args` (a dict, e.g. {"code": ...} for
python or {"query": ...} for search), runs it, and appends `ToolResult.output`
as an observation whose tokens are never trained on.

Failures of the model's call (bad code, a timeout, an empty query) are data: the
tool returns ok=False with a status and an output the model can read. Only a
broken tool (a dead sandbox pool, a missing index) raises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass
class ToolResult:
    output: str  # what the model will see (before protocol formatting and truncation)
    ok: bool = True
    status: str = "ok"  # ok | error | timeout | output_limit | bad_args | ...
    error: str | None = None
    latency_s: float = 0.0
    metadata: dict[str, Any] = field(
        default_factory=dict
    )  # structured records kept on the ToolCall


@runtime_checkable
class Tool(Protocol):
    name: str

    def run(self, args: dict[str, Any]) -> ToolResult: ...

    def close(self) -> None: ...
