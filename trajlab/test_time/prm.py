"""A process reward model: a value probe trained on Monte-Carlo step labels.

    trajlab prm --samples runs/arith-train-n8 --rollouts 4 --out runs/prm
    trajlab test-time --model default --task arith --method beam --verifier prm:runs/prm

No process reward model ships for the default model, so this one is trained from the
model's own rollouts. A step is a model turn, the split beam search uses (beam.py). For
every sampled trajectory of a `trajlab eval -n N` run and every turn after its first, the
prefix before that turn (prompt, earlier turns, their tool outputs) is continued
`rollouts` times by the run's own agent loop, sampling and tools, and the fraction of
continuations the task's reward accepts is the prefix's label: the Monte-Carlo estimate
of the chance that a completion from this state reaches the right answer (the soft label
of Math-Shepherd, Wang et al. 2024). A finished trajectory is labelled 1 or 0 by its own
correctness. The model is therefore a value estimate of any state on the way to an
answer, which is what beam search asks of a partial trajectory.

Feature as for the ORM (orm.py): the frozen model's last hidden state at the state's last
token. The classifier is a logistic regression fitted to the soft labels (a state with
label p counts as a right example with weight p and a wrong one with weight 1 - p, which
is the cross-entropy against p), its strength chosen by question-grouped cross-validation
on held-out cross-entropy. The run reports that cross-entropy next to a constant
predictor's (the training folds' mean label), the correlation of held-out predictions with
the prefixes' labels, and the AUC on finished trajectories (comparable with the ORM's).

DIR holds labels.jsonl (one row per labelled prefix, appended as each batch of rollouts
ends: a rerun keeps them and labels only the rest), rollouts.jsonl (every continuation, a
scored trajectory the viewer shows) and prm.json (the probe, read by the `prm:DIR`
verifier exactly as orm.json is).

What it does not do: split a turn into smaller steps (at newlines or blank lines), or
fine-tune the model (the probe is linear on frozen features).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from trajlab.config import ConfigError
from trajlab.types import Trajectory, write_jsonl

FEATURE = "last hidden state (after the final norm) at the state's last token"


def step_cuts(traj: Trajectory) -> list[int]:
    """Where the turns after the first start: the indices of its later model segments."""
    return [i for i, s in enumerate(traj.segments) if s.source == "model"][1:]


def prefix_ids(traj: Trajectory, cut: int) -> list[int]:
    return [i for s in traj.segments[:cut] for i in s.token_ids]


def label_prefixes(
    loop: Any,
    scorer: Any,
    examples: dict[str, Any],
    prefixes: Sequence[tuple[Trajectory, int]],
    rollouts: int,
    batch_size: int,
    seed: int,
    out: Path,
) -> None:
    """Continue every (trajectory, cut) `rollouts` times and append its label to
    out/labels.jsonl and the continuations to out/rollouts.jsonl, a batch at a time."""
    from trajlab.eval.harness import keyed_seed

    per_batch = max(1, batch_size // rollouts)
    base = loop.sampling
    for s in range(0, len(prefixes), per_batch):
        chunk = prefixes[s : s + per_batch]
        first = f"{chunk[0][0].example_id}/{chunk[0][0].sample_index}/{chunk[0][1]}"
        loop.sampling = replace(base, seed=keyed_seed(seed, first))
        eps = [
            loop.resume(examples[t.example_id], t, cut, t.sample_index * 1000 + cut * rollouts + r)
            for t, cut in chunk
            for r in range(rollouts)
        ]
        while not all(e.done for e in eps):
            loop.advance(eps)
        finished = loop.finish(eps)
        rows = []
        for j, (t, cut) in enumerate(chunk):
            outs = finished[j * rollouts : (j + 1) * rollouts]
            for o in outs:
                scorer(examples[t.example_id], o)
                o.metadata["prm_prefix"] = {"of_sample": t.sample_index, "cut": cut}
            right = [bool(o.metadata["correct"]) for o in outs]
            rows.append({
                "example_id": t.example_id, "sample_index": t.sample_index, "cut": cut,
                "turn": sum(seg.source == "model" for seg in t.segments[:cut]),
                "label": sum(right) / len(right), "outcomes": right,
                "sample_correct": bool(t.metadata.get("correct")),
            })  # fmt: skip
        write_jsonl(out / "rollouts.jsonl", finished, append=True)
        with (out / "labels.jsonl").open("a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        done = min(s + per_batch, len(prefixes))
        print(f"labelled {done}/{len(prefixes)} prefixes", file=sys.stderr)
    loop.sampling = base


def train_value_probe(
    features: Any, labels: Sequence[float], groups: Sequence[str], finished: Sequence[bool],
    folds: int = 5, seed: int = 0,
) -> tuple[dict[str, Any], dict[str, float]]:  # fmt: skip
    """(probe, held-out statistics): a standardised L2 logistic regression fitted to soft
    labels in [0, 1], its strength chosen by cross-entropy over folds of whole questions."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold
    from sklearn.preprocessing import StandardScaler

    from trajlab.test_time.orm import probe_dict

    y = np.asarray(labels, dtype=np.float64)
    done = np.asarray(finished, dtype=bool)
    if y.min() == y.max():
        raise ConfigError(
            f"samples: every state has the label {y[0]:g}, so there is nothing to learn; "
            "sample more (-n), more rollouts, or another task split"
        )
    folds = min(folds, len(set(groups)))
    if folds < 2:
        raise ConfigError("samples: the probe needs the samples of at least 2 questions")

    def fit(x: Any, yy: Any, c: float) -> Any:
        # each state twice: right with weight p, wrong with weight 1 - p
        xx = np.concatenate([x, x])
        target = np.concatenate([np.ones(len(yy)), np.zeros(len(yy))])
        w = np.concatenate([yy, 1.0 - yy])
        keep = w > 0
        clf = LogisticRegression(C=c, max_iter=2000, random_state=seed)
        return clf.fit(xx[keep], target[keep], sample_weight=w[keep])

    def xent(p: Any, q: Any) -> float:
        q = np.clip(q, 1e-6, 1 - 1e-6)
        return float(-np.mean(p * np.log(q) + (1 - p) * np.log(1 - q)))

    cv = list(GroupKFold(n_splits=folds).split(features, y, groups))
    best: tuple[float, float, Any] | None = None
    for c in np.logspace(-4, 2, 10).tolist():
        pred = np.zeros(len(y))
        for tr, te in cv:
            scaler = StandardScaler().fit(features[tr])
            clf = fit(scaler.transform(features[tr]), y[tr], c)
            pred[te] = clf.predict_proba(scaler.transform(features[te]))[:, 1]
        loss = xent(y, pred)
        if best is None or loss < best[0]:
            best = (loss, c, pred)
    loss, c, pred = best
    const = np.zeros(len(y))
    for tr, te in cv:
        const[te] = y[tr].mean()
    stats = {"C": c, "cv_cross_entropy": loss, "constant_cross_entropy": xent(y, const)}
    hard = y[done]
    if done.any() and 0 < hard.sum() < len(hard):
        stats["cv_auc_finished"] = float(roc_auc_score(hard, pred[done]))
    if (~done).sum() > 2 and np.std(y[~done]) > 0 and np.std(pred[~done]) > 0:
        stats["cv_prefix_correlation"] = float(np.corrcoef(y[~done], pred[~done])[0, 1])
    scaler = StandardScaler().fit(features)
    return probe_dict(scaler, fit(scaler.transform(features), y, c)), stats


# -- CLI ------------------------------------------------------------------------------


def configure(p: argparse.ArgumentParser) -> None:
    from trajlab.test_time.orm import add_probe_args

    p.add_argument(
        "--samples", required=True,
        help="a `trajlab eval -n N` run directory on training questions; its agent, tools, "
        "sampling and reward continue and score the prefixes",
    )  # fmt: skip
    p.add_argument(
        "--out", required=True, help="directory of labels.jsonl, rollouts.jsonl, prm.json"
    )
    p.add_argument(
        "--rollouts", type=int, default=4, help="continuations per prefix (its label's denominator)"
    )
    p.add_argument("--batch-size", type=int, default=64, help="episodes rolled out together")
    add_probe_args(p, "seed of the continuations and the solver")


def main(args: argparse.Namespace, engine: Any = None) -> int:
    from trajlab.build import build_scorer, load_policy, resolve_decode_dtype
    from trajlab.config import from_dict
    from trajlab.eval.harness import EvalConfig, _build_loop, load_examples
    from trajlab.test_time.orm import last_token_states, scored_samples

    run, out = Path(args.samples), Path(args.out)
    if args.rollouts < 1:
        raise ConfigError(f"rollouts must be >= 1, got {args.rollouts}")
    raw, trajs = scored_samples(run, out / "prm.json")
    cfg = from_dict(EvalConfig, raw)
    if cfg.agent.stateful:
        raise ConfigError(
            "samples: a run with stateful tool sessions cannot be resumed from a prefix"
        )
    examples = {ex.id: ex for ex in load_examples(cfg)}
    trajs = [t for t in trajs if t.example_id in examples]
    out.mkdir(parents=True, exist_ok=True)
    done = _labelled(out, prune_rollouts=True)
    prefixes = [(t, c) for t in trajs for c in step_cuts(t)]
    todo = [(t, c) for t, c in prefixes if (t.example_id, t.sample_index, c) not in done]
    print(
        f"{len(prefixes)} prefixes in {len(trajs)} trajectories ({len(done)} labelled before), "
        f"{args.rollouts} continuations each",
        file=sys.stderr,
    )
    if todo:
        loop, tools = _build_loop(cfg, engine, None)
        scorer = build_scorer(cfg.reward_spec(), correct=cfg.correct)
        try:
            label_prefixes(loop, scorer, examples, todo, args.rollouts, args.batch_size,
                           args.seed, out)  # fmt: skip
        finally:
            for t in tools.values():
                t.close()
        del loop
        done = _labelled(out)
    by_key = {(t.example_id, t.sample_index): t for t in trajs}
    seqs, labels, groups, finished = [], [], [], []
    for (ex_id, i, cut), r in done.items():
        if (ex_id, i) in by_key:
            seqs.append(prefix_ids(by_key[(ex_id, i)], cut))
            labels.append(r["label"])
            groups.append(ex_id)
            finished.append(False)
    for t in trajs:
        seqs.append(t.token_ids)
        labels.append(float(bool(t.metadata["correct"])))
        groups.append(t.example_id)
        finished.append(True)
    dtype = resolve_decode_dtype(args.dtype) or "float32"
    model_spec = args.model or cfg.model
    model, _ = load_policy(model_spec, dtype)
    model.eval()
    print(f"features of {len(seqs)} states ({FEATURE})", file=sys.stderr)
    x = last_token_states(model, seqs, 8)
    probe, stats = train_value_probe(x, labels, groups, finished, args.folds, args.seed)
    n_prefix = len(seqs) - len(trajs)
    spec = {
        "kind": "prm",
        "base_model": model_spec,
        "dtype": dtype,
        "feature": FEATURE,
        "step": "model turn",
        "probe": probe,
        "train": {
            "samples_run": str(run),
            "task": cfg.task,
            "split": cfg.split,
            "trajectories": len(trajs),
            "questions": len({t.example_id for t in trajs}),
            "prefixes": n_prefix,
            "rollouts_per_prefix": args.rollouts,
            "mean_prefix_label": sum(labels[:n_prefix]) / n_prefix if n_prefix else None,
            **stats,
        },
    }
    (out / "prm.json").write_text(json.dumps(spec, indent=1))
    gain = stats["constant_cross_entropy"] - stats["cv_cross_entropy"]
    verdict = "better than a constant" if gain > 0 else "no better than a constant: learnt nothing"
    extra = "".join(
        f", {name} {stats[key]:.3f}"
        for key, name in (
            ("cv_auc_finished", "AUC on finished"),
            ("cv_prefix_correlation", "prefix correlation"),
        )  # fmt: skip
        if key in stats
    )
    print(
        f"PRM on {n_prefix} prefixes and {len(trajs)} finished trajectories of "
        f"{spec['train']['questions']} questions: held-out cross-entropy "
        f"{stats['cv_cross_entropy']:.3f} vs {stats['constant_cross_entropy']:.3f} for a "
        f"constant ({verdict}){extra}"
    )
    print(f"written to {out / 'prm.json'}; use it as --verifier prm:{out}")
    return 0


def _labelled(
    out: Path, prune_rollouts: bool = False
) -> dict[tuple[str, int, int], dict[str, Any]]:
    """The labels an earlier (maybe interrupted) run left in out/labels.jsonl, keyed by
    (example id, sample index, cut). A line cut short is dropped; with `prune_rollouts`,
    so are continuations in rollouts.jsonl whose prefix has no label (their batch ended
    before its labels were written, so it is rolled out again)."""
    path = out / "labels.jsonl"
    rows: dict[tuple[str, int, int], dict[str, Any]] = {}
    if path.is_file():
        lines = path.read_text().splitlines(keepends=True)
        good = [ln for ln in lines if ln.endswith("\n") and _json_or_none(ln) is not None]
        if len(good) != len(lines):
            path.write_text("".join(good))
        for ln in good:
            r = json.loads(ln)
            rows[(r["example_id"], r["sample_index"], r["cut"])] = r
    roll = out / "rollouts.jsonl"
    if prune_rollouts and roll.is_file():
        keep = []
        for ln in roll.read_text().splitlines(keepends=True):
            t = _json_or_none(ln) if ln.endswith("\n") else None
            at = (t or {}).get("metadata", {}).get("prm_prefix")
            if at and (t["example_id"], at["of_sample"], at["cut"]) in rows:
                keep.append(ln)
        roll.write_text("".join(keep))
    return rows


def _json_or_none(line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


if __name__ == "__main__":  # pragma: no cover
    p = argparse.ArgumentParser(prog="trajlab prm")
    configure(p)
    sys.exit(main(p.parse_args()))
