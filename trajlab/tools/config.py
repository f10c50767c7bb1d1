"""`tools:` — every tool's settings in one config section, for train and eval alike.

    tools:
      python: {timeout_s: 5, slots: 4}
      search: {search_index: indexes/bm25, search_k: 3}
      kg: {kg_path: triplets.jsonl}
      echo: {echo_prefix: "echo: "}

`trajlab.build.build_tools(names, agent, tools_config, tokenizer)` hands each tool its
section; a tool that is not enabled in `agent.tools` ignores its section. On the command
line the fields are flags (`--timeout-s`, `--search-index`) for `trajlab eval` and dotted
overrides (`tools.search.search_index=DIR`) for `trajlab train`.

What it does not do: pick which tools run (that is `agent.tools`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trajlab.tools.fake import EchoConfig
from trajlab.tools.kg import KGConfig
from trajlab.tools.python import PythonToolConfig
from trajlab.tools.search import SearchConfig


@dataclass
class ToolsConfig:
    python: PythonToolConfig = field(default_factory=PythonToolConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    kg: KGConfig = field(default_factory=KGConfig)
    echo: EchoConfig = field(default_factory=EchoConfig)
