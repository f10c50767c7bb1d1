"""Tools the model can call, picked by name from TOOLS.

    from trajlab.tools import TOOLS
    tool = TOOLS["search"](config=eval_config, tokenizer=tok, protocol="search_r1")
    tool.run({"query": "capital of France"}); tool.close()

Each entry is a factory `(config=None, tokenizer=None, protocol="") -> Tool`. `config`
is a ToolsConfig (tools/config.py, the `tools:` section of train and eval configs) or
any object with its sections: `.python` (PythonToolConfig), `.search` (SearchConfig)
and `.kg` (KGConfig); `tokenizer` is the model's, for token-based truncation;
`protocol` picks the search result format. Build tools with trajlab.build.build_tools.

    python   run code in the sandbox (tools/python.py)
    search   top-k passages from a local index or a web API (tools/search.py)
    kg       triplets by entity and relation (tools/kg.py)

Adding a tool: a class with `name`, `run(args) -> ToolResult` and `close()`
(tools/base.py), one factory here, one test with a fake backend.

Imports are lazy so that `import trajlab.tools` stays cheap (the agent loop imports it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trajlab.tools.base import Tool, ToolResult


def _python(config: Any = None, tokenizer: Any = None, protocol: str = "") -> Tool:
    from trajlab.tools.python import PythonTool, PythonToolConfig

    return PythonTool(getattr(config, "python", None) or PythonToolConfig())


def _search(config: Any = None, tokenizer: Any = None, protocol: str = "") -> Tool:
    from trajlab.tools.search import SearchConfig, SearchTool

    cfg = getattr(config, "search", None) or SearchConfig()
    return SearchTool.from_config(cfg, protocol=protocol or "search_r1", tokenizer=tokenizer)


def _kg(config: Any = None, tokenizer: Any = None, protocol: str = "") -> Tool:
    from trajlab.tools.kg import KGConfig, KGTool

    cfg = getattr(config, "kg", None) or KGConfig()
    search_index = getattr(getattr(config, "search", None), "search_index", "")
    return KGTool.from_config(cfg, search_index=search_index)


ToolFactory = Callable[..., Tool]

TOOLS: dict[str, ToolFactory] = {
    "python": _python,
    "search": _search,
    "kg": _kg,
}

__all__ = ["TOOLS", "Tool", "ToolFactory", "ToolResult"]
