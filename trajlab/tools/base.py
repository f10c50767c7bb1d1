"""The Tool seam: one call in, one observation out.

A tool is any object with a `name`, a `run(args) -> ToolResult` method and `close()`.
Two optional members let a tool describe itself, so the agent loop never names one:

    schema          the function schema offered to chat templates under the `native`
                    protocol (build it with `function_schema`); a tool without one is
                    not offered there
    open_session()  a per-trajectory object with the same run/close that keeps state
                    between calls (the python tool's notebook); used when
                    `agent.stateful` is on

The agent loop parses the model's call into `args` (a dict, e.g. {"code": ...} for
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


def function_schema(name: str, description: str, arguments: dict[str, str]) -> dict[str, Any]:
    """An OpenAI-style function schema with required string arguments {name: description}."""
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {
                    arg: {"type": "string", "description": text} for arg, text in arguments.items()
                },
                "required": list(arguments),
            },
        },
    }


def tool_schema(tool: Any) -> dict[str, Any] | None:
    """The tool's native-protocol schema, or None when it offers none."""
    return getattr(tool, "schema", None)


def keeps_sessions(tool: Any) -> bool:
    """Whether the tool can open a stateful per-trajectory session."""
    return callable(getattr(tool, "open_session", None))
