"""Prompt templates, one per tool protocol, and the function that turns an Example into messages.

How it is used:

    messages = render_messages(example, "code")   # [{"role": "system", ...}, ..., {"role": "user", ...}]

The agent loop turns these messages into token ids with the tokenizer's chat
template; for `native` it also passes the tool list to that template.

Protocols (the markup each method's paper and code use):
* `code`: the model writes ```python ... ``` and reads ```output ... ``` (as CIR, ToRL);
  final answer in \\boxed{}.
* `tags`: <python>...</python> answered by <result>...</result>, reasoning in
  <think>, final answer as <answer>\\boxed{...}</answer> (as Tool-Star).
* `native`: the chat template's own tool-call format; the text only explains the task.
* `none`: no tool; plain step-by-step reasoning with \\boxed{}.

Question answering with search (QA_PROMPTS; Search-R1 arXiv 2503.09516, R1-Searcher
2503.05592, R1-Searcher++ 2505.17005),
found by `get_prompt` after PROMPTS:
* `search_r1`: <search> query </search> answered by <information>, answer in
  <answer> </answer> (Search-R1).
* `r1_searcher`: <|begin_of_query|> keywords <|end_of_query|> answered by a
  documents block, reasoning in <think>, answer in <answer> (R1-Searcher).
* `r1_searcher_pp`: <internal> for what the model already knows, <external> for a
  search answered by <document> (R1-Searcher++).
* `tags_qa`: <search>, <python> and <kg> (entity | relation) answered by <result>,
  final answer as <answer>\\boxed{...}</answer> (Tool-Star with a knowledge graph).
* `qa_none`: no tool, answer in <answer> </answer> (the no-retrieval baseline).
Their worked example is one search about a novel's author, its documents written
the way tools/search.py formats passages for that protocol.

Departures: the texts are our own, shorter than the papers' (the default model
has 135M parameters and a short attention span). `few_shot` adds one tiny worked
example as a previous user/assistant exchange; it is on by default for `code`
and `tags`, where a small model otherwise rarely produces the call syntax.
The examples mirror how the agent loop writes observations (```output ... ```
after a newline for `code`, " <result>\\n...\\n</result>" for `tags`).

What it does not do: tokenise, or define the tool schema for `native`.
"""

from __future__ import annotations

from dataclasses import dataclass

from trajlab.types import Example


@dataclass(frozen=True)
class PromptTemplate:
    """The messages a protocol starts from. `user` contains `{question}` exactly once."""

    protocol: str
    user: str  # the user message; "{question}" is replaced by the question text
    system: str | None = None  # optional system message
    example_question: str | None = None  # few-shot: a tiny question ...
    example_response: str | None = None  # ... and a model turn solving it in the protocol's format
    few_shot_default: bool = False  # whether render_messages includes the example by default

    def __post_init__(self) -> None:
        if self.user.count("{question}") != 1:
            raise ValueError(
                f"prompt {self.protocol!r}: `user` must contain '{{question}}' exactly once"
            )
        if (self.example_question is None) != (self.example_response is None):
            raise ValueError(
                f"prompt {self.protocol!r}: give both example_question and example_response"
            )
        if self.few_shot_default and self.example_question is None:
            raise ValueError(f"prompt {self.protocol!r}: few_shot_default needs an example")

    def format_user(self, question: str) -> str:
        # str.replace, not str.format: questions and templates both contain LaTeX braces.
        return self.user.replace("{question}", question)


_EXAMPLE_QUESTION = "What is 1234 * 56 + 789?"  # 1234 * 56 = 69104; 69104 + 789 = 69893

PROMPTS: dict[str, PromptTemplate] = {
    "code": PromptTemplate(
        protocol="code",
        system=(
            "You are a careful math assistant who can run Python.\n"
            "To run code, write it between ```python and ```, and print() what you need. "
            "The printed result comes back between ```output and ```.\n"
            "Each code block runs on its own: define every variable it uses.\n"
            "At the end, write the final answer as \\boxed{answer}."
        ),
        user="{question}",
        example_question=_EXAMPLE_QUESTION,
        example_response=(
            "Let me compute it with Python.\n"
            "```python\nprint(1234 * 56 + 789)\n```\n"
            "```output\n69893\n```\n"
            "The answer is \\boxed{69893}."
        ),
        few_shot_default=True,
    ),
    "tags": PromptTemplate(
        protocol="tags",
        system=(
            "You are a careful math assistant who can run Python.\n"
            "Think inside <think> and </think>.\n"
            "To run code, write it between <python> and </python>, and print() what you need. "
            "The printed result comes back between <result> and </result>.\n"
            "Each code block runs on its own: define every variable it uses.\n"
            "At the end, write the final answer as <answer>\\boxed{answer}</answer>."
        ),
        user="{question}",
        example_question=_EXAMPLE_QUESTION,
        example_response=(
            "<think>I need 1234 * 56 + 789. Python can compute it.</think>\n"
            "<python>print(1234 * 56 + 789)</python> <result>\n69893\n</result>\n"
            "<think>The result is 69893.</think>\n"
            "<answer>\\boxed{69893}</answer>"
        ),
        few_shot_default=True,
    ),
    "native": PromptTemplate(
        protocol="native",
        system=(
            "You are a careful math assistant. You can call the python tool to run code; "
            "print() the values you need.\n"
            "At the end, write the final answer as \\boxed{answer}."
        ),
        user="{question}",
    ),
    "none": PromptTemplate(
        protocol="none",
        system=(
            "You are a careful math assistant. Solve the problem step by step, "
            "then write the final answer as \\boxed{answer}."
        ),
        user="{question}",
        example_question=_EXAMPLE_QUESTION,
        example_response="1234 * 56 = 69104. Then 69104 + 789 = 69893. The answer is \\boxed{69893}.",
    ),
}


_QA_QUESTION = "Who wrote the novel Nineteen Eighty-Four?"
_QA_DOC_TITLE = "Nineteen Eighty-Four"
_QA_DOC = (
    "Nineteen Eighty-Four is a dystopian novel by the English writer George Orwell, "
    "published in 1949."
)
_QA_RULES = (
    "Keep queries short: a few keywords about one fact. "
    "Give only the answer itself (a name, a date, a few words), not a sentence."
)

QA_PROMPTS: dict[str, PromptTemplate] = {
    "search_r1": PromptTemplate(
        protocol="search_r1",
        system=(
            "Answer the question. Reason inside <think> and </think> whenever you get new "
            "information. If you lack a fact, search for it by writing <search> query </search>; "
            "the top passages come back between <information> and </information>. You may search "
            "several times. When you know the answer, write it inside <answer> and </answer>.\n"
            + _QA_RULES
        ),
        user="Question: {question}",
        example_question=_QA_QUESTION,
        example_response=(
            "<think>I need the author of Nineteen Eighty-Four.</think>\n"
            "<search> Nineteen Eighty-Four novel author </search>\n\n"
            f"<information>Doc 1(Title: {_QA_DOC_TITLE}) {_QA_DOC}\n</information>\n\n"
            "<think>The passage says George Orwell wrote it.</think>\n"
            "<answer> George Orwell </answer>"
        ),
        few_shot_default=True,
    ),
    "r1_searcher": PromptTemplate(
        protocol="r1_searcher",
        system=(
            "Answer the question. Think inside <think> and </think>, then give the final answer "
            "inside <answer> and </answer>. While thinking you can search by writing "
            "<|begin_of_query|> keywords <|end_of_query|>; a query should ask about one fact only. "
            "The results come back between <|begin_of_documents|> and <|end_of_documents|>.\n"
            + _QA_RULES
        ),
        user="{question}",
        example_question=_QA_QUESTION,
        example_response=(
            "<think>I need the author of Nineteen Eighty-Four. "
            "<|begin_of_query|> Nineteen Eighty-Four author <|end_of_query|>\n\n"
            f"<|begin_of_documents|>\n(1) {_QA_DOC_TITLE}\n{_QA_DOC}\n<|end_of_documents|>\n\n"
            "The documents say George Orwell wrote it.</think>\n\n"
            "<answer> George Orwell </answer>"
        ),
        few_shot_default=True,
    ),
    "r1_searcher_pp": PromptTemplate(
        protocol="r1_searcher_pp",
        system=(
            "Answer the question. Think inside <think> and </think>. Put facts you already know "
            "for sure inside <internal> and </internal>. For a fact you do not know, search by "
            "writing <external> keywords </external>; the results come back between <document> "
            "and </document>. Give the final answer inside <answer> and </answer>.\n" + _QA_RULES
        ),
        user="{question}",
        example_question=_QA_QUESTION,
        example_response=(
            "<think><internal>Nineteen Eighty-Four is a novel.</internal> I am not sure who wrote "
            "it.</think> <external> Nineteen Eighty-Four author </external>\n<document>\n"
            f"{_QA_DOC_TITLE}\n{_QA_DOC}\n</document>\n"
            "<think>George Orwell wrote it.</think>\n<answer> George Orwell </answer>"
        ),
        few_shot_default=True,
    ),
    "tags_qa": PromptTemplate(
        protocol="tags",
        system=(
            "Answer the question. Think inside <think> and </think>. You have three tools; each "
            "result comes back between <result> and </result>:\n"
            "- <search> keywords </search> returns passages from Wikipedia;\n"
            "- <kg> entity | relation </kg> returns facts as (subject; relation; object);\n"
            "- <python> code </python> runs Python and returns what it prints.\n"
            "Write the final answer as <answer>\\boxed{answer}</answer>.\n" + _QA_RULES
        ),
        user="{question}",
        example_question=_QA_QUESTION,
        example_response=(
            "<think>I need the author of Nineteen Eighty-Four.</think>\n"
            "<search> Nineteen Eighty-Four author </search> <result>\n"
            f"{_QA_DOC_TITLE}\n{_QA_DOC}\n</result>\n"
            "<think>The passage says George Orwell.</think>\n"
            "<answer>\\boxed{George Orwell}</answer>"
        ),
        few_shot_default=True,
    ),
    "qa_none": PromptTemplate(
        protocol="none",
        system=(
            "Answer the question. Think briefly inside <think> and </think>, then write the "
            "answer inside <answer> and </answer>.\n" + _QA_RULES
        ),
        user="{question}",
        example_question=_QA_QUESTION,
        example_response=(
            "<think>Nineteen Eighty-Four was written by George Orwell.</think>\n"
            "<answer> George Orwell </answer>"
        ),
        few_shot_default=True,
    ),
}


def get_prompt(protocol: str) -> PromptTemplate:
    """The template named `protocol` (PROMPTS, then QA_PROMPTS); unknown names list the valid ones."""
    if protocol in PROMPTS:
        return PROMPTS[protocol]
    if protocol in QA_PROMPTS:
        return QA_PROMPTS[protocol]
    raise ValueError(f"unknown protocol {protocol!r}; valid: {', '.join([*PROMPTS, *QA_PROMPTS])}")


def render_messages(
    example: Example,
    protocol: str,
    few_shot: bool | None = None,
    merge_system: bool = False,
) -> list[dict[str, str]]:
    """Chat messages for `example` under `protocol`.

    few_shot:     include the worked example (None: the protocol's default).
    merge_system: put the system text at the top of the first user message, for
                  chat templates without a system role.
    """
    template = get_prompt(protocol)
    use_example = template.few_shot_default if few_shot is None else few_shot
    if use_example and template.example_question is None:
        raise ValueError(f"protocol {protocol!r} has no few-shot example; use few_shot=False")
    turns: list[tuple[str, str]] = []
    if use_example:
        assert template.example_question is not None and template.example_response is not None
        turns += [
            ("user", template.format_user(template.example_question)),
            ("assistant", template.example_response),
        ]
    turns.append(("user", template.format_user(example.question)))
    messages = [{"role": role, "content": content} for role, content in turns]
    if template.system:
        if merge_system:
            messages[0]["content"] = template.system + "\n\n" + messages[0]["content"]
        else:
            messages.insert(0, {"role": "system", "content": template.system})
    return messages
