"""Verifiers: a score per sampled trajectory, for best-of-N and weighted voting.

    v = make_verifier("judge", model_spec="default")
    verdicts = v.score([(example, trajectory), ...])   # one Verdict per item

- `reward:NAME`: a reward of trajlab.rewards.REWARDS (or a `module:function` plugin).
  A reward that compares with the reference answer (math_correct, qa_em) knows the
  answer, so best-of-N under it is the oracle pass@N, an upper bound and not a method;
  a reward that does not (format_boxed, tool_error_penalty) is a real verifier.
- `confidence`: the policy's own geometric-mean probability of the tokens it sampled,
  exp(mean sampling logprob over model tokens); free, since the ledger stores them.
- `judge`: a generative judge. A model (the policy unless told otherwise) reads the
  question and the whole response, tool output included, after a fixed instruction
  (JUDGE_INSTRUCTION) and is asked for yes or no; the score is
  P(yes) / (P(yes) + P(no)) from its next-token distribution, each word summed over its
  spellings ("yes", "Yes", " yes", ...). Each grading is stored as a trajectory (the judge
  prompt, then the judge's more likely verdict token with its logprob), so the viewer
  shows what the judge read and said.

A Verdict also says how many tokens the verifier processed (`cost_tokens`), so a
compute-accuracy curve can count them.

- `orm:DIR`: an outcome reward model trained by `trajlab orm` (orm.py): a probe on the
  frozen model's hidden state that gives P(correct) without the reference answer.

- `prm:DIR`: a process reward model trained by `trajlab prm` (prm.py) on Monte-Carlo
  labels of partial trajectories: a value estimate of a prefix or a finished trajectory.

What it does not do: train a verifier (orm.py and prm.py do).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from trajlab.config import ConfigError
from trajlab.types import Example, Segment, Trajectory

JUDGE_INSTRUCTION = (
    "Below is a question and a proposed solution, with the output of any code it ran.\n\n"
    "Question: {question}\n\nSolution:\n{solution}\n\n"
    "Is the final answer of the solution correct? Answer yes or no."
)
YES = ("yes", "Yes", "YES", " yes", " Yes")
NO = ("no", "No", "NO", " no", " No")


@dataclass
class Verdict:
    score: float
    cost_tokens: int = 0  # tokens the verifier read or wrote for this item
    trajectory: Trajectory | None = None  # the judge's grading, when there is one


class Verifier(Protocol):
    name: str

    def score(self, items: Sequence[tuple[Example, Trajectory]]) -> list[Verdict]: ...


@dataclass
class RewardVerifier:
    reward: str
    name: str = ""

    def __post_init__(self) -> None:
        from trajlab.rewards import get_reward

        try:
            get_reward(self.reward)
        except ValueError as e:
            raise ConfigError(f"verifier: {e}") from None
        self.name = self.name or f"reward:{self.reward}"

    def score(self, items: Sequence[tuple[Example, Trajectory]]) -> list[Verdict]:
        from trajlab.rewards import compute_reward

        return [Verdict(compute_reward(self.reward, ex, t).total) for ex, t in items]


@dataclass
class ConfidenceVerifier:
    name: str = "confidence"

    def score(self, items: Sequence[tuple[Example, Trajectory]]) -> list[Verdict]:
        return [Verdict(confidence(t)) for _, t in items]


def confidence(t: Trajectory) -> float:
    """exp(mean sampling logprob of the model's tokens); 0.0 with no model tokens."""
    lps = [lp for s in t.segments if s.source == "model" for lp in (s.logprobs or [])]
    return math.exp(sum(lps) / len(lps)) if lps else 0.0


@dataclass
class JudgeVerifier:
    """A model asked whether each solution is right; see the module docstring.

    P(word) sums the probabilities of the word's spellings; a spelling of several tokens
    (a tokenizer without "yes" as one token) is the product of its tokens' conditional
    probabilities, read from one more forward pass over the prompt and the spelling."""

    model: Any
    tokenizer: Any
    model_spec: str = ""
    batch_size: int = 8
    instruction: str = JUDGE_INSTRUCTION
    yes_words: Sequence[str] = YES
    no_words: Sequence[str] = NO
    name: str = "judge"
    _spellings: list[tuple[bool, tuple[int, ...]]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        seen: dict[tuple[int, ...], bool] = {}
        for yes, words in ((True, self.yes_words), (False, self.no_words)):
            for w in words:
                ids = tuple(self.tokenizer.encode(w, add_special_tokens=False))
                if ids and ids not in seen:
                    seen[ids] = yes
        self._spellings = [(yes, ids) for ids, yes in seen.items()]
        if not any(y for y, _ in self._spellings) or all(y for y, _ in self._spellings):
            raise ConfigError("verifier judge: yes_words and no_words must each give a spelling")

    def prompt_ids(self, ex: Example, t: Trajectory) -> list[int]:
        """The judge's prompt: the instruction in the chat template (plain text without one)."""
        solution = t.response_text
        for special in getattr(self.tokenizer, "all_special_tokens", []):
            solution = solution.replace(special, "")  # the end-of-turn token the model wrote
        text = self.instruction.format(question=ex.question, solution=solution.strip())
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
            )
        else:
            text += "\n\n"
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def score(self, items: Sequence[tuple[Example, Trajectory]]) -> list[Verdict]:
        prompts = [self.prompt_ids(ex, t) for ex, t in items]
        out: list[Verdict | None] = [None] * len(items)
        order = sorted(range(len(items)), key=lambda i: len(prompts[i]))  # less padding
        for s in range(0, len(order), self.batch_size):
            rows = order[s : s + self.batch_size]
            spelled = self._spelling_logprobs([prompts[i] for i in rows])
            for r, i in enumerate(rows):
                out[i] = self._verdict(items[i], prompts[i], spelled[r])
        return [v for v in out if v is not None]

    def _spelling_logprobs(self, prompts: list[list[int]]) -> list[list[list[float]]]:
        """Per prompt, per spelling: the logprob of each of its tokens after the prompt."""
        import torch

        from trajlab.models import next_token_logprobs, token_logprobs

        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        width = max(map(len, prompts))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])  # [b, T]
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        b = len(prompts)
        per_spelling = []
        with torch.inference_mode():
            first = next_token_logprobs(self.model, ids, mask)  # [b, V]
            for _, sp in self._spellings:
                if len(sp) == 1:
                    per_spelling.append(first[:, list(sp)].tolist())  # [b, 1]
                    continue
                tail = torch.tensor(sp).expand(b, -1)  # [b, m]
                ext = torch.cat([ids, tail], 1)
                ext_mask = torch.cat([mask, torch.ones_like(tail)], 1)
                lp = token_logprobs(self.model, ext, ext_mask, start=width)  # [b, T + m]
                per_spelling.append(lp[:, width:].tolist())
        return [[col[r] for col in per_spelling] for r in range(b)]

    def _verdict(
        self, item: tuple[Example, Trajectory], prompt: list[int], spelled: list[list[float]]
    ) -> Verdict:
        totals = [sum(lps) for lps in spelled]
        yes = _logsumexp([x for x, (y, _) in zip(totals, self._spellings) if y])
        no = _logsumexp([x for x, (y, _) in zip(totals, self._spellings) if not y])
        score = 1.0 / (1.0 + math.exp(no - yes))  # P(yes) / (P(yes) + P(no))
        word = yes >= no
        best = max(
            (j for j, (y, _) in enumerate(self._spellings) if y == word), key=lambda j: totals[j]
        )
        said = list(self._spellings[best][1])
        ex, t = item
        grading = Trajectory(
            example_id=ex.id,
            group_id=f"judge:{ex.id}",
            sample_index=t.sample_index,
            segments=[
                Segment("prompt", prompt, self.tokenizer.decode(prompt)),
                Segment("model", said, self.tokenizer.decode(said), logprobs=spelled[best]),
            ],
            stop_reason="answer",
            prediction="yes" if word else "no",
            metadata={
                "judge": {"p_yes": score, "model": self.model_spec, "of_sample": t.sample_index}
            },
        )
        return Verdict(score, cost_tokens=len(prompt) + len(said), trajectory=grading)


def _logsumexp(xs: list[float]) -> float:
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


VERIFIERS = ("none", "confidence", "judge", "reward:NAME", "orm:DIR", "prm:DIR")


def make_verifier(
    spec: str, model_spec: str = "default", dtype: str = "float32", model: Any = None,
    tokenizer: Any = None, batch_size: int = 8,
) -> Verifier | None:  # fmt: skip
    """The verifier a spec names (VERIFIERS); 'none' or '' gives None. `judge` loads
    `model_spec` unless a loaded model and tokenizer are given."""
    if spec in ("", "none"):
        return None
    if spec == "confidence":
        return ConfidenceVerifier()
    if spec.startswith("reward:"):
        return RewardVerifier(spec.removeprefix("reward:"))
    if spec.startswith(("orm:", "prm:")):
        from trajlab.test_time.orm import ORMVerifier

        kind, path = spec.split(":", 1)
        return ORMVerifier(path, batch_size=batch_size, kind=kind)
    if spec == "judge":
        if model is None:
            from trajlab.build import load_policy

            model, tokenizer = load_policy(model_spec, dtype)
        model.eval()
        return JudgeVerifier(model, tokenizer, model_spec=model_spec, batch_size=batch_size)
    raise ConfigError(
        f"verifier: unknown verifier {spec!r}; choose one of {', '.join(VERIFIERS)} "
        "(e.g. reward:format_boxed)"
    )
