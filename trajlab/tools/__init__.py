"""Tools the model can call, picked by name from TOOLS.

    from trajlab.tools import TOOLS
    tool = TOOLS["search"](config=tools_config, tokenizer=tok, protocol="search_r1")
    tool.run({"query": "capital of France"}); tool.close()
    TOOLS["python"].config         # PythonToolConfig: the settings under `tools.python`

Each entry is a ToolSpec: the tool's name, the dataclass of its settings (its section
of the `tools:` config, tools/config.py), a one-line summary, and a factory
`(config=None, tokenizer=None, protocol="") -> Tool` that is called as the spec itself.
`config` is a ToolsConfig or any object with the tool's section as an attribute;
`tokenizer` is the model's, for token-based truncation; `protocol` picks the search
result format. Build tools with trajlab.build.build_tools.

    python   run code in the sandbox (tools/python.py)
    search   top-k passages from a local index or a web API (tools/search.py)
    kg       triplets by entity and relation (tools/kg.py)
    echo     answers with its own argument; no backend (tools/fake.py)

What a built tool says about itself (tools/base.py): `schema` for the `native` protocol
and, for a tool that keeps state per trajectory, `open_session()`. The agent loop reads
only those, so it never names a tool.

Adding a tool: a class with `name`, `run(args) -> ToolResult`, `close()` and, to be
offered under `native`, `schema`; a settings dataclass as a field of ToolsConfig; one
ToolSpec here; one test with a fake backend (tools/fake.py has scripted stand-ins).

Imports are lazy so that `import trajlab.tools` stays cheap (the agent loop imports it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trajlab.tools.base import Tool, ToolResult


@dataclass(frozen=True)
class ToolSpec:
    name: str
    summary: str
    config_path: str  # "module:Class" of the settings dataclass (imported on demand)
    factory: Callable[..., Tool]

    def __call__(self, config: Any = None, tokenizer: Any = None, protocol: str = "") -> Tool:
        return self.factory(config=config, tokenizer=tokenizer, protocol=protocol)

    @property
    def config(self) -> type:
        import importlib

        module, _, cls = self.config_path.partition(":")
        return getattr(importlib.import_module(module), cls)

    def settings(self, config: Any) -> Any:
        """This tool's section of `config` (a ToolsConfig), or its defaults."""
        return getattr(config, self.name, None) or self.config()

    def check(self, config: Any) -> None:
        """Raise ValueError when this tool's settings in `config` cannot start it (a
        missing index, file or URL), without starting it: a settings class may define
        `check()` for that."""
        check = getattr(self.settings(config), "check", None)
        if check is not None:
            check()


def _python(config: Any = None, tokenizer: Any = None, protocol: str = "") -> Tool:
    from trajlab.tools.python import PythonTool

    return PythonTool(TOOLS["python"].settings(config))


def _search(config: Any = None, tokenizer: Any = None, protocol: str = "") -> Tool:
    from trajlab.tools.search import SearchTool

    cfg = TOOLS["search"].settings(config)
    return SearchTool.from_config(cfg, protocol=protocol or "search_r1", tokenizer=tokenizer)


def _kg(config: Any = None, tokenizer: Any = None, protocol: str = "") -> Tool:
    from trajlab.tools.kg import KGTool

    search_index = getattr(getattr(config, "search", None), "search_index", "")
    return KGTool.from_config(TOOLS["kg"].settings(config), search_index=search_index)


def _echo(config: Any = None, tokenizer: Any = None, protocol: str = "") -> Tool:
    from trajlab.tools.fake import EchoTool

    cfg = TOOLS["echo"].settings(config)
    return EchoTool("echo", prefix=cfg.echo_prefix, limit=cfg.echo_limit)


ToolFactory = Callable[..., Tool]

TOOLS: dict[str, ToolSpec] = {
    spec.name: spec
    for spec in (
        ToolSpec(
            "python", "run code in the sandbox", "trajlab.tools.python:PythonToolConfig", _python
        ),
        ToolSpec(
            "search",
            "top-k passages from an index or a web API",
            "trajlab.tools.search:SearchConfig",
            _search,
        ),
        ToolSpec("kg", "triplets by entity and relation", "trajlab.tools.kg:KGConfig", _kg),
        ToolSpec(
            "echo",
            "answers with its own argument (no backend)",
            "trajlab.tools.fake:EchoConfig",
            _echo,
        ),
    )
}

__all__ = ["TOOLS", "Tool", "ToolFactory", "ToolResult", "ToolSpec"]
