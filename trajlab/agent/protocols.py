"""How a model writes tool calls and how tool results are written back.

A protocol answers three questions for the agent loop:

1. which stop strings end a generation turn at a tool call,
2. how to parse one turn of model text into an action (a call, an answer, or neither),
3. how to render a tool result as observation text to append.

Markup protocols (code fences, XML-ish tags, the search-RL markers) are plain data:
a `MarkupProtocol` lists, per tool, the opening and closing markers of a call and the
template of its result, as each method's paper and released code write them:

    code          ```python ... ```  answered by  ```output ... ```     (CIR, ToRL)
    tags          <python>...</python>, <search>...</search>
                  answered by  <result> ... </result>                      (Tool-Star)
    search_r1     <search>q</search>  answered by  <information>...</information>
    r1_searcher   <|begin_of_query|>q<|end_of_query|>  answered by a documents block
    r1_searcher_pp <external>q</external>  answered by <document>...</document>;
                  <internal>...</internal> marks the model's own knowledge (not a call)
    native        the tokenizer's chat template with a `tools` list; calls are
                  <tool_call>{"name": ..., "arguments": {...}}</tool_call> (Hermes/Qwen style)

Departures: CIR executes the first complete code block of a free-running generation
and discards the rest; we stop generation at the block's closing fence instead, which
gives the same trajectory without generating tokens that are thrown away. ToRL
executes the *last* block before a ```output stop; with our earlier stop the first and
last block coincide.

What this module does not do: run tools, tokenise, or decide budgets.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

# An answer is present once the model writes a boxed expression or closes an answer tag.
ANSWER_RE = re.compile(r"\\boxed\s*\{|</answer>")


@dataclass
class Action:
    """What one model turn asked for.

    kind: "call" (a complete tool call), "answer" (a final answer is present),
          "void" (neither: SimpleTIR's void turn), "bad_call" (a call we could not parse;
          `error` says why and the model is told).
    end: character offset in the turn text where the action ends; text after it is
         discarded (and so are its tokens).
    """

    kind: str
    tool: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    end: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class CallSyntax:
    tool: str  # registry name of the tool this markup calls
    open: str  # marker that opens the call, e.g. "<python>"
    close: str  # marker that closes it, e.g. "</python>"
    arg: str  # name of the single argument, e.g. "code" or "query"
    result: str  # observation template with {result}
    # Extra regex alternatives to the literal `open` (e.g. ```py as well as ```python).
    open_pattern: str | None = None
    # Stop strings that end generation at this call; default: the closing marker. They
    # differ when the closing marker also occurs in the opener (a code fence).
    stop: tuple[str, ...] = ()
    # Characters deleted from the argument (R1-Searcher strips quotes from its queries).
    remove: str = ""


@dataclass(frozen=True)
class MarkupProtocol:
    name: str
    calls: tuple[CallSyntax, ...]
    description: str = ""

    def tools(self) -> list[str]:
        return [c.tool for c in self.calls]

    def syntax_for(self, tools: list[str]) -> list[CallSyntax]:
        return [c for c in self.calls if c.tool in tools]

    def stop_strings(self, tools: list[str]) -> list[str]:
        return sorted({s for c in self.syntax_for(tools) for s in (c.stop or (c.close,))})

    def parse(self, text: str, tools: list[str]) -> Action:
        """Find the first complete call in `text`; otherwise report an answer or a void turn.

        A call to a tool the protocol knows but the run did not enable is a bad_call
        (the model is told); markup for tools the protocol does not know is plain text.
        """
        best: tuple[int, CallSyntax, re.Match[str]] | None = None
        for c in self.calls:
            open_re = c.open_pattern or re.escape(c.open)
            m = re.search(f"({open_re})(.*?)({re.escape(c.close)})", text, flags=re.DOTALL)
            if m and (best is None or m.end() < best[0]):
                best = (m.end(), c, m)
        answered = ANSWER_RE.search(text)
        if best is not None and (answered is None or best[2].start() < answered.start()):
            end, c, m = best
            body = m.group(2)
            # A nested opener inside the body means the model restarted the call; use the last one.
            last_open = list(re.finditer(c.open_pattern or re.escape(c.open), body))
            if last_open:
                body = body[last_open[-1].end() :]
            body = body.strip("\n") if c.arg == "code" else body.strip()
            if c.remove:
                body = body.translate(str.maketrans("", "", c.remove)).strip()
            if c.tool not in tools:
                return Action(
                    "bad_call",
                    tool=c.tool,
                    end=end,
                    error=f"tool {c.tool!r} is not available in this run; available: {', '.join(tools) or 'none'}",
                )
            if not body.strip():
                return Action("bad_call", tool=c.tool, end=end, error=f"empty {c.arg}")
            return Action("call", tool=c.tool, args={c.arg: body}, end=end)
        if answered is not None:
            return Action("answer")
        return Action("void")

    def render_result(self, tool: str, result: str) -> str:
        for c in self.calls:
            if c.tool == tool:
                return c.result.format(result=result)
        raise KeyError(f"protocol {self.name!r} has no result format for tool {tool!r}")


CODE = MarkupProtocol(
    name="code",
    description="```python blocks answered by ```output blocks (CIR, ToRL)",
    calls=(
        CallSyntax(
            tool="python",
            open="```python\n",
            open_pattern=r"```(?:python|py)[ \t]*\n",
            close="\n```",
            arg="code",
            result="\n```output\n{result}\n```\n",
            # "\n```" alone would also fire on the opening fence "\n```python".
            stop=("\n```\n", "```output"),
        ),
    ),
)

TAGS = MarkupProtocol(
    name="tags",
    description="<python>/<search> tags answered by <result> (Tool-Star)",
    calls=(
        CallSyntax("python", "<python>", "</python>", "code", " <result>\n{result}\n</result>"),
        CallSyntax("search", "<search>", "</search>", "query", " <result>\n{result}\n</result>"),
        CallSyntax("kg", "<kg>", "</kg>", "query", " <result>\n{result}\n</result>"),
    ),
)

SEARCH_R1 = MarkupProtocol(
    name="search_r1",
    description="<search> answered by <information> (Search-R1)",
    calls=(
        CallSyntax(
            "search",
            "<search>",
            "</search>",
            "query",
            "\n\n<information>{result}</information>\n\n",
        ),
    ),
)

R1_SEARCHER = MarkupProtocol(
    name="r1_searcher",
    description="<|begin_of_query|> ... <|end_of_query|> answered by a documents block (R1-Searcher)",
    calls=(
        CallSyntax(
            "search",
            "<|begin_of_query|>",
            "<|end_of_query|>",
            "query",
            "\n\n<|begin_of_documents|>\n{result}<|end_of_documents|>\n\n",
            remove='"',
        ),
    ),
)

R1_SEARCHER_PP = MarkupProtocol(
    name="r1_searcher_pp",
    description="<external> queries answered by <document>; <internal> marks own knowledge (R1-Searcher++)",
    calls=(
        CallSyntax(
            "search", "<external>", "</external>", "query", "\n<document>\n{result}\n</document>\n"
        ),
    ),
)


class NativeProtocol:
    """Tool calls through the tokenizer's own chat template.

    The prompt is rendered with `tools=[...]` JSON schemas; the model writes
    `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`; the observation is the
    template's own rendering of a `tool` message plus the next assistant header, cut
    from the difference of two renderings so no assistant text is ever re-tokenised.
    """

    name = "native"
    description = "the tokenizer's chat template with a tools list; <tool_call> JSON calls"
    open, close = "<tool_call>", "</tool_call>"

    def stop_strings(self, tools: list[str]) -> list[str]:
        return [self.close]

    def parse(self, text: str, tools: list[str]) -> Action:
        m = re.search(
            re.escape(self.open) + r"(.*?)" + re.escape(self.close), text, flags=re.DOTALL
        )
        if m is None:
            return Action("answer") if ANSWER_RE.search(text) else Action("void")
        try:
            call = json.loads(m.group(1))
            name, args = call["name"], call.get("arguments", {})
            if isinstance(args, str):
                args = json.loads(args)
            if not isinstance(args, dict):
                raise TypeError("arguments must be a JSON object")
        except (ValueError, KeyError, TypeError) as e:
            return Action("bad_call", end=m.end(), error=f"could not parse tool call JSON: {e}")
        if name not in tools:
            return Action(
                "bad_call",
                tool=str(name),
                end=m.end(),
                error=f"unknown tool {name!r}; available: {', '.join(tools)}",
            )
        return Action("call", tool=name, args=args, end=m.end())

    def render_result(
        self, tool: str, result: str
    ) -> str:  # pragma: no cover - the loop renders via the template
        return result


NATIVE = NativeProtocol()

PROTOCOLS: dict[str, MarkupProtocol | NativeProtocol] = {
    p.name: p for p in (CODE, TAGS, SEARCH_R1, R1_SEARCHER, R1_SEARCHER_PP, NATIVE)
}


def get_protocol(name: str) -> MarkupProtocol | NativeProtocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ValueError(
            f"unknown protocol {name!r}; choose one of: {', '.join(PROTOCOLS)}"
        ) from None


def truncate_observation(text: str, max_chars: int, marker: str = "\n...[truncated]...\n") -> str:
    """Keep the head and tail of a long observation (CIR keeps 200 + 200 characters).

    max_chars <= 0 disables truncation.
    """
    if max_chars <= 0 or len(text) <= max_chars:
        return text
    head = max_chars // 2
    tail = max_chars - head
    return text[:head] + marker + text[-tail:]
