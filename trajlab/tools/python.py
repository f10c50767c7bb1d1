"""The `python` tool: model-written code run in the sandbox, its output as the observation.

    tool = PythonTool(PythonToolConfig(timeout_s=5))
    tool.run({"code": "print(6 * 7)"})      # ToolResult(output="42\\n", ok=True, status="ok")
    with tool.open_session() as s:          # stateful (ToRL/ReTool-style notebook)
        s.run({"code": "x = 6"}); s.run({"code": "print(x * 7)"})
    tool.close()

What the model sees: stdout; on failure, stdout followed by the last
`traceback_lines` lines of the traceback (CIR keeps only the last line, which is
`PythonToolConfig(traceback_lines=1)`, the default), or one line naming the timeout,
output cap, memory limit or crash. Control characters other than newline and tab (ESC,
NUL, CR, DEL, C1) are shown escaped (`\\x1b`, `\\r`), so terminal escape sequences never
reach a log, a terminal or the viewer verbatim; `raw_output=True` passes them through.
Status and ok come from the sandbox (trajlab/tools/sandbox.py); a failure of the model's
code is data (ok=False), only a broken sandbox raises.

Non-goals: truncating the observation for the model's context is the agent loop's job
(configurable there); this tool only bounds what the sandbox captures
(`output_cap_bytes`). The tool never evaluates or unpickles anything the code produced.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

from trajlab.config import opt
from trajlab.tools.base import ToolResult, function_schema
from trajlab.tools.sandbox import SandboxConfig, SandboxPool, SandboxResult, SandboxSession


@dataclass
class PythonToolConfig(SandboxConfig):
    """Settings of the python tool (`tools.python` in train and eval configs): every
    SandboxConfig field (the limits, the isolation layers) plus how results are shown."""

    traceback_lines: int = opt(
        1, "python tool: trailing traceback lines shown after stdout on an error (CIR: 1; 0: none)"
    )
    raw_output: bool = opt(
        False,
        "python tool: pass control characters (ESC, NUL, CR, ...) through verbatim instead of "
        "escaping them (for tasks that grade raw bytes)",
    )

    def sandbox_config(self) -> SandboxConfig:
        return SandboxConfig(**{f.name: getattr(self, f.name) for f in fields(SandboxConfig)})


_STATUS_LINES = {
    "timeout": "TimeoutError: execution exceeded the {t:g} s time limit",
    "output_limit": "OutputLimitError: output exceeded {cap} bytes; execution was stopped",
    "crashed": "Crashed: {err}",
}


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # all but \t and \n


def escape_controls(text: str) -> str:
    """Control characters other than newline and tab, written as visible escapes."""
    return _CONTROL.sub(lambda m: "\\r" if m[0] == "\r" else f"\\x{ord(m[0]):02x}", text)


def format_observation(r: SandboxResult, cfg: PythonToolConfig) -> str:
    """stdout, plus the error tail the model is shown when the run failed (control
    characters escaped unless cfg.raw_output)."""
    text = _observation(r, cfg)
    return text if cfg.raw_output else escape_controls(text)


def _observation(r: SandboxResult, cfg: PythonToolConfig) -> str:
    out = r.stdout
    if r.status == "ok":
        return out
    tail = ""
    if r.status in _STATUS_LINES:
        tail = _STATUS_LINES[r.status].format(
            t=cfg.timeout_s, cap=cfg.output_cap_bytes, err=r.error
        )
    elif cfg.traceback_lines > 0:
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        tail = "\n".join(lines[-cfg.traceback_lines :]) or (r.error or r.status)
    if r.status == "memory" and "MemoryError" not in tail:
        tail = (tail + "\n" if tail else "") + "MemoryError: the memory limit was exceeded"
    if r.session_reset:
        tail += "\n(the Python session was restarted: earlier variables are gone)"
    if out and not out.endswith("\n") and tail:
        out += "\n"
    return out + tail.lstrip("\n")


def _bad_args(args: Any) -> ToolResult | None:
    code = args.get("code") if isinstance(args, dict) else None
    if not isinstance(code, str) or not code.strip():
        msg = 'the python tool needs {"code": "<non-empty Python source>"}'
        return ToolResult(output=f"Error: {msg}", ok=False, status="bad_args", error=msg)
    return None


def _to_tool_result(r: SandboxResult, cfg: PythonToolConfig) -> ToolResult:
    error = None if r.ok else (r.error or r.status)
    return ToolResult(
        output=format_observation(r, cfg),
        ok=r.ok,
        status=r.status,
        error=error if error is None or cfg.raw_output else escape_controls(error),
        latency_s=r.latency_s,
    )


PYTHON_SCHEMA = function_schema(
    "python",
    "Run a Python program and return what it prints.",
    {"code": "a complete Python program"},
)


class PythonTool:
    """Tool protocol implementation over a SandboxPool (shared by all trajectories)."""

    name = "python"
    schema = PYTHON_SCHEMA

    def __init__(self, config: PythonToolConfig | None = None, pool: SandboxPool | None = None):
        self.config = config or PythonToolConfig()
        self._own_pool = pool is None
        self.pool = pool or SandboxPool(self.config.sandbox_config())

    def run(self, args: dict[str, Any]) -> ToolResult:
        bad = _bad_args(args)
        if bad:
            return bad
        r = self.pool.run(args["code"], timeout_s=self.config.timeout_s)
        return _to_tool_result(r, self.config)

    def open_session(self) -> PythonSession:
        """A stateful notebook for one trajectory; close it when the trajectory ends. The
        sandboxed process starts at the first call, so trajectories that never run code
        cost nothing."""
        return PythonSession(self.pool, self.config)

    def close(self) -> None:
        if self._own_pool:
            self.pool.close()


class PythonSession:
    """Same `run`/`close` as PythonTool, with variables kept between calls."""

    name = "python"

    def __init__(self, pool: SandboxPool, config: PythonToolConfig):
        self.pool, self.config = pool, config
        self.session: SandboxSession | None = None

    def run(self, args: dict[str, Any]) -> ToolResult:
        bad = _bad_args(args)
        if bad:
            return bad
        if self.session is None:
            self.session = self.pool.session()
        r = self.session.run(args["code"], timeout_s=self.config.timeout_s)
        return _to_tool_result(r, self.config)

    def close(self) -> None:
        if self.session is not None:
            self.session.close()

    def __enter__(self) -> PythonSession:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
