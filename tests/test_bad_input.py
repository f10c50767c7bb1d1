"""Bad input through the real CLI (`trajlab.cli.main`, in process): every class of mistake a
new user makes gets exit code 2 and a message that names the problem and the fix, found
before a model loads or a run directory is written; nothing computed earlier is lost.

Each test drives the command line exactly as a user types it. `no_model` makes loading a
model fail the test, so "checked before the model loads" is asserted, not assumed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import trajlab.models
from trajlab.cli import COMMANDS, build_parser, main

pytestmark = pytest.mark.smoke


@pytest.fixture
def no_model(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was reported")

    monkeypatch.setattr(trajlab.models, "load_model", refuse)
    monkeypatch.setattr(trajlab.models, "load_tokenizer", refuse)


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    """(exit code, stderr + stdout) of `trajlab ARGV...`; argparse's exits count too."""
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = int(e.code or 0)
    captured = capsys.readouterr()
    return code, captured.err + captured.out


def write_task(path: Path, rows: int = 2) -> Path:
    path.write_text(
        "".join(
            json.dumps({"id": i, "question": f"{i} + 1?", "answer": i + 1}) + "\n"
            for i in range(rows)
        )
    )
    return path


def eval_args(model: Path, out: Path, *more: str) -> list[str]:
    return ["eval", "--model", str(model), "--task", "arith", "--limit", "2", "--out", str(out),
            "--max-new-tokens", "8", "--max-new-tokens-per-turn", "8", "--no-progress", *more]  # fmt: skip


# -- config values: named field, bad value, valid range, before the model loads -------------

EVAL_VALUES = [
    (["--temperature", "-0.5"], ["temperature", "-0.5", "0 is greedy"]),
    (["--temperature", "nan"], ["temperature", "nan"]),
    (["--top-p", "0"], ["top_p", "(0, 1]"]),
    (["--top-k", "-1"], ["top_k", ">= 0"]),
    (["--limit", "-2"], ["limit", "-2", "0 evaluates all"]),
    (["-n", "0"], ["n must be >= 1"]),
    (["--batch-size", "0"], ["batch_size"]),
    (["--max-turns", "0"], ["max_turns", ">= 1"]),
    (["--observation-max-chars", "-1"], ["observation_max_chars", ">= 0"]),
    (["--dtype", "float16"], ["--dtype", "invalid choice", "float32"]),
    (["agent.max_turnz=2"], ["agent.max_turnz", "Did you mean 'agent.max_turns'"]),
    (["--limit", "two"], ["--limit", "invalid int"]),
]


@pytest.mark.parametrize("bad, words", EVAL_VALUES, ids=[" ".join(b) for b, _ in EVAL_VALUES])
def test_eval_value_errors_name_the_field(bad, words, tiny_model_dir, tmp_path, capsys, no_model):
    out = tmp_path / "run"
    code, text = run_cli(capsys, *eval_args(tiny_model_dir, out, *bad))
    assert code == 2, text
    for w in words:
        assert w in text, (w, text)
    assert not out.exists()  # nothing written
    assert "Traceback" not in text


TRAIN_VALUES = [
    (["rollout.group_size=0"], ["rollout.group_size must be >= 1, got 0"]),
    (["rollout.prompts_per_step=0"], ["rollout.prompts_per_step"]),
    (["optim.lr=-1e-6"], ["optim.lr", "-1e-06", "1e-6"]),
    (["optim.beta2=1.5"], ["optim.beta2", "[0, 1)"]),
    (["rollout.temperature=-1"], ["temperature must be >= 0"]),
    (["eval.temperature=-0.1"], ["temperature must be >= 0"]),
    (["steps=abc"], ["steps", "expected an integer", "'abc'"]),
    (["optim.lrr=1"], ["'optim.lrr'", "Did you mean 'optim.lr'"]),
    (["algo.advantage=ppo2"], ["algo.advantage", "'ppo2'", "grpo"]),
    (["log.checkpoint_every=0"], ["log.checkpoint_every"]),
    (["data.eval_size=0"], ["data.eval_size"]),
    (["reward.weights={math_corect: 1.0}"], ["unknown reward 'math_corect'", "math_correct"]),
    (["agent.tools=[pyton]"], ["unknown tool 'pyton'", "Did you mean 'python'"]),
    (["agent.tools=[search]"], ["agent.protocol", "'code'", "search_r1"]),
    (["agent.tools=[search]", "agent.protocol=search_r1"], ["tools.search", "trajlab index"]),
    (["tool_plugins={python: 'no_such_module:make'}"], ["tool_plugins.python", "module:factory"]),
    (["data.prompt=no_such_template"], ["no_such_template"]),
    (["data.task=no_such_task"], ["unknown task 'no_such_task'", "jsonl"]),
]


@pytest.mark.parametrize("bad, words", TRAIN_VALUES, ids=[" ".join(b) for b, _ in TRAIN_VALUES])
def test_train_errors_come_before_the_model(bad, words, tiny_model_dir, tmp_path, capsys, no_model):
    out = tmp_path / "run"
    code, text = run_cli(capsys, "train", f"model.model={tiny_model_dir}", f"out={out}", *bad)
    assert code == 2, text
    for w in words:
        assert w in text, (w, text)
    assert not out.exists()
    assert "Traceback" not in text


def test_zero_lr_is_a_warning_not_an_error(tiny_model_dir, tmp_path, capsys, no_model):
    with pytest.warns(UserWarning, match="optim.lr is 0"):
        code, text = run_cli(capsys, "train", "optim.lr=0", "--print-config")
    assert code == 0 and "lr: 0" in text


# -- model paths -------------------------------------------------------------------------


def _model_without(tmp_path: Path, tiny_model_dir: Path, *drop: str) -> Path:
    d = tmp_path / ("model_without_" + "_".join(p.split(".")[0] for p in drop))
    d.mkdir()
    for f in Path(tiny_model_dir).iterdir():
        if not any(f.name.startswith(x) for x in drop):
            (d / f.name).write_bytes(f.read_bytes())
    return d


@pytest.mark.parametrize(
    "drop, words",
    [
        (("tokenizer",), ["model: ", "no tokenizer", "save_pretrained"]),
        (("model.safetensors",), ["model: ", "no weights", "save_pretrained"]),
        (("config.json",), ["model: ", "no config.json"]),
    ],
)
def test_incomplete_model_directory(drop, words, tiny_model_dir, tmp_path, capsys, no_model):
    model = _model_without(tmp_path, tiny_model_dir, *drop)
    code, text = run_cli(capsys, *eval_args(model, tmp_path / "run"))
    assert code == 2
    for w in words:
        assert w in text, (w, text)
    assert "sentencepiece" not in text and not (tmp_path / "run").exists()


@pytest.mark.parametrize("spec, words", [
    ("no/such-model", ["does not exist", "never downloads", "huggingface-cli download"]),
    ("weights.bin", ["not a .gguf file"]),
])  # fmt: skip
def test_model_spec_that_is_no_model(spec, words, tmp_path, capsys, no_model, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("weights.bin").write_bytes(b"\0" * 16)
    code, text = run_cli(capsys, "train", f"model.model={spec}", "out=run")
    assert code == 2 and "model.model: " in text, text
    for w in words:
        assert w in text, (w, text)
    assert not Path("run").exists()


# -- task files ----------------------------------------------------------------------------


def _task_file(tmp_path: Path, kind: str) -> Path:
    p = tmp_path / f"{kind}.jsonl"
    good = json.dumps({"id": 0, "question": "1 + 1?", "answer": 2}) + "\n"
    content = {
        "empty": b"",
        "blank": b"\n  \n",
        "latin1": good.encode()
        + '{"id": 1, "question": "caf\xe9?", "answer": 1}\n'.encode("latin-1"),
        "bad_json": good.encode() + b'{"id": 1, "question": \n',
        "huge_row": good.encode()
        + b'{"id": 1, "question": "'
        + b"x" * (2 << 20)
        + b'", "answer": 1}\n',
        "huge_question": good.encode()
        + json.dumps({"id": 1, "question": "y" * 70_000, "answer": 1}).encode()
        + b"\n",
        "no_answer": good.encode() + b'{"id": 1, "question": "2 + 2?"}\n',
    }[kind]
    p.write_bytes(content)
    return p


TASK_FILES = [
    ("empty", ["has no rows", "one JSON object per line"]),
    ("blank", ["has no rows"]),
    ("latin1", [":2: not UTF-8", "0xe9", "iconv"]),
    ("bad_json", [":2: not valid JSON"]),
    ("huge_row", [":2: row longer than 1048576 bytes", "max_row_bytes"]),
    ("huge_question", [":2: question of 70000 characters", "max_question_chars"]),
    ("no_answer", [":2: no reference"]),
]


@pytest.mark.parametrize("kind, words", TASK_FILES, ids=[k for k, _ in TASK_FILES])
def test_bad_task_file(kind, words, tiny_model_dir, tmp_path, capsys, no_model):
    task = _task_file(tmp_path, kind)
    out = tmp_path / "run"
    argv = eval_args(tiny_model_dir, out)
    argv[argv.index("arith")] = str(task)
    code, text = run_cli(capsys, *argv)
    assert code == 2, text
    assert str(task) in text
    for w in words:
        assert w in text, (w, text)
    assert not out.exists()


def test_task_row_limits_can_be_raised(tmp_path):
    from trajlab.tasks import load_task

    task = _task_file(tmp_path, "huge_question")
    assert len(load_task(str(task), max_question_chars=100_000)) == 2


def test_a_huge_row_is_never_read_whole(tmp_path):
    """A 64 MiB line costs a bounded amount of memory: rows are read in pieces."""
    import resource

    task = tmp_path / "huge.jsonl"
    with open(task, "wb") as f:
        f.write(b'{"id": 1, "question": "' + b"z" * (64 << 20) + b'", "answer": 1}\n')
        f.write(json.dumps({"id": 2, "question": "1 + 1?", "answer": 2}).encode() + b"\n")
    probe = (
        "import resource, sys\n"
        "from trajlab.tasks import load_task\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"ex = load_task({str(task)!r}, on_error='skip')\n"
        "grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before\n"
        "print(len(ex), grown)\n"
    )
    cp = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert cp.returncode == 0, cp.stderr
    kept, grown_kib = map(int, cp.stdout.split())
    assert kept == 1
    assert grown_kib < 16 * 1024, f"reading a 64 MiB row grew the process by {grown_kib} KiB"
    del resource


# -- run directories -----------------------------------------------------------------------


def test_a_failed_start_never_blocks_the_corrected_command(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    broken = eval_args(tiny_model_dir, out, "tool_plugins={python: 'train_helpers:broken_tool'}")
    with pytest.raises(RuntimeError, match="backend is down"):
        main(broken)  # fails after the model loaded and the directory was written
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "failed" and "backend is down" in info["error"]
    capsys.readouterr()
    code, text = run_cli(capsys, *eval_args(tiny_model_dir, out, "--tools", "none"))
    assert code == 0, text
    assert "replacing the run" in text and "status failed" in text
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "done" and "error" not in info
    assert len((out / "trajectories.jsonl").read_text().splitlines()) == 2


def test_runs_of_another_kind_are_never_written_into(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "eval_run"
    assert run_cli(capsys, *eval_args(tiny_model_dir, out, "--tools", "none"))[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    for argv in (
        ["train", f"model.model={tiny_model_dir}", f"out={out}"],
        ["sft", "--data", str(out / "trajectories.jsonl"), "--model", str(tiny_model_dir),
         "--out", str(out), "--all"],
    ):  # fmt: skip
        code, text = run_cli(capsys, *argv)
        assert code == 2 and "holds an eval run" in text and "another --out" in text, text
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    other = tmp_path / "not_a_run"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    code, text = run_cli(capsys, *eval_args(tiny_model_dir, other))
    assert code == 2 and "not a trajlab run directory" in text
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_resume_mismatch_names_each_changed_key(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(capsys, *eval_args(tiny_model_dir, out, "--tools", "none"))[0] == 0
    before = (out / "trajectories.jsonl").read_bytes()
    code, text = run_cli(
        capsys,
        *eval_args(tiny_model_dir, out, "--tools", "none", "--max-turns", "2", "--seed", "3"),
    )
    assert code == 2
    assert "agent.max_turns: 4 -> 2" in text and "seed: 0 -> 3" in text, text
    assert "{" not in text.split("config:")[1]  # keys, not whole sections
    assert (out / "trajectories.jsonl").read_bytes() == before


def test_a_run_in_use_by_a_live_process_is_refused(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(capsys, *eval_args(tiny_model_dir, out, "--tools", "none"))[0] == 0
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        info = json.loads((out / "run.json").read_text())
        info.update(status="running", pid=other.pid)
        (out / "run.json").write_text(json.dumps(info))
        code, text = run_cli(capsys, *eval_args(tiny_model_dir, out, "--tools", "none"))
        assert code == 2 and f"pid {other.pid}" in text, text
    finally:
        other.kill()
        other.wait()
    time.sleep(0.1)
    code, text = run_cli(capsys, *eval_args(tiny_model_dir, out, "--tools", "none"))
    assert code == 0, text  # a dead writer's run resumes


# -- sft -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def eval_trajectories(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft_src") / "run"
    assert main(eval_args(tiny_model_dir, out, "--tools", "none")) == 0
    return out / "trajectories.jsonl"


def test_sft_refuses_trajectories_of_another_tokenizer(eval_trajectories, tmp_path, capsys):
    from trajlab.testing import make_tiny_model

    other = make_tiny_model(tmp_path / "other", vocab_size=600)
    out = tmp_path / "sft"
    code, text = run_cli(capsys, "sft", "--data", str(eval_trajectories), "--model", str(other),
                         "--out", str(out), "--all")  # fmt: skip
    assert code == 2 and "another tokenizer" in text and "fingerprint" in text, text
    assert not out.exists()


def test_sft_checks_unmarked_trajectories_by_decoding(eval_trajectories, tmp_path, capsys):
    """Older trajectories carry no fingerprint: their ids must decode to their text."""
    from trajlab.testing import make_tiny_model

    lines = []
    for line in eval_trajectories.read_text().splitlines():
        d = json.loads(line)
        d["metadata"].pop("tokenizer")
        for s in d["segments"]:
            if s["source"] == "model":
                s["text"] = "text these ids never decode to " + s["text"]
        lines.append(json.dumps(d))
    data = tmp_path / "old.jsonl"
    data.write_text("\n".join(lines) + "\n")
    other = make_tiny_model(tmp_path / "other", vocab_size=520)
    code, text = run_cli(capsys, "sft", "--data", str(data), "--model", str(other), "--all")
    assert code == 2 and "do not decode to their text" in text, text


def test_sft_with_nothing_correct_names_the_flag(
    eval_trajectories, tiny_model_dir, tmp_path, capsys
):
    code, text = run_cli(capsys, "sft", "--data", str(eval_trajectories), "--model",
                         str(tiny_model_dir), "--out", str(tmp_path / "sft"))  # fmt: skip
    assert code == 2 and "--all" in text and "not scored correct" in text, text
    assert not (tmp_path / "sft").exists()


def test_sft_of_task_rows_says_what_it_wants(tiny_model_dir, tmp_path, capsys):
    task = write_task(tmp_path / "task.jsonl")
    code, text = run_cli(capsys, "sft", "--data", str(task), "--model", str(tiny_model_dir))
    assert code == 2 and "task.jsonl:1: not a trajectory record" in text, text


def test_trajectories_record_reference_and_tokenizer(eval_trajectories, tiny_model_dir):
    from trajlab.models import load_tokenizer, tokenizer_fingerprint

    md = json.loads(eval_trajectories.read_text().splitlines()[0])["metadata"]
    assert md["reference"] not in (None, "", [])
    assert md["tokenizer"] == tokenizer_fingerprint(load_tokenizer(tiny_model_dir))


# -- defaults and help ---------------------------------------------------------------------


def test_train_without_a_recipe_prints_the_plan(tmp_path, capsys, no_model, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, text = run_cli(capsys, "train")
    assert code == 0
    assert "nothing was started" in text and "--print-config" in text and "out=" in text
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "--limit", "1", "agent.max_turns=2", "--out", "x", "tools.python.timeout_s=3"],
        ["train", "--steps", "2", "optim.lr=1e-5", "--print-config", "seed=3"],
        ["train", "steps=2", "--out", "y", "optim.lr=2e-6"],
        ["sft", "--data", "a.jsonl", "epochs=2", "--lora", "optim.lr=1e-5"],
    ],
)
def test_overrides_are_accepted_anywhere(argv):
    from trajlab.cli import parse

    _, args = parse(argv)
    assert [a for a in argv if "=" in a] == [o for o in args.overrides if "=" in o]


def test_every_flag_has_help_and_shows_its_default_once():
    for name in COMMANDS:
        parser = build_parser(only=name)
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        for action in sub.choices[name]._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            text = action.help or ""
            assert text, f"trajlab {name} {action.option_strings or action.dest} has no help"
            assert text.lower().count("(default") <= 1 and "(default: )" not in text, text
        flags = [s for a in sub.choices[name]._actions for s in a.option_strings]
        assert len(flags) == len(set(flags))


def test_no_deprecation_warnings_from_our_calls(tiny_model_dir, tmp_path):
    probe = (
        "import warnings\nwarnings.simplefilter('error', FutureWarning)\n"
        "warnings.simplefilter('error', DeprecationWarning)\n"
        "from trajlab.cli import main\n"
        f"raise SystemExit(main({eval_args(tiny_model_dir, tmp_path / 'run', '--tools', 'none')!r}))\n"
    )
    env = {**os.environ, "PYTHONWARNINGS": "error::FutureWarning"}
    cp = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=300
    )
    assert cp.returncode == 0, cp.stderr[-3000:]
    assert "deprecated" not in cp.stderr


def test_viewer_decodes_runs_of_default_and_gguf_models(tiny_model_dir, tmp_path, monkeypatch):
    """`--tokenizer default` (or a run whose config says model: default / a .gguf file)
    decodes with the converted copy the model was loaded from."""
    from trajlab.models import gguf_cache_path
    from trajlab.viewer import runs

    monkeypatch.setenv("TRAJLAB_HOME", str(tmp_path / "home"))
    runs._converted_model_dir.cache_clear()
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    entry = gguf_cache_path(gguf)
    entry.mkdir(parents=True)
    for f in Path(tiny_model_dir).glob("tokenizer*"):
        (entry / f.name).write_bytes(f.read_bytes())
    monkeypatch.setattr(trajlab.models, "find_default_gguf", lambda: gguf)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"model": str(gguf)}))
    (run_dir / "run.json").write_text(json.dumps({"kind": "eval"}))
    (run_dir / "trajectories.jsonl").write_text("")
    (run,) = runs.discover([str(run_dir)])
    assert runs.tokenizer_dir(run) == entry
    assert runs.tokenizer_dir(run, "default") == entry
    assert (
        runs.decode_pieces(entry, [5, 6]) and runs.tokenizer_dir(run, str(tmp_path / "x")) == entry
    )
    runs._converted_model_dir.cache_clear()


def test_trajectory_lines_leave_out_default_loss_masks():
    """A long prompt's all-zero mask is not written out; reading the line rebuilds it, and a
    model segment with masked tokens keeps its mask."""
    from trajlab.types import Segment, Trajectory

    t = Trajectory(
        example_id="q",
        segments=[
            Segment("prompt", list(range(5000)), "p"),
            Segment("model", [1, 2, 3], "abc", logprobs=[-0.1, -0.2, -0.3]),
            Segment("tool", [4, 5], "out"),
            Segment("model", [6, 7], "de", logprobs=[-0.1, -0.1], loss_mask=[1, 0]),
        ],
    )
    line = t.to_json()
    stored = json.loads(line)["segments"]
    assert ["loss_mask" in s for s in stored] == [False, False, False, True]
    back = Trajectory.from_json(line)
    assert back == t and back.loss_mask == t.loss_mask
    assert len(line) < len(json.dumps(t.to_dict())) * 0.7
