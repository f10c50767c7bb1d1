"""Synthetic run directories, exactly in the layout of docs/run_directory.md.

Used by the viewer's tests, its benchmark and `python -m trajlab.viewer --demo DIR`.
Trajectories are built from the real `trajlab.types` classes and written with
`write_jsonl`, so what the viewer reads here is what the harness and trainer write.

Tokens come from a toy word-level tokenizer: a segment's text is split into pieces
(`\\S+\\s*`), each piece gets a vocabulary id, and the segment's token ids are those
ids, so `text == "".join(pieces)` holds per segment. `write_tokenizer` saves that
vocabulary as a Hugging Face tokenizer directory so the viewer's optional decoding
can be tested without any downloaded model.

What this module does not do: simulate a learning dynamic faithfully. Metrics follow
simple scripted curves chosen so that particular alarms fire (or do not).
"""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from trajlab.types import RewardBreakdown, Segment, ToolCall, Trajectory, write_jsonl

_PIECE = re.compile(r"\S+\s*|\s+")


class ToyVocab:
    """Word-piece vocabulary: piece -> id, grown on demand."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {"[UNK]": 0}

    def encode(self, text: str) -> list[int]:
        out = []
        for piece in _PIECE.findall(text):
            if piece not in self.ids:
                self.ids[piece] = len(self.ids)
            out.append(self.ids[piece])
        return out

    def pieces(self) -> list[str]:
        return list(self.ids)


def write_tokenizer(vocab: ToyVocab, out_dir: str | Path) -> Path:
    """Save the vocabulary as a Hugging Face tokenizer directory (WordLevel, no normaliser)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab=dict(vocab.ids), unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(_PIECE.pattern, behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    out = Path(out_dir)
    fast.save_pretrained(out)
    return out


def _segment(
    vocab: ToyVocab, source: str, text: str, rng: random.Random, temp: float = 1.0
) -> Segment:
    ids = vocab.encode(text)
    if source != "model":
        return Segment(source, ids, text)
    logprobs = [-abs(rng.gauss(0.0, 0.8 * temp)) for _ in ids]
    return Segment(source, ids, text, logprobs=logprobs, loss_mask=[1] * len(ids))


@dataclass
class TrajSpec:
    """What one synthetic trajectory should look like."""

    example_id: str
    sample_index: int
    a: int
    b: int
    correct: bool
    use_tool: bool = True
    tool_error: bool = False
    stop_reason: str = "answer"
    extra_words: int = 0  # padding in the reasoning, to make long responses
    step: int | None = None  # set for training trajectories: adds metadata["train"]


def make_trajectory(spec: TrajSpec, vocab: ToyVocab, rng: random.Random) -> Trajectory:
    """A prompt, model turns with an optional python call, the tool output and an answer."""
    truth = spec.a * spec.b + 7
    t = Trajectory(
        example_id=spec.example_id,
        group_id=f"{spec.example_id}/g{spec.step or 0}",
        sample_index=spec.sample_index,
    )
    question = f"What is {spec.a} * {spec.b} + 7? Use python if it helps. "
    t.add(_segment(vocab, "prompt", "<|user|> " + question, rng))
    t.add(_segment(vocab, "template", "<|assistant|> ", rng))
    pad = " ".join(
        rng.choice(["so", "then", "we", "check", "again", "carefully"])
        for _ in range(spec.extra_words)
    )
    thought = f"I will compute {spec.a} times {spec.b} first. {pad} "
    if spec.use_tool:
        code = f"print({spec.a} * {spec.b} + 7)"
        t.add(_segment(vocab, "model", thought + f"```python\n{code}\n```\n", rng))
        if spec.tool_error:
            result, err = "NameError: name 'prnt' is not defined", "NameError"
        else:
            result, err = str(truth), None
        t.add(_segment(vocab, "tool", f"```output\n{result}\n```\n", rng))
        t.tool_calls.append(
            ToolCall(
                tool="python",
                args={"code": code},
                result=result,
                ok=err is None,
                latency_s=round(rng.uniform(0.02, 0.4), 4),
                error=err,
                status="ok" if err is None else "error",
                turn=0,
            )
        )
    else:
        t.add(_segment(vocab, "model", thought, rng))
    answer = truth if spec.correct else truth + rng.choice([-10, -1, 1, 3])
    if spec.stop_reason == "length":
        t.add(_segment(vocab, "model", "so the answer is maybe", rng))
        t.prediction = None
    else:
        t.add(_segment(vocab, "model", f"The answer is \\boxed{{{answer}}}.", rng))
        t.prediction = str(answer)
    t.stop_reason = spec.stop_reason
    correct = float(spec.correct and spec.stop_reason == "answer")
    fmt = 0.1 if t.prediction is not None else 0.0
    t.reward = RewardBreakdown(total=correct + fmt, components={"correct": correct, "format": fmt})
    t.metadata = {"turns": 2 if spec.use_tool else 1, "tool_calls": len(t.tool_calls)}
    if spec.step is not None:
        t.metadata["train"] = _train_overlay(t, spec.step, rng)
    return t


def _train_overlay(t: Trajectory, step: int, rng: random.Random) -> dict[str, Any]:
    """Per-response-token advantages, trainer logprobs and entropy, as the trainer writes them."""
    mask = t.response_loss_mask
    lps = t.sampling_logprobs()[t.prompt_length :]
    adv_value = round((t.reward.total if t.reward else 0.0) - 0.55, 6)
    return {
        "step": step,
        "advantages": [adv_value if m else 0.0 for m in mask],
        "trainer_logprobs": [
            round(lp + rng.gauss(0, 0.02), 6) if lp is not None else 0.0 for lp in lps
        ],
        "entropy": [round(abs(rng.gauss(1.0, 0.5)), 6) for _ in mask],
        "filtered": None,
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def make_eval_run(
    out: str | Path,
    n_examples: int = 12,
    samples: int = 2,
    seed: int = 0,
    accuracy: float = 0.5,
    vocab: ToyVocab | None = None,
    status: str = "done",
) -> Path:
    """An evaluation run directory: run.json, config.json, trajectories.jsonl, metrics.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    vocab = vocab or ToyVocab()
    trajs = []
    for i in range(n_examples):
        a, b = 10 + i, 3 + (i % 7)
        for k in range(samples):
            stop = "length" if (i + k) % 11 == 5 else "answer"
            spec = TrajSpec(
                f"ex{i:04d}",
                k,
                a,
                b,
                correct=rng.random() < accuracy,
                tool_error=(i + k) % 9 == 4,
                stop_reason=stop,
            )
            trajs.append(make_trajectory(spec, vocab, rng))
    write_jsonl(out / "trajectories.jsonl", trajs)
    n = len(trajs)
    correct = sum(1 for t in trajs if t.reward and t.reward.components["correct"] > 0)
    stops: dict[str, int] = {}
    for t in trajs:
        stops[t.stop_reason or "none"] = stops.get(t.stop_reason or "none", 0) + 1
    _write_json(
        out / "run.json",
        {
            "kind": "eval",
            "status": status,
            "created": _now(),
            "updated": _now(),
            "command": ["trajlab", "eval", "--out", str(out)],
            "trajlab_version": "0.1.0",
        },
    )
    _write_json(
        out / "config.json",
        {
            "model": "synthetic",
            "task": "toy-arith",
            "tools": ["python"],
            "protocol": "code_fence",
            "samples": samples,
        },
    )
    _write_json(
        out / "metrics.json",
        {
            "n": n,
            "accuracy": correct / n,
            "pass@k": {str(samples): min(1.0, correct / n * 1.5)},
            "tool_call_rate": sum(1 for t in trajs if t.tool_calls) / n,
            "tool_error_rate": sum(1 for t in trajs for c in t.tool_calls if not c.ok)
            / max(1, sum(len(t.tool_calls) for t in trajs)),
            "mean_tokens": sum(len(t.token_ids) for t in trajs) / n,
            "stop_reasons": {k: v / n for k, v in stops.items()},
            "wall_time_s": 1.5,
        },
    )
    (out / "summary.md").write_text(
        f"# Evaluation\n\naccuracy {correct / n:.3f} over {n} trajectories\n", encoding="utf-8"
    )
    return out


def make_train_run(
    out: str | Path,
    steps: int = 8,
    per_step: int = 6,
    seed: int = 0,
    collapse_tools: bool = True,
    eval_every: int = 4,
    with_tokenizer: bool = False,
) -> Path:
    """A training run: metrics.jsonl, trajectories/step_*.jsonl, eval/step_*/ sub-runs.

    With collapse_tools the tool-call rate falls to zero over the second half, so the
    tool_call_rate_collapse alarm fires; otherwise no alarm fires.
    """
    out = Path(out)
    (out / "trajectories").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    vocab = ToyVocab()
    rows = []
    for step in range(1, steps + 1):
        frac = (step - 1) / max(1, steps - 1)
        tool_p = 0.9 if not collapse_tools or frac < 0.5 else max(0.0, 0.9 - 1.8 * (frac - 0.5) * 2)
        acc_p = 0.3 + 0.4 * frac
        trajs = []
        for i in range(per_step):
            spec = TrajSpec(
                f"ex{(step * 3 + i // 2) % 20:04d}",
                i % 2,
                20 + (step * 3 + i // 2) % 20,  # the same example always asks the same question
                4 + (step * 3 + i // 2) % 7,
                correct=rng.random() < acc_p,
                use_tool=rng.random() < tool_p,
                tool_error=(step + i) % 7 == 3,
                stop_reason="length" if (step + i) % 13 == 0 else "answer",
                step=step,
            )
            trajs.append(make_trajectory(spec, vocab, rng))
        write_jsonl(out / "trajectories" / f"step_{step:06d}.jsonl", trajs)
        rows.append(_metrics_row(step, trajs, rng))
        if eval_every and step % eval_every == 0:
            make_eval_run(
                out / "eval" / f"step_{step:06d}",
                n_examples=4,
                samples=1,
                seed=seed + step,
                accuracy=0.3 + 0.1 * frac,
                vocab=vocab,
            )
    with open(out / "metrics.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    tok_dir = write_tokenizer(vocab, out / "tokenizer") if with_tokenizer else None
    _write_json(
        out / "run.json",
        {
            "kind": "train",
            "status": "done",
            "created": _now(),
            "updated": _now(),
            "command": ["trajlab", "train", "cfg.yaml", "--out", str(out)],
            "trajlab_version": "0.1.0",
        },
    )
    model_line = f"model: {tok_dir}\n" if tok_dir else "model: synthetic\n"
    (out / "config.yaml").write_text(
        model_line
        + "algo:\n  advantage: grpo\n  clip_low: 0.2\n  clip_high: 0.28\n"
        + f"rollout:\n  group_size: 2\n  batch: {per_step}\n",
        encoding="utf-8",
    )
    return out


def _metrics_row(step: int, trajs: list[Trajectory], rng: random.Random) -> dict[str, Any]:
    n = len(trajs)

    def frac(pred: Any) -> float:
        return sum(1 for t in trajs if pred(t)) / n

    lengths = [len(t.response_token_ids) for t in trajs]
    return {
        "step": step,
        "time": 12.0 * step,
        "reward/correct/mean": frac(lambda t: t.reward.components["correct"] > 0),
        "reward/correct/std": 0.4,
        "reward/format/mean": frac(lambda t: t.reward.components["format"] > 0) * 0.1,
        "reward/format/std": 0.02,
        "accuracy": frac(lambda t: t.reward.components["correct"] > 0),
        "tool_call_rate": frac(lambda t: bool(t.tool_calls)),
        "response_length/mean": sum(lengths) / n,
        "response_length/max": max(lengths),
        "entropy": 1.0 - 0.03 * step + rng.uniform(-0.01, 0.01),
        "kl": 0.001 * step,
        "clip_fraction": 0.02 + 0.005 * math.sin(step),
        "grad_norm": 0.5 + rng.random() * 0.1,
        "filtered/zero_variance": 0.25,
        "filtered/void_turn": 0.05,
        "stop_reason/length": frac(lambda t: t.stop_reason == "length"),
        "time/rollout": 8.0,
        "time/train": 3.5,
        "tokens_per_s": 420.0 + rng.uniform(-20, 20),
    }


# Debian's chromium as the browser tests and the viewer benchmark launch it: headless, and
# without background networking (this machine's closed network refuses those connections).
CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
