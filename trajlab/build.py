"""One construction path: configs in, the objects a run needs out.

    model, tok = load_policy("default", dtype="float32")
    engine = build_engine("hf", model, tok, max_batch_size=32, decode_dtype="auto")
    tools = build_tools(["python"], agent_config, tools_config, tok)
    scorer = build_scorer({"math_correct": 1.0})
    prompts = prompt_builder("")                      # None: the protocol's own prompt

`trajlab eval`, `trajlab train` (rollouts and periodic held-out evaluation), `trajlab sft`
and the demo all build through these functions, so an evaluation inside a training run and
`trajlab eval` of the saved checkpoint differ only in where the weights come from. Engines
and tools are picked by name from their registries (trajlab.engines.ENGINES,
trajlab.tools.TOOLS); a `module:factory` plugin may stand in for a tool by name.

What it does not do: run anything, or read YAML (trajlab.config does).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from trajlab.config import ConfigError
from trajlab.rewards.scorer import Scorer
from trajlab.types import Example

PromptBuilder = Callable[[Example], list[dict[str, str]]]


def task_defaults(task: str) -> dict[str, Any]:
    """What a named benchmark implies unless the user says otherwise, as dotted keys of the
    `agent` section: the protocol its papers use and the tools that protocol calls
    (`hotpotqa` -> search_r1 with the search tool; `gsm8k` -> code with python). Other tasks
    imply nothing."""
    from trajlab.agent.protocols import get_protocol
    from trajlab.tasks import BENCHMARKS

    bench = BENCHMARKS.get(task)
    if bench is None:
        return {}
    tools = getattr(get_protocol(bench.protocol), "tools", lambda: [])()
    return {"agent.protocol": bench.protocol, "agent.tools": list(tools)}


def benchmark_defaults(
    task_key: str, reward_key: str | None = None
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """`defaults` for trajlab.flags.resolve: the benchmark named at `task_key` (`task` of an
    eval config, `data.task` of a training one) sets the agent's protocol and tools unless
    the run names a protocol or tools itself, and the reward weights at `reward_key`
    (training) unless the run gives weights."""

    def defaults(data: dict[str, Any]) -> dict[str, Any]:
        from trajlab.flags import lookup
        from trajlab.tasks import BENCHMARKS

        task = str(lookup(data, task_key) or "")
        if task not in BENCHMARKS:
            return {}
        out: dict[str, Any] = {}
        if lookup(data, "agent.protocol") is None and lookup(data, "agent.tools") is None:
            out.update(task_defaults(task))
        if reward_key and lookup(data, reward_key) is None:
            out[reward_key] = {BENCHMARKS[task].reward: 1.0}
        return out

    return defaults


def load_policy(spec: str, dtype: str = "float32") -> tuple[Any, Any]:
    """(model, tokenizer) of a model spec: 'default', a HF directory or a .gguf file."""
    from trajlab.models import load_model, load_tokenizer

    return load_model(spec, dtype=dtype), load_tokenizer(spec)


def resolve_decode_dtype(decode_dtype: str | None) -> str | None:
    """'auto' -> bfloat16 on CPUs with native bf16 matmul, else None (the weights' dtype)."""
    if decode_dtype == "auto":
        from trajlab.models import native_bf16

        return "bfloat16" if native_bf16() else None
    return decode_dtype


def build_engine(
    name: str,
    model: Any,
    tokenizer: Any,
    *,
    max_batch_size: int = 64,
    decode_dtype: str | None = None,
    fake_responses: Sequence[str] = (),
) -> Any:
    """The engine called `name` over an already loaded model (trajlab.engines.ENGINES)."""
    from trajlab.engines import ENGINES

    if name not in ENGINES:
        raise ConfigError(f"unknown engine {name!r}; choose one of: {', '.join(sorted(ENGINES))}")
    return ENGINES[name](
        model,
        tokenizer,
        max_batch_size=max_batch_size,
        decode_dtype=resolve_decode_dtype(decode_dtype),
        fake_responses=list(fake_responses),
    )


def check_tools(
    names: Sequence[str],
    protocol: str,
    plugins: Mapping[str, str] | None = None,
    config: Any = None,
) -> None:
    """Unknown tool names, tools the protocol has no call syntax for, and tool settings
    that cannot start the tool (ToolSpec.check on its section of the ToolsConfig `config`)
    fail here, before any model loads or tool starts."""
    from trajlab.agent.protocols import PROTOCOLS, NativeProtocol, get_protocol
    from trajlab.tools import TOOLS

    known = [*TOOLS, *(plugins or {})]
    for name, spec in (plugins or {}).items():
        _plugin(name, spec)  # a plugin that does not import fails now, naming its key
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"agent.tools: unknown tool {name!r}.{hint} Available: {', '.join(known)} "
                "(or map a name to 'module:factory' in tool_plugins)"
            )
    proto = get_protocol(protocol)
    unusable = (
        [] if isinstance(proto, NativeProtocol) else [n for n in names if n not in proto.tools()]
    )
    if unusable:
        callers = [
            p
            for p, v in PROTOCOLS.items()
            if not isinstance(v, NativeProtocol) and all(n in v.tools() for n in names)
        ]
        raise ConfigError(
            f"agent.protocol: {protocol!r} has no call syntax for {', '.join(unusable)} (it "
            f"calls {', '.join(proto.tools()) or 'no tool'}). Protocols that can call "
            f"{', '.join(names)}: {', '.join(callers) or 'none'}; native calls any tool."
        )
    for name in names:
        if name in TOOLS and name not in (plugins or {}) and config is not None:
            try:
                TOOLS[name].check(config)
            except ValueError as e:
                raise ConfigError(f"tools.{name}: {e}") from None


def build_tools(
    names: Sequence[str],
    agent: Any,
    config: Any = None,
    tokenizer: Any = None,
    plugins: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The named tools, each from trajlab.tools.TOOLS with its section of `config`
    (a ToolsConfig), or from a `module:factory` plugin named in `plugins`.

    On failure every tool already started is closed before the error is raised."""
    from trajlab.tools import TOOLS

    plugins = plugins or {}
    tools: dict[str, Any] = {}
    try:
        for name in names:
            if name in plugins:
                tools[name] = _plugin(name, plugins[name])()
                continue
            if name not in TOOLS:
                check_tools([name], "native", plugins)  # raises, naming the close match
            try:
                tools[name] = TOOLS[name](
                    config=config, tokenizer=tokenizer, protocol=agent.protocol
                )
            except (ValueError, FileNotFoundError) as e:
                raise ConfigError(f"cannot start the {name} tool: {e}") from e
    except BaseException:
        for t in tools.values():
            t.close()
        raise
    return tools


def _plugin(name: str, spec: str) -> Callable[[], Any]:
    module, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise ConfigError(
            f"tool_plugins.{name}: cannot load {spec!r} ({e}); write it as "
            "'package.module:factory' with the module importable from here"
        ) from None


def build_scorer(
    weights: Mapping[str, float] | str, correct: str = "", retrieval: bool = False
) -> Scorer:
    """The Scorer of a reward name or a {name: weight} mapping (trajlab.rewards.scorer)."""
    return Scorer.from_names(weights, correct=correct, retrieval=retrieval)


def prompt_builder(name: str) -> PromptBuilder | None:
    """How an Example becomes chat messages. '' (or 'protocol'): None, so the agent loop
    uses its protocol's prompt; 'question': the question alone as one user message (tiny
    models, tests); any other name: that template of trajlab.tasks.prompts."""
    if name in ("", "protocol"):
        return None
    if name == "question":
        return _question_only
    from trajlab.tasks.prompts import get_prompt, render_messages

    try:
        get_prompt(name)  # an unknown name fails here, before any rollout
    except ValueError as e:
        raise ConfigError(f"prompt: {e}") from None

    def build(ex: Example) -> list[dict[str, str]]:
        return render_messages(ex, name)

    return build


def _question_only(ex: Example) -> list[dict[str, str]]:
    return [{"role": "user", "content": ex.question}]
