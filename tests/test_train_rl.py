"""The RL trainer on a tiny random model: masking, exact resumption, filters, overlays.

Everything runs in-process on trajlab.testing.make_tiny_model with short prompts
(data.prompt=question) and a scripted python tool, so each test takes seconds.
"""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
import torch
from train_helpers import python_42

from trajlab.agent.loop import AgentConfig, AgentLoop
from trajlab.engines.fake import FakeEngine
from trajlab.models import load_model
from trajlab.train.checkpoint import latest_checkpoint, list_checkpoints, save_checkpoint
from trajlab.train.config import load_train_config
from trajlab.train.rl import make_row, micro_loss, setup, train
from trajlab.types import Example, read_jsonl

EXAMPLES = [
    # supporting_titles: search recipes score retrieval recall (rewards/qa.py search_recall)
    Example(
        id=f"q{i}",
        question=f"What is {i} plus {i}?",
        answer=str(2 * i),
        meta={"supporting_titles": ["Paris"]},
    )
    for i in range(12)
]


def _cfg(model_dir, out, *extra):
    return load_train_config(
        None,
        [
            f"model.model={model_dir}",
            f"out={out}",
            "steps=2",
            "data.prompt=question",
            "rollout.prompts_per_step=2",
            "rollout.group_size=3",
            "agent.protocol=code",
            "agent.tools=[python]",
            "agent.max_turns=2",
            "agent.max_new_tokens_per_turn=8",
            "agent.max_new_tokens=24",
            "tool_plugins={python: 'train_helpers:python_42'}",
            # Rewards that vary within groups, so advantages are non-zero whatever the
            # engine samples (with the default bf16 decode copy the tiny model's samples
            # can all run to the length cap, which a length-shaped reward alone cannot see).
            "length.soft_budget=2",
            "reward.weights={math_correct: 1.0, 'train_helpers:token_variety_reward': 1.0}",
            "optim.lr=1e-3",
            "log.progress=false",
            "log.plots=false",
            "log.checkpoint_every=1",
            "log.keep_checkpoints=0",
            *extra,
        ],
    )


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# -- tool output never trained ---------------------------------------------------------


def test_tool_output_tokens_get_exactly_zero_gradient(tiny_model_dir, tmp_path):
    """Through the trainer's own loss path (collate -> token_logprobs -> policy_loss)."""
    cfg = _cfg(
        tiny_model_dir, tmp_path / "run", "algo.entropy_coef=0.01", "algo.kl=k3", "algo.kl_coef=0.1"
    )
    model = load_model(tiny_model_dir)
    from trajlab.models import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    engine = FakeEngine(
        tok, ["Let me run it.\n```python\nprint(6*7)\n```\n", "So \\boxed{42}."], model=model
    )
    loop = AgentLoop(
        engine,
        {"python": python_42()},
        AgentConfig(protocol="code", tools=["python"]),
        prompt_builder=lambda ex: [{"role": "user", "content": ex.question}],
    )
    traj = loop.run([(EXAMPLES[0], 0)])[0]
    sources = [s.source for s in traj.segments]
    assert "tool" in sources and "template" in sources  # the observation is in the ledger

    class _Run:  # the few attributes micro_loss reads
        config = cfg
        pad_id = tok.pad_token_id
        model = None
        loss_cfg = None

        def autocast(self):
            import contextlib

            return contextlib.nullcontext()

    run = _Run()
    run.model = model
    from trajlab.algos.losses import PolicyLossConfig
    from trajlab.train.rl import setup as _setup  # noqa: F401  (documents where loss_cfg is built)

    run.loss_cfg = PolicyLossConfig(
        kl_estimator="none", entropy_coef=0.01, tis_cap=2.0, clip_low=0.2, clip_high=0.28
    )
    row = make_row(traj)
    model.zero_grad()
    out, lp = micro_loss(run, [row], torch.tensor([1.5]), float(row.loss_mask.sum()))
    lp.retain_grad()
    out.loss.backward()
    grad = lp.grad[0]  # [T]
    mask = torch.tensor(traj.loss_mask, dtype=torch.bool)
    assert torch.all(grad[~mask] == 0), (
        "prompt/template/tool positions must get exactly zero gradient"
    )
    assert torch.any(grad[mask] != 0), "model tokens must be trained"
    # and the tool tokens are exactly the tool segment's positions
    pos = 0
    for s in traj.segments:
        if s.source == "tool":
            assert torch.all(grad[pos : pos + len(s)] == 0)
        pos += len(s)


# -- exact resumption ------------------------------------------------------------------


def test_resume_is_bit_identical_to_an_uninterrupted_run(tiny_model_dir, tmp_path):
    a = train(
        _cfg(tiny_model_dir, tmp_path / "a", "steps=4", "algo.epochs=2", "algo.mini_batches=2"),
        examples=EXAMPLES,
    )
    # b: killed right after the checkpoint of step 2 (plus junk a killed step 3 left behind)
    cfg_b = _cfg(tiny_model_dir, tmp_path / "b", "steps=4", "algo.epochs=2", "algo.mini_batches=2")
    train(cfg_b, examples=EXAMPLES, stop_after=2)
    (tmp_path / "b" / "trajectories" / "step_000003.jsonl").write_text('{"torn": ')
    with open(tmp_path / "b" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 3, "junk": True}) + "\n")
    (tmp_path / "b" / "checkpoints" / ".tmp-step_000003-x").mkdir()  # a half-written checkpoint
    b = train(cfg_b, examples=EXAMPLES)
    assert a["step"] == b["step"] == 4

    from trajlab.train.checkpoint import load_weights

    ma, mb = load_model(tiny_model_dir), load_model(tiny_model_dir)
    load_weights(latest_checkpoint(tmp_path / "a" / "checkpoints"), ma)
    load_weights(latest_checkpoint(tmp_path / "b" / "checkpoints"), mb)
    pa, pb = _params(ma), _params(mb)
    assert pa.keys() == pb.keys()
    for k in pa:
        assert torch.equal(pa[k], pb[k]), f"parameter {k} differs after resume"
    assert not torch.equal(
        pa["model.embed_tokens.weight"],
        _params(load_model(tiny_model_dir))["model.embed_tokens.weight"],
    )
    for step in (3, 4):  # the batches after the interruption are the same prompts and tokens
        ta = read_jsonl(tmp_path / "a" / "trajectories" / f"step_00000{step}.jsonl")
        tb = read_jsonl(tmp_path / "b" / "trajectories" / f"step_00000{step}.jsonl")
        assert [t.example_id for t in ta] == [t.example_id for t in tb]
        assert [t.token_ids for t in ta] == [t.token_ids for t in tb]
    rows = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and not any("junk" in r for r in rows)


def test_resume_refuses_a_different_config(tiny_model_dir, tmp_path):
    from trajlab.config import ConfigError

    train(_cfg(tiny_model_dir, tmp_path / "r", "steps=1"), examples=EXAMPLES)
    with pytest.raises(ConfigError, match="algo"):
        setup(
            _cfg(tiny_model_dir, tmp_path / "r", "steps=2", "algo.advantage=rloo"),
            EXAMPLES,
            None,
            None,
            None,
            [],
        )


def test_checkpoint_is_atomic_and_pruned(tiny_model_dir, tmp_path):
    model = load_model(tiny_model_dir)
    root = tmp_path / "ck"
    for s in (1, 2, 3):
        save_checkpoint(root, s, model, None, None, {"sampler": {}}, keep=2)
    (root / ".tmp-step_000009-abc").mkdir()
    (root / "step_000010").mkdir()  # no trainer_state.json: incomplete, ignored
    assert [p.name for p in list_checkpoints(root)] == ["step_000002", "step_000003"]
    assert latest_checkpoint(root).name == "step_000003"


def test_lora_checkpoint_roundtrip_and_kl_reference(tiny_model_dir, tmp_path):
    pytest.importorskip("peft")
    r = train(
        _cfg(
            tiny_model_dir,
            tmp_path / "lora",
            "model.lora=true",
            "model.lora_r=4",
            "model.lora_targets=[q_proj, v_proj]",
            "algo.kl=k3",
            "algo.kl_coef=0.05",
        ),
        examples=EXAMPLES,
    )
    assert (
        tmp_path / "lora" / "checkpoints" / "step_000002" / "adapter" / "adapter_model.safetensors"
    ).is_file()
    assert r["kl"] >= 0.0 and "kl_loss" in r


# -- filters and overlays --------------------------------------------------------------


def test_zero_variance_filter_trains_on_what_it_has_and_logs_shortfall(tiny_model_dir, tmp_path):
    """Scripted identical answers: every group has zero reward variance; over-sampling runs
    out of budget; the step completes without an update and says so."""
    out = tmp_path / "zv"
    cfg = _cfg(
        tiny_model_dir,
        out,
        "steps=1",
        "length.soft_budget=0",
        "filters.zero_variance=true",
        "filters.max_rounds=2",
        "rollout.engine=fake",
        "rollout.fake_responses=['The answer is \\boxed{3}.']",
    )
    before = _params(load_model(tiny_model_dir))
    r = train(cfg, examples=EXAMPLES)
    assert r["dynamic_sampling/rounds"] == 2 and r["dynamic_sampling/shortfall"] == 2
    assert r["filtered/zero_variance"] == 1.0 and r["optimizer_steps"] == 0
    trajs = read_jsonl(out / "trajectories" / "step_000001.jsonl")
    assert len(trajs) == 2 * 2 * 3  # two rounds of 2 prompts x 3 samples, all saved
    assert all(t.metadata["train"]["filtered"] == "zero_variance" for t in trajs)
    from trajlab.train.checkpoint import load_weights

    m = load_model(tiny_model_dir)
    load_weights(out / "checkpoints" / "step_000001", m)
    assert all(torch.equal(v, before[k]) for k, v in _params(m).items())


def test_overlays_and_void_turn_filter(tiny_model_dir, tmp_path):
    """A void turn (no code, no answer) gets zero loss but its group still trains."""
    out = tmp_path / "void"
    cfg = _cfg(
        tiny_model_dir,
        out,
        "steps=1",
        "filters.void_turn=true",
        "rollout.engine=fake",
        "rollout.fake_responses=['hmm', '```python\\nprint(1)\\n```\\n', 'So \\boxed{2}.']",
    )
    r = train(cfg, examples=EXAMPLES)
    trajs = read_jsonl(out / "trajectories" / "step_000001.jsonl")
    void = [t for t in trajs if t.metadata["void_turns"] > 0]
    assert void and r["filtered/void_turn"] == len(void) / len(trajs)
    for t in trajs:
        o = t.metadata["train"]
        n = len(t.response_token_ids)
        assert o["step"] == 1 and len(o["advantages"]) == n
        for a, m in zip(o["advantages"], t.response_loss_mask):
            assert m or a == 0.0  # tool/template tokens carry no advantage
        if t in void:
            assert o["filtered"] == "void_turn" and not any(o["advantages"])
            # zero loss: never forwarded, so no trainer logprobs (update_policy)
            assert o["forwarded"] is False and "trainer_logprobs" not in o
        elif any(o["advantages"]):
            assert o["forwarded"] is True
            assert len(o["trainer_logprobs"]) == n and len(o["entropy"]) == n
    assert r["optimizer_steps"] >= 1 and r["grad_norm"] > 0


@pytest.mark.smoke
def test_every_recipe_runs_one_step(tiny_model_dir, tmp_path):
    """Each configs/*.yaml, shrunk to the tiny model, runs a step end to end."""
    from pathlib import Path

    for path in sorted((Path(__file__).parent.parent / "configs").glob("*.yaml")):
        cfg = load_train_config(
            path,
            [
                f"model.model={tiny_model_dir}",
                f"out={tmp_path / path.stem}",
                "steps=1",
                "data.prompt=question",
                "rollout.prompts_per_step=2",
                "rollout.group_size=2",
                "agent.max_new_tokens_per_turn=6",
                "agent.max_new_tokens=16",
                "agent.max_turns=2",
                "tool_plugins={python: 'train_helpers:python_42', search: 'train_helpers:search_paris'}",
                "eval.every=0",
                "log.progress=false",
                "log.plots=false",
                "filters.max_rounds=1",
                "filters.overlong_buffer=4",
                "length.soft_budget=2",
                "algo.norm_length=16",
            ],
        )
        r = train(cfg, examples=EXAMPLES)
        assert r["step"] == 1, path.name
        assert all(v == v for v in r.values() if isinstance(v, float)), (
            f"{path.name}: NaN in metrics"
        )


# -- rows without a learning signal ----------------------------------------------------


def test_zero_advantage_rows_are_skipped_without_changing_the_update(
    tiny_model_dir, tmp_path, monkeypatch
):
    """A zero-variance group's rows (advantage 0, no KL or entropy term) give exactly zero
    gradient, so not forwarding them leaves the gradient of the update as it was (up to
    float summation order; fp32 so that batch shapes do not change the kernels)."""
    import trajlab.train.rl as rl

    def grads_once(out, keep_all: bool):
        if keep_all:
            monkeypatch.setattr(
                rl, "rows_with_signal", lambda rows, adv, only: list(range(len(rows)))
            )
        else:
            monkeypatch.undo()
        cfg = _cfg(tiny_model_dir, out, "steps=1", "algo.micro_batch_size=2", "optim.autocast=none")
        run = setup(cfg, EXAMPLES, None, None, None, ["test"])
        trajs, _, _, _ = rl.collect_batch(run, 1, defaultdict(float))
        rows = [make_row(t) for t in trajs]
        seen = {}
        step = run.optimizer.step

        def capture(*a, **kw):
            for name, p in run.model.named_parameters():
                seen[name] = p.grad.detach().clone()
            return step(*a, **kw)

        run.optimizer.step = capture
        adv = torch.tensor([0.0, 0.0, 0.0, 1.0, -0.5, -0.5])  # group 1 has no signal
        stats = rl.update_policy(run, 1, rows, adv)
        rl.finish(run, "done")
        return seen, stats

    skipped, s1 = grads_once(tmp_path / "a", keep_all=False)
    full, s2 = grads_once(tmp_path / "b", keep_all=True)
    assert s1["update/forwarded_rows"] == 3 and s2["update/forwarded_rows"] == 6
    assert s1["optimizer_steps"] == s2["optimizer_steps"] == 1
    assert any(float(g.abs().max()) > 0 for g in full.values())
    for k in full:
        assert torch.allclose(skipped[k], full[k], atol=1e-7, rtol=1e-5), k


def test_a_batch_with_no_signal_takes_no_optimizer_step(tiny_model_dir, tmp_path):
    import trajlab.train.rl as rl

    cfg = _cfg(tiny_model_dir, tmp_path / "z", "steps=1", "optim.weight_decay=0.1")
    run = setup(cfg, EXAMPLES, None, None, None, ["test"])
    trajs, _, _, _ = rl.collect_batch(run, 1, defaultdict(float))
    before = _params(run.model)
    stats = rl.update_policy(run, 1, [make_row(t) for t in trajs], torch.zeros(len(trajs)))
    rl.finish(run, "done")
    assert stats["update/skipped"] == 1.0 and stats["optimizer_steps"] == 0
    # weight decay and AdamW momentum would have moved the weights of a zero-gradient step
    assert all(torch.equal(v, before[k]) for k, v in _params(run.model).items())


def test_step_metrics_report_learning_diagnostics(tiny_model_dir, tmp_path):
    cfg = _cfg(
        tiny_model_dir,
        tmp_path / "d",
        "steps=1",
        "rollout.engine=fake",  # scripted, with the tiny model's real logprobs
        "rollout.fake_responses=['So \\boxed{2}.', 'hmm, no idea at all']",
        "optim.autocast=none",  # the trainer in fp32, like the fake engine's logprobs
    )
    r = train(cfg, examples=EXAMPLES)
    for key in (
        "groups/zero_variance",
        "mismatch/abs_logprob",
        "mismatch/kl_k3",
        "mismatch/ratio_outside",
        "grad_norm",
        "entropy",
        "tool_call_rate",
        "tool_error_rate",
        "stop_reason/length",
        "update/skipped",
    ):
        assert key in r, key
    assert 0.0 <= r["groups/zero_variance"] <= 1.0
    assert r["update/skipped"] == 0.0 and r["update/forwarded_rows"] > 0
    # the fake engine's logprobs are the tiny model's own: sampler and trainer agree
    assert r["mismatch/kl_k3"] == pytest.approx(0.0, abs=1e-6)
    assert r["mismatch/ratio_outside"] == 0.0
