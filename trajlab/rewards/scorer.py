"""The one way a trajectory gets scored, in training and in evaluation alike.

    scorer = Scorer({"math_correct": 1.0})                 # or Scorer({"qa_f1": 1.0}, retrieval=True)
    breakdown = scorer(example, trajectory)                # sets reward, prediction, metadata["correct"]

`trajlab eval`, the trainer's rollouts and the trainer's periodic held-out evaluation all
call a Scorer built by `trajlab.build.build_scorer`, so "correct" means the same thing in
`metrics.jsonl` as in an evaluation run of the same checkpoint. A Scorer sets:

* `trajectory.reward`: the weighted sum of the named rewards (trajlab.rewards.REWARDS).
  With exactly one reward at weight 1 its breakdown is kept as the reward returned it
  (components `em`, `f1`, `correct`, ... for QA rewards); several rewards go through
  `combine`, whose components are each reward's unweighted value and `name/part`.
* `trajectory.prediction`: the model's own final answer, from model tokens with code
  blocks removed (what the code printed never counts as the answer), or the QA
  extractor (last <answer>, its box if any) when any reward is a QA reward.
* `metadata["correct"]`, in this order: the component named by `correct` when given;
  else a `correct` component (QA rewards and `math_toolstar` report one), also as
  `name/correct`; else the first reward's unweighted value > 0. So `math_pm1`'s -1 is
  wrong, and a format bonus added to `math_correct` never makes a wrong answer correct.
* `metadata["retrieval_recall"]` with `retrieval=True`, for examples that name gold
  supporting titles (meta.supporting_titles).

Training adds length shaping on top of the breakdown (trajlab.train.rl.score); it never
changes what counts as correct.

What it does not do: normalise rewards across a group or filter anything (trajlab.algos).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from trajlab.config import ConfigError
from trajlab.rewards import combine, compute_reward, get_reward
from trajlab.rewards.math import extract_answer, strip_code
from trajlab.rewards.qa import QA_REWARDS, extract_qa_answer, retrieval_recall
from trajlab.types import Example, RewardBreakdown, Trajectory


@dataclass
class Scorer:
    weights: dict[str, float]
    correct: str = ""  # component whose value > 0 means correct ("" : see the module docstring)
    retrieval: bool = False  # also set metadata["retrieval_recall"]

    def __post_init__(self) -> None:
        if not self.weights:
            raise ConfigError(
                "no reward given; name at least one, e.g. reward: math_correct "
                "(trajlab eval) or reward.weights: {math_correct: 1.0} (trajlab train)"
            )
        for name in self.weights:
            try:
                get_reward(name)
            except ValueError as e:
                raise ConfigError(str(e)) from None
        self.weights = dict(self.weights)
        (name, w), *rest = self.weights.items()
        self._single = not rest and w == 1.0
        self._fn = name if self._single else combine(self.weights)
        self._first = name
        self._qa = any(n in QA_REWARDS for n in self.weights)

    @classmethod
    def from_names(cls, names: Mapping[str, float] | str, **kw) -> Scorer:
        return cls({names: 1.0} if isinstance(names, str) else dict(names), **kw)

    def predict(self, traj: Trajectory) -> str | None:
        if self._qa:
            return extract_qa_answer(traj.model_text)
        return extract_answer(strip_code(traj.model_text))

    def is_correct(self, rb: RewardBreakdown) -> bool:
        comps = rb.components
        if self.correct:
            if self.correct not in comps:
                raise ConfigError(
                    f"reward.correct names {self.correct!r}, but the reward has only the "
                    f"components {', '.join(sorted(comps))}; pick one of them or leave it empty"
                )
            return comps[self.correct] > 0
        if "correct" in comps:
            return comps["correct"] > 0
        nested = f"{self._first}/correct"
        if nested in comps:
            return comps[nested] > 0
        first = comps.get(self._first, rb.total)
        return first > 0

    def __call__(self, example: Example, traj: Trajectory) -> RewardBreakdown:
        rb = compute_reward(self._fn, example, traj)
        traj.reward = rb
        if traj.prediction is None:
            traj.prediction = self.predict(traj)
        traj.metadata["correct"] = bool(self.is_correct(rb))
        if self.retrieval:
            recall = retrieval_recall(example, traj)
            if recall is not None:
                traj.metadata["retrieval_recall"] = recall
        return rb
