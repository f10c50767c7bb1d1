"""An outcome reward model: a logistic probe on a frozen model's hidden state.

    trajlab orm --samples runs/arith-train-n8 --out runs/orm          # train from scored samples
    trajlab test-time --samples runs/arith-n8 --method best_of_n --verifier orm:runs/orm

No reward model ships for the default model, so this trains one from rollouts the task's
reward has already scored (`trajlab eval -n N` on a training split: metadata.correct is
the label). The feature of a trajectory is the frozen model's last hidden state (after
the final norm) at its last token, the state that has read the question, the response
and every tool output; the classifier is scikit-learn's L2 logistic regression on
standardised features, its regularisation chosen by cross-validation with folds split
by question (so no question is in both sides of a fold), classes weighted to balance.
The held-out AUC of that cross-validation is reported and stored; a probe whose AUC is
near 0.5 has learnt nothing and says so.

orm.json holds the probe (coefficients, intercept, the standardisation), the base model
and dtype its features need, and the training statistics. ORMVerifier scores with it:
P(correct) per trajectory.

What it does not do: fine-tune the model (the probe is linear on frozen features) or
label steps (a process reward model needs Monte-Carlo step labels; not here yet).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trajlab.config import ConfigError
from trajlab.types import Example, Trajectory

FEATURE = "last hidden state (after the final norm) at the trajectory's last token"


def last_token_states(model: Any, seqs: Sequence[Sequence[int]], batch_size: int = 8) -> Any:
    """[N, H] float32 numpy array: each sequence's last hidden state at its last token."""
    import numpy as np
    import torch

    from trajlab.models import _hidden_states

    out = np.zeros((len(seqs), model.config.hidden_size), dtype=np.float32)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))  # less padding
    for s in range(0, len(order), batch_size):
        rows = order[s : s + batch_size]
        width = max(len(seqs[i]) for i in rows)
        ids = torch.tensor([list(seqs[i]) + [0] * (width - len(seqs[i])) for i in rows])
        mask = torch.tensor([[1] * len(seqs[i]) + [0] * (width - len(seqs[i])) for i in rows])
        with torch.inference_mode():
            hidden = _hidden_states(model, ids, mask)  # [b, T, H]
        last = torch.tensor([len(seqs[i]) - 1 for i in rows])
        states = hidden[torch.arange(len(rows)), last].float().numpy()  # [b, H]
        out[rows] = states
    return out


def train_orm(
    features: Any, labels: Sequence[int], groups: Sequence[str], folds: int = 5, seed: int = 0
) -> tuple[dict[str, Any], float]:
    """(probe, held-out AUC): a standardised L2 logistic regression, its strength chosen
    by cross-validation over folds of whole questions."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, GroupKFold
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(labels, dtype=np.int64)
    if y.min() == y.max():
        raise ConfigError(
            f"samples: every trajectory is {'right' if y[0] else 'wrong'}, so there is "
            "nothing to learn; sample more (-n) or at a higher temperature, or use an easier "
            "or harder task split"
        )
    n_groups = len(set(groups))
    folds = min(folds, n_groups, int(min(y.sum(), len(y) - y.sum())))
    if folds < 2:
        raise ConfigError(
            "samples: too few right (or wrong) trajectories to cross-validate the probe; "
            "sample more questions"
        )
    scaler = StandardScaler().fit(features)
    x = scaler.transform(features)
    cv = list(GroupKFold(n_splits=folds).split(x, y, groups))
    search = GridSearchCV(
        LogisticRegression(class_weight="balanced", max_iter=2000, random_state=seed),
        {"C": np.logspace(-4, 2, 10).tolist()},
        cv=cv,
        scoring="roc_auc",
    ).fit(x, y)
    return probe_dict(scaler, search.best_estimator_), float(search.best_score_)


def probe_dict(scaler: Any, clf: Any) -> dict[str, Any]:
    """A fitted standardisation and logistic regression as JSON: what the verifier reads."""
    return {
        "coef": clf.coef_[0].tolist(),
        "intercept": float(clf.intercept_[0]),
        "mean": scaler.mean_.tolist(),
        "scale": scaler.scale_.tolist(),
        "C": float(clf.C),
    }


@dataclass
class ORMVerifier:
    """P(correct) from a probe trained by `trajlab orm` (orm.json in `path`), or with
    kind 'prm' the value estimate of one trained by `trajlab prm` (prm.json)."""

    path: str
    model: Any = None
    batch_size: int = 8
    name: str = ""
    kind: str = "orm"
    spec: dict[str, Any] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.spec = read_probe(self.path, self.kind)
        self.name = self.name or f"{self.kind}:{self.path}"
        if self.model is None:
            from trajlab.build import load_policy

            self.model, _ = load_policy(self.spec["base_model"], self.spec["dtype"])
        self.model.eval()

    def score(self, items: Sequence[tuple[Example, Trajectory]]) -> list[Any]:
        import numpy as np

        from trajlab.test_time.verifiers import Verdict

        seqs = [t.token_ids for _, t in items]
        x = last_token_states(self.model, seqs, self.batch_size)
        p = self.spec["probe"]
        z = ((x - np.asarray(p["mean"])) / np.asarray(p["scale"])) @ np.asarray(p["coef"])
        z = z + p["intercept"]
        return [
            Verdict(1.0 / (1.0 + math.exp(-float(v))), cost_tokens=len(s)) for v, s in zip(z, seqs)
        ]


def read_probe(path: str | Path, kind: str = "orm") -> dict[str, Any]:
    """The probe `trajlab orm` (kind orm) or `trajlab prm` (kind prm) wrote into `path`."""
    f = Path(path) / f"{kind}.json" if Path(path).is_dir() else Path(path)
    if not f.is_file():
        raise ConfigError(
            f"verifier {kind}: {path} has no {kind}.json; train one with "
            f"`trajlab {kind} --samples RUN --out DIR` and pass {kind}:DIR"
        )
    return json.loads(f.read_text())


# -- CLI ------------------------------------------------------------------------------


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--samples", required=True,
        help="a `trajlab eval -n N` run directory on training questions; its scorer's "
        "metadata.correct is the label",
    )  # fmt: skip
    p.add_argument("--out", required=True, help="directory to write orm.json into")
    p.add_argument("--batch-size", type=int, default=8, help="trajectories per forward pass")
    add_probe_args(p, "seed of the solver")


def scored_samples(run: Path, target: Path) -> tuple[dict[str, Any], list[Trajectory]]:
    """The config (as JSON) and scored trajectories of the samples run a probe trains on;
    refuses to go on when the probe file `target` exists already (never overwritten)."""
    from trajlab.types import iter_jsonl

    if target.exists():
        raise ConfigError(f"out: {target} exists; choose another --out or delete it")
    cfg_path, traj_path = run / "config.json", run / "trajectories.jsonl"
    if not cfg_path.is_file() or not traj_path.is_file():
        raise ConfigError(
            f"samples: {run} is not an evaluation run directory with trajectories; give the "
            "--out of a finished `trajlab eval -n N` run"
        )
    trajs = [t for t in iter_jsonl(traj_path) if "correct" in t.metadata]
    if not trajs:
        raise ConfigError(f"samples: {traj_path} has no scored trajectories")
    return json.loads(cfg_path.read_text()), trajs


def add_probe_args(p: argparse.ArgumentParser, seed_help: str) -> None:
    """The flags `trajlab orm` and `trajlab prm` share: the feature model and the fit."""
    p.add_argument("--model", default="", help="base model of the features (default: the run's)")
    p.add_argument(
        "--dtype", default="auto", choices=("auto", "float32", "bfloat16"),
        help="dtype of the feature pass; auto: bfloat16 on CPUs with native bf16 matmul",
    )  # fmt: skip
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (by question)")
    p.add_argument("--seed", type=int, default=0, help=seed_help)


def main(args: argparse.Namespace) -> int:
    from trajlab.build import load_policy, resolve_decode_dtype

    run, out = Path(args.samples), Path(args.out)
    cfg, trajs = scored_samples(run, out / "orm.json")
    model_spec = args.model or cfg.get("model", "default")
    dtype = resolve_decode_dtype(args.dtype) or "float32"
    model, _ = load_policy(model_spec, dtype)
    model.eval()
    print(f"features of {len(trajs)} trajectories ({FEATURE})", file=sys.stderr)
    x = last_token_states(model, [t.token_ids for t in trajs], args.batch_size)
    labels = [int(bool(t.metadata["correct"])) for t in trajs]
    probe, auc = train_orm(x, labels, [t.example_id for t in trajs], args.folds, args.seed)
    spec = {
        "kind": "orm",
        "base_model": model_spec,
        "dtype": dtype,
        "feature": FEATURE,
        "probe": probe,
        "train": {
            "samples_run": str(run),
            "task": cfg.get("task"),
            "split": cfg.get("split"),
            "trajectories": len(trajs),
            "questions": len({t.example_id for t in trajs}),
            "positives": sum(labels),
            "cv_auc": auc,
        },
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "orm.json").write_text(json.dumps(spec, indent=1))
    verdict = "learnt nothing usable (AUC near 0.5)" if auc < 0.6 else "separates right from wrong"
    print(
        f"ORM on {len(trajs)} trajectories of {spec['train']['questions']} questions "
        f"({sum(labels)} right): held-out AUC {auc:.3f} by question folds, {verdict}"
    )
    print(f"written to {out / 'orm.json'}; use it as --verifier orm:{out}")
    return 0
