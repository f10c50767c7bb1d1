"""QA rewards: exact match, F1 and cover-EM against an answers list, and the search-RL rewards.

How it is used:

    REWARDS["qa_em"](example, trajectory)      # RewardBreakdown(total=1.0, {"em", "f1", "cover_em", "correct"})
    exact_match("the Eiffel Tower", ["Eiffel Tower"])   # 1.0
    token_f1("Paris France", ["Paris"])                 # 0.667

Every reward here returns a RewardBreakdown whose components hold `em`, `f1` and
`cover_em` of the same extracted answer, and `correct` (1/0) for the harness, so an
evaluation reports all three metrics whichever reward it optimises.

Metrics (SQuAD / HotpotQA conventions):
* normalisation: lower case, punctuation removed, articles a/an/the removed,
  whitespace collapsed;
* EM: normalised strings equal, max over the references;
* F1: token-overlap F1 of the normalised strings, max over the references; as in
  HotpotQA's evaluation (and Tool-Star's), "yes", "no" and "noanswer" score 0 unless
  both sides are the same one of them;
* cover-EM: a normalised reference occurs in the normalised prediction. Departure:
  we require word boundaries (" 19 " does not cover "1945"); R1-Searcher's metric
  scripts are not in the specs.

Answer extraction (`extract_qa_answer`): the content of the last <answer>...</answer>
in the model's own text; if that holds a \\boxed{}, its content (Tool-Star writes
<answer>\\boxed{x}</answer>); with no answer tag, the last \\boxed{} anywhere. Only
model tokens count: passages echoed by the search tool are never an answer. Search-R1
needs two <answer> matches because its prompt's example is part of the decoded
string; our prompt is not part of `model_text`, so one suffices.

Method rewards (Search-R1, R1-Searcher, R1-Searcher++, Tool-Star papers and code):
* `searchr1_em`: Search-R1's qa_em: 1 if the last <answer> span is an exact match,
  else 0 (the answer tag only, no box).
* `r1searcher_stage1`: +1 cover-EM correct else -1 (-1 without an answer), +0.5 when
  the query/document markers are balanced and used at least once, +0.5 when
  </think>, <answer>, </answer> each occur once. Departure: R1-Searcher's prompt
  ends with "Assistant: <think>", so a second <think> was a violation; a chat
  template cannot prefill the assistant turn, so we accept zero or one <think>.
* `r1searcher_stage2`: F1 of the answer (0 without answer tags), minus 2 on any format
  violation: unbalanced query/document markers, "Assistant" echoed, think/answer tag
  counts wrong, query or document markers inside the answer, an answer longer than
  10 words, Chinese characters outside the documents.
* `toolstar_qa`: Tool-Star's hierarchical QA reward: -1 if the tags format check fails
  (rewards/format.py, `tags_format_error`); else F1 of the last \\boxed{} in the
  <answer>, plus 0.1 when F1 > 0 and both </search> and </python> occur (multi-tool
  bonus); 0 when F1 = 0. Only search and python count for the bonus, as in Tool-Star;
  a kg call does not.
* R1-Searcher++: the specs pin down only the format (<internal>, <external>,
  <document>) and that RL rewards outcome, format and internal-knowledge use; the
  exact terms, weights, group reward and memorisation loss are not published
  (arXiv 2505.17005 and its repository, as of this writing). So there are two parts and no invented weights:
  `r1spp_answer` is R1-Searcher's stage-2 reward with R1-Searcher++'s tags
  (<external>/<document> for query/document, and <internal> must be balanced), the
  README's "almost the same as R1-Searcher" being the only guide; `r1spp_internal`
  is 1 when the answer is correct (cover-EM) and no search call ran, else 0 — our
  reading of "rewarding internal knowledge", per trajectory only (a group-relative
  version needs the group, which a per-trajectory reward does not see). Mix them
  with `combine({"r1spp_answer": 1.0, "r1spp_internal": w})`; w is yours to choose.

Retrieval recall (`retrieval_recall`): the fraction of the example's gold supporting
titles (meta.supporting_titles) among the titles the search tool returned in the
trajectory (ToolCall.metadata["retrieved"], tools/search.py). As a metric it is not a
reward; `search_recall` turns it into partial credit for search RL on small models
(labelled as such: it rewards finding the evidence, not answering).

What it does not do: LLM-as-judge scoring, or Search-R1's format-shaped variant
(qa_em_format: its validity check is not in the specs).
"""

from __future__ import annotations

import re
import string
from collections import Counter

from trajlab.rewards.format import tags_format_error
from trajlab.rewards.math import extract_boxed
from trajlab.types import Example, RewardBreakdown, Trajectory

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_SPECIAL = ("yes", "no", "noanswer")


# -- metrics (pure) ---------------------------------------------------------------


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lower, drop punctuation, drop articles, collapse whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _references(refs: list[str] | str) -> list[str]:
    refs = [refs] if isinstance(refs, str) else list(refs)
    if not refs:
        raise ValueError("QA scoring needs at least one reference answer; the example has none")
    return refs


def exact_match(prediction: str | None, references: list[str] | str) -> float:
    if prediction is None:
        return 0.0
    p = normalize_answer(prediction)
    return float(any(p == normalize_answer(r) for r in _references(references)))


def _f1_one(prediction: str, reference: str) -> float:
    p, r = normalize_answer(prediction), normalize_answer(reference)
    if (p in _SPECIAL or r in _SPECIAL) and p != r:
        return 0.0
    p_tok, r_tok = p.split(), r.split()
    common = sum((Counter(p_tok) & Counter(r_tok)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p_tok), common / len(r_tok)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str | None, references: list[str] | str) -> float:
    if prediction is None:
        return 0.0
    return max(_f1_one(prediction, r) for r in _references(references))


def cover_exact_match(prediction: str | None, references: list[str] | str) -> float:
    """1.0 if a normalised reference appears, on word boundaries, in the normalised prediction."""
    if prediction is None:
        return 0.0
    p = f" {normalize_answer(prediction)} "
    return float(
        any(
            normalize_answer(r) and f" {normalize_answer(r)} " in p for r in _references(references)
        )
    )


def qa_scores(prediction: str | None, references: list[str] | str) -> dict[str, float]:
    return {
        "em": exact_match(prediction, references),
        "f1": token_f1(prediction, references),
        "cover_em": cover_exact_match(prediction, references),
    }


# -- extraction -------------------------------------------------------------------

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def extract_answer_span(text: str) -> str | None:
    """Content of the last <answer>...</answer>, stripped; None if absent or empty."""
    found = _ANSWER.findall(text)
    if not found or not found[-1].strip():
        return None
    return found[-1].strip()


def extract_qa_answer(text: str) -> str | None:
    """The last <answer> (its \\boxed{} content if it has one), else the last \\boxed{}."""
    span = extract_answer_span(text)
    if span is not None:
        return extract_boxed(span) or span
    return extract_boxed(text)


def _prediction(traj: Trajectory) -> str | None:
    return extract_qa_answer(traj.model_text)


def _breakdown(
    total: float, prediction: str | None, example: Example, correct_key: str, **extra: float
) -> RewardBreakdown:
    scores = qa_scores(prediction, example.references)
    comps = {**scores, **extra, "correct": scores[correct_key]}
    return RewardBreakdown(total=float(total), components=comps)


# -- generic rewards -------------------------------------------------------------


def qa_em(example: Example, trajectory: Trajectory) -> RewardBreakdown:
    """1/0 exact match of the extracted answer; correct = EM."""
    pred = _prediction(trajectory)
    return _breakdown(exact_match(pred, example.references), pred, example, "em")


def qa_f1(example: Example, trajectory: Trajectory) -> RewardBreakdown:
    """Token F1 of the extracted answer; correct = EM."""
    pred = _prediction(trajectory)
    return _breakdown(token_f1(pred, example.references), pred, example, "em")


def qa_cover_em(example: Example, trajectory: Trajectory) -> RewardBreakdown:
    """1/0 cover-EM of the extracted answer; correct = cover-EM."""
    pred = _prediction(trajectory)
    return _breakdown(cover_exact_match(pred, example.references), pred, example, "cover_em")


def searchr1_em(example: Example, trajectory: Trajectory) -> RewardBreakdown:
    """Search-R1's qa_em: EM of the last <answer> span (no box handling); correct = EM."""
    pred = extract_answer_span(trajectory.model_text)
    return _breakdown(exact_match(pred, example.references), pred, example, "em")


# -- R1-Searcher ---------------------------------------------------------------------

R1S_MARKERS = (
    "<|begin_of_query|>",
    "<|end_of_query|>",
    "<|begin_of_documents|>",
    "<|end_of_documents|>",
)
R1SPP_MARKERS = ("<external>", "</external>", "<document>", "</document>")
_CJK = re.compile(r"[\u4e00-\u9fff]")


def retrieval_format_ok(text: str, markers: tuple[str, ...] = R1S_MARKERS) -> bool:
    """All query/document markers occur equally often, and at least once."""
    counts = {text.count(m) for m in markers}
    return len(counts) == 1 and counts.pop() >= 1


def answer_format_ok(text: str) -> bool:
    """</think>, <answer>, </answer> exactly once each, at most one <think>."""
    return (
        text.count("</think>") == 1
        and text.count("<answer>") == 1
        and text.count("</answer>") == 1
        and text.count("<think>") <= 1
    )


def r1searcher_stage1(example: Example, trajectory: Trajectory) -> RewardBreakdown:
    text = trajectory.response_text  # markers of documents are written by the tool side
    pred = extract_answer_span(trajectory.model_text)
    cover = cover_exact_match(pred, example.references)
    base = 1.0 if (pred is not None and cover) else -1.0
    retrieval = 0.5 if retrieval_format_ok(text) else 0.0
    fmt = 0.5 if answer_format_ok(text) else 0.0
    return _breakdown(
        base + retrieval + fmt,
        pred,
        example,
        "cover_em",
        answer=base,
        retrieval_format=retrieval,
        format=fmt,
    )


def stage2_violation(
    text: str,
    markers: tuple[str, ...] = R1S_MARKERS,
    extra_balanced: tuple[tuple[str, str], ...] = (),
) -> str | None:
    """Why `text` breaks R1-Searcher's stage-2 format, or None."""
    counts = [text.count(m) for m in markers]
    if len(set(counts)) != 1:
        return f"query/document markers unbalanced: {dict(zip(markers, counts))}"
    for open_, close in extra_balanced:
        if text.count(open_) != text.count(close):
            return f"{open_} and {close} unbalanced"
    if "Assistant" in _outside_documents(text, markers):
        return '"Assistant" echoed'
    if not answer_format_ok(text):
        return (
            "think/answer tags must be: at most one <think>, one </think>, one <answer>...</answer>"
        )
    span = extract_answer_span(text) or ""
    if any(m in span for m in markers):
        return "query or document markers inside the answer"
    if len(span.split()) > 10:
        return f"answer has {len(span.split())} words (> 10)"
    if _CJK.search(_outside_documents(text, markers)):
        return "Chinese characters outside the documents"
    return None


def _outside_documents(text: str, markers: tuple[str, ...]) -> str:
    open_, close = markers[2], markers[3]
    return re.sub(re.escape(open_) + r".*?" + re.escape(close), " ", text, flags=re.DOTALL)


def _stage2(
    example: Example,
    trajectory: Trajectory,
    markers: tuple[str, ...],
    extra: tuple[tuple[str, str], ...] = (),
) -> RewardBreakdown:
    text = trajectory.response_text
    pred = extract_answer_span(trajectory.model_text)
    f1 = token_f1(pred, example.references)
    violation = stage2_violation(text, markers, extra)
    penalty = -2.0 if violation else 0.0
    return _breakdown(f1 + penalty, pred, example, "em", format_penalty=penalty)


def r1searcher_stage2(example: Example, trajectory: Trajectory) -> RewardBreakdown:
    return _stage2(example, trajectory, R1S_MARKERS)


def r1spp_answer(example: Example, trajectory: Trajectory) -> RewardBreakdown:
    """R1-Searcher stage-2 reward over R1-Searcher++'s tags (see the module docstring)."""
    return _stage2(example, trajectory, R1SPP_MARKERS, (("<internal>", "</internal>"),))


def r1spp_internal(example: Example, trajectory: Trajectory) -> RewardBreakdown:
    """1 if the answer is right (cover-EM) and no search ran; 0 otherwise. Weight not published."""
    pred = extract_answer_span(trajectory.model_text)
    cover = cover_exact_match(pred, example.references)
    searched = any(
        c.tool == "search" and c.status not in ("parse_error", "limit")
        for c in trajectory.tool_calls
    )
    return _breakdown(float(bool(cover) and not searched), pred, example, "cover_em")


# -- Tool-Star --------------------------------------------------------------------


def toolstar_qa(example: Example, trajectory: Trajectory) -> RewardBreakdown:
    text = trajectory.response_text
    error = tags_format_error(text)
    span = extract_answer_span(trajectory.model_text)
    pred = extract_boxed(span) if span is not None else None
    if error is not None:
        return _breakdown(-1.0, pred, example, "em", format_ok=0.0)
    f1 = token_f1(pred, example.references)
    bonus = 0.1 if (f1 > 0 and "</search>" in text and "</python>" in text) else 0.0
    return _breakdown(
        f1 + bonus if f1 > 0 else 0.0, pred, example, "em", format_ok=1.0, multi_tool_bonus=bonus
    )


# -- retrieval recall -----------------------------------------------------------------


def _norm_title(t: str) -> str:
    return " ".join(t.split()).casefold()


def retrieved_titles(trajectory: Trajectory) -> list[str]:
    """Titles the search tool returned in this trajectory, in call and rank order."""
    out = []
    for c in trajectory.tool_calls:
        for h in (c.metadata.get("retrieved") or {}).get("hits", []):
            out.append(h["title"])
    return out


def retrieval_recall(example: Example, trajectory: Trajectory) -> float | None:
    """Fraction of meta.supporting_titles retrieved; None when the example has none."""
    gold = {_norm_title(t) for t in example.meta.get("supporting_titles") or []}
    if not gold:
        return None
    got = {_norm_title(t) for t in retrieved_titles(trajectory)}
    return len(gold & got) / len(gold)


def search_recall(example: Example, trajectory: Trajectory) -> float:
    """Partial credit for searching well, not for answering: the fraction of the example's
    gold supporting titles among the passages the model's searches returned (0 without a
    search). Meant to be added to an answer reward with a small weight, e.g.
    {qa_f1: 1.0, search_recall: 0.5}, so that a small model that cannot yet read the answer
    out of a passage still gets a gradient toward queries that find it."""
    recall = retrieval_recall(example, trajectory)
    if recall is None:
        raise ValueError(
            f"example {example.id!r} has no meta.supporting_titles, so search_recall cannot "
            "score it; give every row its gold titles or drop search_recall from the reward"
        )
    return float(recall)


QA_REWARDS = {
    "qa_em": qa_em,
    "qa_f1": qa_f1,
    "qa_cover_em": qa_cover_em,
    "searchr1_em": searchr1_em,
    "r1searcher_stage1": r1searcher_stage1,
    "r1searcher_stage2": r1searcher_stage2,
    "r1spp_answer": r1spp_answer,
    "r1spp_internal": r1spp_internal,
    "toolstar_qa": toolstar_qa,
    "search_recall": search_recall,
}
