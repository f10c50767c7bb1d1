"""Train/SFT configs: every shipped recipe loads and validates; bad fields name the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from trajlab.config import ConfigError
from trajlab.train.config import TrainConfig, load_sft_config, load_train_config

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def test_configs_exist():
    names = {p.stem for p in CONFIGS}
    assert {
        "quickstart",
        "grpo",
        "dr_grpo",
        "cir",
        "torl",
        "simpletir",
        "thinkprune",
        "gspo",
    } <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_config_loads(path):
    cfg = load_train_config(path)
    assert isinstance(cfg, TrainConfig)
    assert cfg.reward.weights


def test_scientific_notation_and_overrides():
    cfg = load_train_config(
        None, ["optim.lr=1e-6", "algo.kl=k3", "algo.kl_coef=1e-3", "rollout.group_size=4"]
    )
    assert cfg.optim.lr == 1e-6 and cfg.algo.kl_coef == 1e-3 and cfg.rollout.group_size == 4


def test_bad_key_names_field_and_suggestion():
    with pytest.raises(ConfigError, match=r"advantag.*Did you mean .*advantage"):
        load_train_config(None, ["algo.advantag=grpo"])


def test_bad_choice_lists_choices():
    with pytest.raises(ConfigError, match=r"algo\.advantage.*grpo.*dr_grpo"):
        load_train_config(None, ["algo.advantage=ppo"])
    with pytest.raises(ConfigError, match=r"filters\.overlong.*none, filter, penalty"):
        load_train_config(None, ["filters.overlong=cut"])


def test_cross_field_rules():
    with pytest.raises(ConfigError, match="kl_coef > 0"):
        load_train_config(None, ["algo.kl=k3"])
    with pytest.raises(ConfigError, match="strictly shrinking"):
        load_train_config(None, ["length.limits=[100, 200]", "length.starts=[0, 5]"])
    with pytest.raises(ConfigError, match="one start step per limit"):
        load_train_config(None, ["length.limits=[200, 100]"])


def test_sft_config():
    cfg = load_sft_config(None, ["data=[a.jsonl]", "optim.lr=5e-5"])
    assert cfg.data == ["a.jsonl"] and cfg.optim.lr == 5e-5


def test_task_options_reach_the_generator_and_bad_ones_name_the_field():
    from trajlab.train.rl import load_examples

    cfg = load_train_config(None, ["data.options={word_prob: 1.0}", "data.size=20"])
    exs = load_examples(cfg.data.task, cfg.data.split, cfg.data.size, 0, **cfg.data.options)
    assert len(exs) == 20 and all(e.meta["style"].startswith("word") for e in exs)
    with pytest.raises(ValueError, match="unknown option.*word_probability"):
        load_examples("arith", "train", 5, 0, word_probability=1.0)
