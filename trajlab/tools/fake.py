"""Tools without a backend, for tests and experiments: answers are scripted or echoed.

    from trajlab.tools.fake import EchoTool, ScriptedTool
    echo = EchoTool("python", prefix="ran: ")            # stands in for the sandbox
    echo.run({"code": "print(1)"})                        # ToolResult(output="ran: print(1)")
    calc = ScriptedTool("python", {"print(6*7)": "42\\n"})  # answers by argument value
    calc.run({"code": "print(6*7)"}).output               # "42\\n"; calc.ran == ["print(6*7)"]
    feed = ScriptedTool("search", ["Doc 1(Title: Paris) ..."], default="no results")

A rollout with `EchoTool` or `ScriptedTool` under a tool's name runs the whole agent loop
(parsing calls, appending observations, the ledger) with no sandbox and no index, so an
experiment on prompts or protocols costs only generation. In a config, the `echo` tool is
built from `tools.echo` (EchoConfig); a plugin swaps one in under another name:

    tool_plugins: {python: "trajlab.tools.fake:echo_python"}

What these do not do: run code or search anything. A scripted answer is returned as given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from trajlab.config import opt
from trajlab.tools.base import ToolResult, function_schema

# The argument each built-in tool's calls carry; other tools take their first argument.
_ARG_OF = {"python": "code", "search": "query", "kg": "query"}

Answer = str | ToolResult


def _value(name: str, arg: str | None, args: Any) -> str:
    if not isinstance(args, dict) or not args:
        return ""
    key = arg or _ARG_OF.get(name)
    if key is None or key not in args:
        key = next(iter(args))
    v = args.get(key)
    return v if isinstance(v, str) else repr(v)


def _as_result(answer: Answer) -> ToolResult:
    if isinstance(answer, ToolResult):  # a fresh copy: the loop may set latency on it
        return ToolResult(**{**answer.__dict__, "metadata": dict(answer.metadata)})
    return ToolResult(output=answer)


def _schema(name: str, arg: str | None) -> dict[str, Any]:
    key = arg or _ARG_OF.get(name, "input")
    return function_schema(name, f"A scripted stand-in for the {name} tool.", {key: "the input"})


class ScriptedTool:
    """Answers each call from a script and records what it was asked.

    `outputs` is either a mapping from the call's argument value (the code of a python call,
    the query of a search) to its answer, or a sequence of answers given in call order. An
    answer is a string (an ok result) or a ToolResult (to script failures). A call with no
    scripted answer gets `default`; with no default it is an error result naming the value.
    `raise_on`: a substring of the value that makes `run` raise, as a broken tool would."""

    def __init__(
        self,
        name: str = "python",
        outputs: Mapping[str, Answer] | Sequence[Answer] = (),
        *,
        default: Answer | None = None,
        arg: str | None = None,
        raise_on: str | None = None,
    ) -> None:
        self.name, self.arg, self.default, self.raise_on = name, arg, default, raise_on
        self.outputs = outputs
        self.schema = _schema(name, arg)
        self.calls: list[dict[str, Any]] = []
        self.ran: list[str] = []  # the argument value of each call, in order
        self._next = 0

    def run(self, args: dict[str, Any]) -> ToolResult:
        value = _value(self.name, self.arg, args)
        self.calls.append(dict(args) if isinstance(args, dict) else {"args": args})
        self.ran.append(value)
        if self.raise_on is not None and self.raise_on in value:
            raise RuntimeError(f"scripted {self.name} tool failure on {value[:40]!r}")
        answer = self._answer(value)
        if answer is None:
            msg = f"no scripted answer for {value[:80]!r}"
            return ToolResult(output=f"Error: {msg}", ok=False, status="error", error=msg)
        return _as_result(answer)

    def _answer(self, value: str) -> Answer | None:
        if isinstance(self.outputs, Mapping):
            return self.outputs.get(value, self.default)
        if self._next < len(self.outputs):
            self._next += 1
            return self.outputs[self._next - 1]
        return self.default

    def close(self) -> None:
        pass


class EchoTool:
    """Answers every call with its own argument (`prefix` + value, cut to `limit` chars)."""

    def __init__(
        self, name: str = "echo", *, prefix: str = "", limit: int = 0, arg: str | None = None
    ) -> None:
        if limit < 0:
            raise ValueError(f"limit must be >= 0 (0: no limit), got {limit}")
        self.name, self.prefix, self.limit, self.arg = name, prefix, limit, arg
        self.schema = _schema(name, arg)
        self.ran: list[str] = []

    def run(self, args: dict[str, Any]) -> ToolResult:
        value = _value(self.name, self.arg, args)
        self.ran.append(value)
        return ToolResult(output=self.prefix + (value[: self.limit] if self.limit else value))

    def close(self) -> None:
        pass


@dataclass
class EchoConfig:
    """Settings of the `echo` tool (`tools.echo` in train and eval configs)."""

    echo_prefix: str = opt("", "echo tool: text put before the echoed argument")
    echo_limit: int = opt(0, "echo tool: echo at most this many characters (0: all)")


def echo_python() -> EchoTool:
    """A plugin factory: an echo tool under the python tool's name (no sandbox)."""
    return EchoTool("python")
