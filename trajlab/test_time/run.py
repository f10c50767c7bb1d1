"""`trajlab test-time`: sample N trajectories per question, score them, pick one per budget.

    trajlab test-time --model default --task arith --method vote --budgets 1,2,4,8
    trajlab test-time --samples runs/arith_n8 --method best_of_n --verifier judge

With `--samples RUN` the trajectories of an earlier `trajlab eval -n N` run are used as
they are (its config says which task and model they belong to); otherwise they are
sampled here, through the evaluation harness, into OUT/samples (an ordinary eval run:
resumable, viewable). For every budget k the strategy sees the first k samples of each
question and picks one (select.py). The run directory OUT holds:

    run.json, config.json      as every run (kind test_time)
    metrics.json               the compute-accuracy curve: per budget, the strategy's
                               accuracy, one sample's (plain sampling), pass@k (the best
                               any selection could do), the paired gain over one sample,
                               95 % bootstrap intervals over questions, tokens per question;
                               `accuracy` at its top level is the largest budget's
    trajectories.jsonl         the samples, each with metadata["test_time"]: its verifier
                               score, its answer cluster and the budgets that chose it
    chosen.jsonl               the trajectory chosen at the largest budget, per question
                               (SFT data after filtering, e.g. on metadata.correct)
    judge.jsonl                the judge's gradings (verifier judge), reused when the run
                               is repeated with the same judge
    summary.md, curve.png      the table and the plot
    beam.jsonl, tree.jsonl     method beam only: every finished trajectory of the search
                               and every expanded node, each tagged with its budget

Plain sampling at budget k is what k samples buy without a selector: one of them at
random, so its accuracy is their mean accuracy, with k times the tokens of one.

What it does not do: split a turn into smaller steps, or MCTS.
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from trajlab.config import ConfigError, opt, to_dict
from trajlab.eval.harness import EvalConfig
from trajlab.test_time.select import RULES
from trajlab.test_time.verifiers import VERIFIERS
from trajlab.types import Example, Trajectory, iter_jsonl, write_jsonl

# Keys that may change on a run that already has results: how to select, not what to sample.
_RESUMABLE = {
    "out", "batch_size", "progress", "threads", "method", "verifier", "budgets",
    "judge_model", "judge_batch_size", "judge_dtype", "beam_expand",
}  # fmt: skip


@dataclass
class TestTimeConfig(EvalConfig):
    method: str = opt(
        "vote",
        "vote: the most common answer; weighted_vote: answers weighted by the verifier's "
        "scores; best_of_n: the sample the verifier scores highest; beam: beam search over "
        "turns, budget/beam_expand partial trajectories kept per depth, ranked by the verifier",
        choices=(*RULES, "beam"),
    )
    verifier: str = opt(
        "",
        "scores for weighted_vote, best_of_n and beam: confidence (the policy's mean token "
        "probability), judge (a model asked yes or no), orm:DIR (an outcome reward model "
        "trained by `trajlab orm`), prm:DIR (a process reward model trained by `trajlab prm`, "
        "a value estimate of partial trajectories), reward:NAME (a reward; one that reads the reference "
        "answer makes best_of_n the oracle pass@N); empty: none for vote, confidence otherwise",
    )
    budgets: list[int] = opt(
        [1, 2, 4, 8], "samples per question the strategy may use; n is set to the largest"
    )
    samples: str = opt(
        "",
        "an earlier `trajlab eval -n N` run directory whose trajectories are used instead "
        "of sampling (its task and model settings apply)",
    )
    beam_expand: int = opt(
        2, "beam: continuations sampled per kept partial trajectory (each budget k is a "
        "multiple of it: k / beam_expand trajectories are kept per depth)"
    )  # fmt: skip
    judge_model: str = opt("", "model of the judge verifier (empty: the evaluated model)")
    judge_batch_size: int = opt(8, "gradings the judge reads together")
    judge_dtype: str = opt(
        "auto",
        "weights dtype of a judge loaded for this run; auto: bfloat16 on CPUs with native "
        "bf16 matmul, else float32",
        choices=("auto", "float32", "bfloat16"),
    )

    def __post_init__(self) -> None:
        if not self.budgets or min(self.budgets) < 1:
            raise ValueError(f"budgets must be positive sample counts, got {self.budgets}")
        self.budgets = sorted(set(self.budgets))
        if self.n == 1:
            self.n = self.budgets[-1]
        elif self.n < self.budgets[-1]:
            raise ValueError(
                f"n={self.n} samples cannot serve the budget {self.budgets[-1]}; "
                f"raise n or drop the budget"
            )
        if self.method == "beam":
            if self.beam_expand < 1:
                raise ValueError(f"beam_expand must be >= 1, got {self.beam_expand}")
            bad = [k for k in self.budgets if k % self.beam_expand]
            if bad:
                raise ValueError(
                    f"method beam: budgets {bad} are not multiples of beam_expand="
                    f"{self.beam_expand} (a budget k keeps k / beam_expand per depth)"
                )
        if not self.verifier:
            self.verifier = "none" if self.method == "vote" else "confidence"
        if self.method != "vote" and self.verifier == "none":
            raise ValueError(f"method {self.method} needs a verifier ({', '.join(VERIFIERS[1:])})")
        if self.judge_batch_size < 1:
            raise ValueError(f"judge_batch_size must be >= 1, got {self.judge_batch_size}")
        super().__post_init__()

    def eval_config(self, out: Path) -> EvalConfig:
        """The evaluation that samples the trajectories."""
        values = {f.name: getattr(self, f.name) for f in fields(EvalConfig)}
        return EvalConfig(**{**values, "out": str(out)})


def run_test_time(
    config: TestTimeConfig, argv: list[str] | None = None, engine: Any = None
) -> dict[str, Any]:
    """Sample (or read) the trajectories, score, select per budget, write OUT; return the
    metrics."""
    from trajlab.rundir import failure_recorded, start_or_resume, update_run_json

    out = Path(config.out or f"runs/test-time-{time.strftime('%Y%m%d-%H%M%S')}")
    source = Path(config.samples) if config.samples else out / "samples"
    if config.samples:
        sample_cfg = _samples_config(source, config)
    else:
        sample_cfg = config.eval_config(source)
    start_or_resume(out, "test_time", to_dict(config), "config.json", _RESUMABLE, argv)
    t0 = time.perf_counter()
    with failure_recorded(out):
        if not config.samples:
            from trajlab.eval.harness import evaluate

            evaluate(sample_cfg, engine=engine, argv=argv)
        examples, groups = _read_samples(source, sample_cfg, config.budgets[-1])
        if config.method == "beam":
            beam = _run_beam(config, sample_cfg, examples, out, engine)
            metrics = select_and_measure(config, sample_cfg, examples, groups, {}, out, beam)
        else:
            verdicts = _verdicts(config, sample_cfg, examples, groups, out, engine)
            metrics = select_and_measure(config, sample_cfg, examples, groups, verdicts, out)
        metrics["wall_time_s"] = time.perf_counter() - t0
        metrics["samples_run"] = str(source)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        from trajlab.test_time.report import write_curve_plot, write_summary

        write_summary(out / "summary.md", metrics)
        write_curve_plot(out / "curve.png", metrics)
    update_run_json(out, status="done")
    metrics["run_dir"] = str(out)
    return metrics


def _run_beam(
    config: TestTimeConfig,
    sample_cfg: EvalConfig,
    examples: dict[str, Example],
    out: Path,
    engine: Any,
) -> dict[int, Any]:
    """Beam search at every budget over the sampled questions, with the samples' agent,
    tools and sampling; writes beam.jsonl (every finished trajectory) and tree.jsonl
    (every expanded node), each row tagged with its budget."""
    from dataclasses import replace

    from trajlab.build import build_scorer, resolve_decode_dtype
    from trajlab.eval.harness import _build_loop
    from trajlab.test_time.beam import beam_search
    from trajlab.test_time.verifiers import make_verifier

    cfg = replace(sample_cfg, batch_size=max(sample_cfg.batch_size, config.batch_size))
    loop, tools = _build_loop(cfg, engine, None)
    scorer = build_scorer(sample_cfg.reward_spec(), correct=sample_cfg.correct)
    model = getattr(loop.engine, "model", None)
    judge_model = config.judge_model or sample_cfg.model
    own = config.verifier == "judge" and judge_model == sample_cfg.model and model is not None
    verifier = make_verifier(
        config.verifier, judge_model, resolve_decode_dtype(config.judge_dtype) or "float32",
        model if own else None, loop.engine.tokenizer if own else None, config.judge_batch_size,
    )  # fmt: skip
    for name in ("beam.jsonl", "tree.jsonl"):
        (out / name).unlink(missing_ok=True)
    results = {}
    try:
        for k in config.budgets:
            width = k // config.beam_expand
            print(
                f"beam search, budget {k}: {width} kept x {config.beam_expand} per depth, "
                f"{len(examples)} questions",
                file=sys.stderr,
            )
            loop.sampling = replace(sample_cfg.sampling(), seed=sample_cfg.seed * 1_000_003 + k)
            r = beam_search(loop, list(examples.values()), verifier, width, config.beam_expand,
                            on_depth=_report_depth)  # fmt: skip
            for ex_id, trajs in r.finished.items():
                for t in trajs:
                    scorer(examples[ex_id], t)
                    t.metadata["test_time"].update(k=k, chosen=t is r.chosen.get(ex_id))
            write_jsonl(out / "beam.jsonl", [t for ts in r.finished.values() for t in ts],
                        append=True)  # fmt: skip
            with (out / "tree.jsonl").open("a") as f:
                for n in r.nodes:
                    f.write(json.dumps({"k": k, **n.to_dict()}) + "\n")
            results[k] = r
    finally:
        for t in tools.values():
            t.close()
    return results


def _report_depth(depth: int, sampled: int, kept: int) -> None:
    print(f"  depth {depth}: {sampled} turns sampled, {kept} partial trajectories kept",
          file=sys.stderr)  # fmt: skip


def _samples_config(run: Path, config: TestTimeConfig) -> EvalConfig:
    """The config of an existing evaluation run, checked to hold enough samples."""
    from trajlab.config import from_dict

    path = run / "config.json"
    if not path.is_file():
        raise ConfigError(
            f"samples: {run} is not an evaluation run directory (no config.json); give the "
            "--out of a `trajlab eval -n N` run"
        )
    cfg = from_dict(EvalConfig, json.loads(path.read_text()))
    if cfg.n < config.budgets[-1]:
        raise ConfigError(
            f"samples: {run} has {cfg.n} samples per question, fewer than the budget "
            f"{config.budgets[-1]}; lower --budgets or sample more (trajlab eval -n ...)"
        )
    return cfg


def _read_samples(
    run: Path, cfg: EvalConfig, n: int
) -> tuple[dict[str, Example], dict[str, list[Trajectory]]]:
    """The examples and, per example, its first n samples in sample order."""
    from trajlab.eval.harness import load_examples

    path = run / "trajectories.jsonl"
    if not path.is_file():
        raise ConfigError(f"samples: {run} has no trajectories.jsonl; is the run finished?")
    by_id = {ex.id: ex for ex in load_examples(cfg)[: cfg.limit or None]}
    groups: dict[str, list[Trajectory]] = defaultdict(list)
    for t in iter_jsonl(path):
        if t.example_id in by_id:
            groups[t.example_id].append(t)
    short = [ex for ex in by_id if len(groups.get(ex, [])) < n]
    if short:
        raise ConfigError(
            f"samples: {len(short)} questions of {run} have fewer than {n} samples (e.g. "
            f"{short[0]!r}); finish that run first (run its command again to resume it)"
        )
    ordered = {ex: sorted(groups[ex], key=lambda t: t.sample_index)[:n] for ex in by_id}
    return by_id, ordered


def _verdicts(
    config: TestTimeConfig,
    sample_cfg: EvalConfig,
    examples: dict[str, Example],
    groups: dict[str, list[Trajectory]],
    out: Path,
    engine: Any,
) -> dict[tuple[str, int], Any]:
    """(example id, sample index) -> Verdict of the configured verifier ({} for none)."""
    from trajlab.build import resolve_decode_dtype
    from trajlab.test_time.verifiers import make_verifier

    if config.verifier == "none":
        return {}
    items = [(examples[ex], t) for ex, ts in groups.items() for t in ts]
    model = tokenizer = None
    cached: dict[tuple[str, int], Any] = {}
    judge_model = config.judge_model or sample_cfg.model
    dtype = resolve_decode_dtype(config.judge_dtype) or "float32"
    if config.verifier == "judge":
        if engine is not None and judge_model == sample_cfg.model and hasattr(engine, "model"):
            model, tokenizer = engine.model, engine.tokenizer  # the policy judges itself
            dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        cached = _cached_gradings(out / "judge.jsonl", judge_model, dtype)
    todo = [(ex, t) for ex, t in items if (ex.id, t.sample_index) not in cached]
    if not todo:
        return cached
    verifier = make_verifier(
        config.verifier, judge_model, dtype, model, tokenizer, config.judge_batch_size
    )
    print(f"scoring {len(todo)} samples with the {verifier.name} verifier", file=sys.stderr)
    verdicts = dict(cached)
    for s in range(0, len(todo), 64):  # gradings are appended as they finish
        chunk = todo[s : s + 64]
        scored = verifier.score(chunk)
        for (ex, t), v in zip(chunk, scored):
            verdicts[(ex.id, t.sample_index)] = v
        gradings = [v.trajectory for v in scored if v.trajectory is not None]
        for g in gradings:
            g.metadata["judge"]["dtype"] = dtype
        if gradings:
            write_jsonl(out / "judge.jsonl", gradings, append=True)
    return verdicts


def _cached_gradings(path: Path, judge_model: str, dtype: str) -> dict[tuple[str, int], Any]:
    """Gradings an earlier run of the same judge (model and dtype) left in judge.jsonl;
    the file is cleared when it holds another judge's."""
    from trajlab.test_time.verifiers import Verdict

    if not path.is_file():
        return {}
    out = {}
    for g in iter_jsonl(path):
        info = g.metadata.get("judge", {})
        if (info.get("model"), info.get("dtype")) == (judge_model, dtype):
            out[(g.example_id, info["of_sample"])] = Verdict(
                info["p_yes"], cost_tokens=len(g.token_ids), trajectory=g
            )
    if not out:
        path.unlink()
    return out


def select_and_measure(
    config: TestTimeConfig,
    sample_cfg: EvalConfig,
    examples: dict[str, Example],
    groups: dict[str, list[Trajectory]],
    verdicts: dict[tuple[str, int], Any],
    out: Path,
    beam: dict[int, Any] | None = None,
) -> dict[str, Any]:
    """Pick per question and budget, write trajectories.jsonl and chosen.jsonl, and return
    the curve (see the module docstring). With `beam` (budget -> BeamResult) the picks are
    the beam's, and the samples serve as plain sampling and pass@k only."""
    from trajlab.build import build_scorer
    from trajlab.eval.compare import bootstrap_ci
    from trajlab.test_time.answers import answer_equality, answer_kind, cluster_answers
    from trajlab.test_time.select import choose

    reward = sample_cfg.reward_spec()
    scorer = build_scorer(reward, correct=sample_cfg.correct)
    same = answer_equality(answer_kind(list(reward)))
    rows: dict[int, dict[str, list[float]]] = {k: defaultdict(list) for k in config.budgets}
    chosen: list[Trajectory] = []
    for ex_id, ts in groups.items():
        ex = examples[ex_id]
        for t in ts:
            if "correct" not in t.metadata:  # samples written by another scorer
                scorer(ex, t)
        scores = [_score(verdicts, ex_id, t) for t in ts]
        clusters = cluster_answers([t.prediction for t in ts], same)
        for t, s, c in zip(ts, scores, clusters):
            t.metadata["test_time"] = {"score": s, "cluster": c, "chosen_at": []}
        for k in config.budgets:
            right = [float(bool(t.metadata.get("correct"))) for t in ts[:k]]
            r = rows[k]
            r["sample"].append(sum(right) / k)
            r["oracle"].append(max(right))
            if beam is not None:
                found = beam[k].chosen.get(ex_id)
                r["method"].append(float(bool(found and found.metadata.get("correct"))))
                r["answered"].append(float(found is not None and found.prediction is not None))
                r["tokens"].append(float(beam[k].tokens[ex_id]))
                r["verifier_tokens"].append(float(beam[k].verifier_tokens[ex_id]))
                if found is not None and k == config.budgets[-1]:
                    chosen.append(found)
                continue
            pick = choose(config.method, clusters[:k], scores[:k])
            r["method"].append(right[pick] if pick is not None else 0.0)
            r["answered"].append(float(pick is not None))
            r["tokens"].append(float(sum(t.num_model_tokens for t in ts[:k])))
            r["verifier_tokens"].append(float(sum(_cost(verdicts, ex_id, t) for t in ts[:k])))
            if pick is not None:
                ts[pick].metadata["test_time"]["chosen_at"].append(k)
                if k == config.budgets[-1]:
                    chosen.append(ts[pick])
    all_trajs = [t for ts in groups.values() for t in ts]
    (out / "trajectories.jsonl").unlink(missing_ok=True)
    write_jsonl(out / "trajectories.jsonl", all_trajs)
    (out / "chosen.jsonl").unlink(missing_ok=True)
    write_jsonl(out / "chosen.jsonl", chosen)

    curve = []
    for k in config.budgets:
        r = rows[k]
        gain = [m - s for m, s in zip(r["method"], r["sample"])]
        curve.append(
            {
                "k": k,
                "accuracy": _mean(r["method"]),
                "accuracy_ci": list(bootstrap_ci(r["method"])),
                "sample_accuracy": _mean(r["sample"]),
                "sample_accuracy_ci": list(bootstrap_ci(r["sample"])),
                "gain_over_sample": _mean(gain),
                "gain_over_sample_ci": list(bootstrap_ci(gain)),
                "pass_at_k": _mean(r["oracle"]),
                "answered_rate": _mean(r["answered"]),
                "model_tokens_per_question": _mean(r["tokens"]),
                "verifier_tokens_per_question": _mean(r["verifier_tokens"]),
            }
        )
    last = curve[-1]
    return {
        # the headline (the viewer's run list): the strategy at the largest budget
        "accuracy": last["accuracy"],
        "accuracy_ci": last["accuracy_ci"],
        "sample_accuracy": last["sample_accuracy"],
        "method": config.method,
        "verifier": config.verifier,
        "model": sample_cfg.model,
        "task": sample_cfg.task,
        "temperature": sample_cfg.temperature,
        "num_examples": len(groups),
        "budgets": config.budgets,
        "curve": curve,
    }


def _score(verdicts: dict[tuple[str, int], Any], ex_id: str, t: Trajectory) -> float:
    v = verdicts.get((ex_id, t.sample_index))
    return 1.0 if v is None else float(v.score)  # no verifier: every vote counts the same


def _cost(verdicts: dict[tuple[str, int], Any], ex_id: str, t: Trajectory) -> int:
    v = verdicts.get((ex_id, t.sample_index))
    return 0 if v is None else int(v.cost_tokens)


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0
