"""Typed configuration of `trajlab train` and `trajlab sft`, one dataclass per concern.

    config = load_train_config("configs/grpo.yaml", ["optim.lr=1e-5", "steps=20"])

Every field is declared with `opt(default, help, choices=)`, so the YAML keys, the
`key=value` overrides and `--help` all derive from these classes, and a bad key or value
fails at load time naming the field and the valid choices (trajlab.config.from_dict).
Cross-field rules (for example, Dr. GRPO's constant normaliser) are checked in
`__post_init__` with a message that says what to change.

Groups of TrainConfig:
    model     which weights, dtype, LoRA
    data      task, split, held-out evaluation split
    rollout   prompts per step, group size, sampling, engine
    agent     the agent loop (protocol, tools, budgets): trajlab.agent.loop.AgentConfig
    tools     each tool's settings (sandbox limits, search index): trajlab.tools.config
    reward    reward functions and weights, what counts as correct
    length    ThinkPrune hard limit schedule and soft length penalty
    filters   void-turn, zero-variance (dynamic sampling), difficulty band, overlong
    algo      advantage estimator, PPO clip, KL, entropy, epochs and mini-batches
    optim     AdamW, schedule, clipping, accumulation, bf16 autocast
    eval      periodic held-out evaluation through trajlab.eval.harness
    log       checkpoints, TensorBoard, plots, progress

What this module does not do: run anything. See rl.py for the loop and docs/training.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trajlab.agent.loop import AgentConfig
from trajlab.algos.advantages import ADVANTAGES
from trajlab.algos.length import check_schedule
from trajlab.algos.losses import AGG_MODES, KL_ESTIMATORS, KL_PLACES, RATIO_LEVELS
from trajlab.config import at_least, opt
from trajlab.threads import HELP as THREADS_HELP
from trajlab.tools.config import ToolsConfig

DTYPES = ("float32", "bfloat16")
AUTOCAST = ("auto", "none", "bf16")
DECODE_DTYPES = ("auto", "float32", "bfloat16")
SCHEDULES = ("constant", "linear", "cosine")
OVERLONG = ("none", "filter", "penalty")
ENGINES = ("hf", "fake")


@dataclass
class ModelConfig:
    model: str = opt(
        "default", "policy: 'default' (SmolLM2-135M), a HF model directory or a .gguf file"
    )
    dtype: str = opt(
        "float32",
        "dtype of the stored weights; bfloat16 halves memory but AdamW updates lose precision",
        choices=DTYPES,
    )
    lora: bool = opt(False, "train a LoRA adapter (peft) instead of every weight")
    lora_r: int = opt(16, "LoRA rank")
    lora_alpha: int = opt(32, "LoRA scaling numerator (scale = alpha / r)")
    lora_dropout: float = opt(0.0, "dropout on the LoRA input")
    lora_targets: list[str] = opt(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "module names that get adapters",
    )
    gradient_checkpointing: bool = opt(
        False, "recompute activations in backward: less memory, ~30% slower"
    )

    def __post_init__(self) -> None:
        if self.lora and self.lora_r < 1:
            raise ValueError(f"lora_r must be >= 1, got {self.lora_r}")


@dataclass
class DataConfig:
    task: str = opt(
        "arith",
        "training task: a built-in name (arith, puzzles), a benchmark (gsm8k, hotpotqa, ...: "
        "docs/rewards_and_tasks.md), hf:owner/name, or a JSONL file",
    )
    split: str = opt("train", "split of a built-in task to train on", choices=("train", "test"))
    data_dir: str = opt("", "directory of local benchmark copies (empty: $TRAJLAB_DATA)")
    size: int = opt(1000, "examples to draw from the task (0: all of a JSONL file)")
    seed: int = opt(
        0,
        "seed of the built-in task generator (so also of the held-out split) and, with the "
        "run's seed, of the shuffle order",
    )
    options: dict[str, Any] = opt(
        {},
        "options of the training task's generator, e.g. {word_prob: 0.6} for arith "
        "(trajlab.tasks.synthetic), or the field mapping of an hf:owner/name task; the "
        "held-out split keeps a generator's defaults (a field mapping applies to both)",
    )
    eval_task: str = opt("", "held-out task for periodic evaluation (empty: the same task)")
    eval_split: str = opt(
        "test", "held-out split (disjoint from train for built-in tasks)", choices=("train", "test")
    )
    eval_size: int = opt(50, "held-out examples evaluated each time")
    prompt: str = opt(
        "protocol",
        "protocol: the protocol's system prompt and few-shot example (trajlab.tasks.prompts); "
        "question: the question alone as one user message (tiny models, tests); or any "
        "template name of trajlab.tasks.prompts",
    )

    def __post_init__(self) -> None:
        at_least(self, size=0, eval_size=1)
        if self.prompt not in ("protocol", "question"):
            from trajlab.tasks.prompts import get_prompt

            get_prompt(self.prompt)  # names the valid templates


@dataclass
class RolloutConfig:
    prompts_per_step: int = opt(8, "prompt groups in one training batch")
    group_size: int = opt(8, "samples per prompt (GRPO's G, 'n' in verl)")
    temperature: float = opt(1.0, "sampling temperature; trainer logprobs use the same temperature")
    top_p: float = opt(1.0, "nucleus sampling threshold")
    top_k: int = opt(0, "top-k sampling (0: off)")
    engine: str = opt(
        "hf",
        "rollout engine; hf shares the policy's weights, so no weight sync is needed",
        choices=ENGINES,
    )
    fake_responses: list[str] = opt(
        [], "engine=fake only: scripted responses, cycled (tests and dry runs)"
    )
    max_batch_size: int = opt(64, "sequences the engine decodes together")
    decode_dtype: str = opt(
        "auto",
        "dtype the hf engine samples in: a copy of the policy's weights refreshed after every "
        "update; auto: bfloat16 on CPUs with native bf16 matmul, else the policy's dtype",
        choices=DECODE_DTYPES,
    )

    def __post_init__(self) -> None:
        from trajlab.engines.base import check_sampling

        at_least(self, prompts_per_step=1, group_size=1, top_k=0, max_batch_size=1)
        check_sampling(self.temperature, self.top_p)


@dataclass
class RewardConfig:
    weights: dict[str, float] = opt(
        {"math_correct": 1.0},
        "reward functions and weights, summed (names from trajlab.rewards.REWARDS or module:function)",
    )
    correct: str = opt(
        "",
        "component whose value > 0 means 'correct' for accuracy and pass rates (empty: total > 0)",
    )


@dataclass
class LengthConfig:
    limits: list[int] = opt(
        [],
        "ThinkPrune hard limits in model tokens, shrinking, e.g. [4000, 3000, 2000] (empty: off)",
    )
    starts: list[int] = opt([0], "step at which each limit takes over; starts[0] must be 0")
    over_limit_reward: float = opt(0.0, "reward of a trajectory over the limit (ThinkPrune: 0)")
    soft_budget: int = opt(0, "soft penalty: model tokens allowed before it starts (0: off)")
    soft_coef: float = opt(0.1, "soft penalty per budget-length of excess tokens")
    soft_cap: float = opt(1.0, "the soft penalty never goes below -soft_cap")

    def __post_init__(self) -> None:
        if self.limits:
            check_schedule(self.limits, self.starts)  # names the problem: counts, order, shrinking
        if self.soft_budget < 0:
            raise ValueError(f"soft_budget must be >= 0, got {self.soft_budget}")


@dataclass
class FilterConfig:
    void_turn: bool = opt(
        False,
        "SimpleTIR: zero loss for trajectories with a void turn (they still count in group stats)",
    )
    zero_variance: bool = opt(
        False, "DAPO dynamic sampling: drop groups whose rewards are all equal"
    )
    max_rounds: int = opt(
        1, "rollout rounds per step while group filters leave fewer than prompts_per_step groups"
    )
    min_std: float = opt(0.0, "zero_variance also drops groups whose reward std is below this")
    difficulty: bool = opt(
        False, "balanced difficulty filter: keep groups whose pass rate is in [low, high]"
    )
    pass_rate_low: float = opt(0.2, "lowest pass rate kept by the difficulty filter")
    pass_rate_high: float = opt(0.8, "highest pass rate kept by the difficulty filter")
    overlong: str = opt(
        "none",
        "truncated trajectories: zero loss (filter) or DAPO's soft penalty",
        choices=OVERLONG,
    )
    overlong_buffer: int = opt(
        64, "penalty ramps from 0 to -overlong_factor over the last this-many tokens"
    )
    overlong_factor: float = opt(1.0, "largest overlong penalty")
    overlong_min_group: int = opt(
        0,
        "with overlong=filter: drop groups keeping fewer untruncated samples (SimpleTIR min_n=4; 0: off)",
    )

    def __post_init__(self) -> None:
        if self.max_rounds < 1:
            raise ValueError(f"max_rounds must be >= 1, got {self.max_rounds}")
        if not 0.0 <= self.pass_rate_low <= self.pass_rate_high <= 1.0:
            raise ValueError(
                f"need 0 <= pass_rate_low <= pass_rate_high <= 1, got {self.pass_rate_low}, {self.pass_rate_high}"
            )


@dataclass
class AlgoConfig:
    advantage: str = opt("grpo", "advantage estimator", choices=tuple(ADVANTAGES))
    adv_eps: float = opt(1e-6, "epsilon added to the group std (grpo, gspo)")
    clip_low: float = opt(0.2, "PPO ratio floor 1 - clip_low")
    clip_high: float = opt(
        0.28, "PPO ratio ceiling 1 + clip_high; > clip_low is DAPO's clip-higher"
    )
    dual_clip: float = opt(3.0, "dual-clip constant c > 1 for negative advantages (0: off)")
    ratio_level: str = opt(
        "token", "importance ratio per token (PPO) or per sequence (GSPO)", choices=RATIO_LEVELS
    )
    loss_agg: str = opt("token-mean", "loss aggregation", choices=AGG_MODES)
    norm_length: float = opt(
        0.0, "constant divisor of seq-mean-token-sum-norm (Dr. GRPO; 0: agent.max_new_tokens)"
    )
    tis_cap: float = opt(
        2.0, "truncated importance sampling cap on pi_trainer/pi_engine per token (0: off)"
    )
    kl: str = opt(
        "none", "KL to a frozen reference; 'none' loads no reference model", choices=KL_ESTIMATORS
    )
    kl_coef: float = opt(0.0, "beta of the KL term")
    kl_in: str = opt(
        "loss", "where the KL goes: the loss, or subtracted from the reward", choices=KL_PLACES
    )
    entropy_coef: float = opt(0.0, "entropy bonus coefficient (subtracted from the loss)")
    epochs: int = opt(1, "update epochs over each rollout batch (old logprobs are stored once)")
    mini_batches: int = opt(1, "optimizer steps per epoch; the batch is split into this many parts")
    micro_batch_size: int = opt(
        8, "trajectories per forward/backward; gradients accumulate over a mini-batch"
    )

    def __post_init__(self) -> None:
        for name in ("epochs", "mini_batches", "micro_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.kl != "none" and self.kl_coef <= 0:
            raise ValueError(f"kl={self.kl!r} needs kl_coef > 0 (or set kl: none)")


@dataclass
class OptimConfig:
    lr: float = opt(1e-6, "peak learning rate of AdamW")
    weight_decay: float = opt(0.0, "AdamW weight decay")
    beta1: float = opt(0.9, "AdamW beta1")
    beta2: float = opt(0.999, "AdamW beta2")
    eps: float = opt(1e-8, "AdamW epsilon")
    warmup_steps: int = opt(0, "optimizer steps of linear warmup from 0")
    schedule: str = opt("constant", "learning-rate shape after warmup", choices=SCHEDULES)
    min_lr_ratio: float = opt(0.0, "linear/cosine decay ends at lr * min_lr_ratio")
    grad_clip: float = opt(1.0, "clip the global gradient norm to this (0: off)")
    autocast: str = opt(
        "auto",
        "bf16 autocast of the trainer's forward passes on CPU; auto: bf16 on CPUs with native "
        "bf16 matmul (AMX/AVX512-BF16), else none (see docs/training.md)",
        choices=AUTOCAST,
    )

    def __post_init__(self) -> None:
        if self.lr < 0:
            raise ValueError(f"lr must be > 0 (a learning rate like 1e-6), got {self.lr}")
        at_least(self, weight_decay=0, eps=0, warmup_steps=0, grad_clip=0)
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.lr == 0:
            import warnings

            warnings.warn("optim.lr is 0: the optimizer will not change the weights", stacklevel=2)


@dataclass
class EvalLoopConfig:
    every: int = opt(0, "evaluate on the held-out split every N steps (0: never)")
    at_start: bool = opt(False, "also evaluate before the first step (eval/step_000000)")
    at_end: bool = opt(True, "evaluate after the last step when `every` > 0")
    temperature: float = opt(0.0, "evaluation sampling temperature (0: greedy)")
    batch_size: int = opt(32, "trajectories rolled out together during evaluation")
    decode_dtype: str = opt(
        "float32",
        "dtype the evaluation engine samples in (as trajlab eval --decode-dtype); auto: "
        "bfloat16 on CPUs with native bf16 matmul, about twice as fast, greedy outputs can differ",
        choices=DECODE_DTYPES,
    )

    def __post_init__(self) -> None:
        from trajlab.engines.base import check_sampling

        at_least(self, every=0, batch_size=1)
        check_sampling(self.temperature, 1.0)


@dataclass
class LogConfig:
    checkpoint_every: int = opt(10, "write a checkpoint every N steps (and after the last)")
    keep_checkpoints: int = opt(2, "checkpoints kept on disk (oldest deleted first; 0: keep all)")
    save_trajectories: bool = opt(
        True, "write trajectories/step_XXXXXX.jsonl with per-token overlays"
    )
    tensorboard: bool = opt(False, "also write TensorBoard scalars to RUN_DIR/tb")
    plots: bool = opt(True, "write metrics.png at the end")
    progress: bool = opt(True, "print a progress line per step")
    alarms: bool = opt(True, "print trajlab.viewer.alarms warnings as they fire")
    entropy: bool = opt(
        True, "compute per-token entropy for metrics and overlays (one extra forward)"
    )

    def __post_init__(self) -> None:
        at_least(self, checkpoint_every=1, keep_checkpoints=0)


@dataclass
class TrainConfig:
    out: str = opt("", "run directory (default: runs/train-<time>); an existing one is resumed")
    steps: int = opt(10, "RL steps (rollout batches)")
    seed: int = opt(0, "seed of the data order, sampling and RNG states")
    threads: int = opt(0, THREADS_HELP)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    tools: ToolsConfig = field(default_factory=ToolsConfig)
    tool_plugins: dict[str, str] = opt(
        {},
        "tool name -> 'module:factory' built instead of the registered tool, "
        "e.g. python: trajlab.tools.fake:echo_python",
    )
    reward: RewardConfig = field(default_factory=RewardConfig)
    length: LengthConfig = field(default_factory=LengthConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalLoopConfig = field(default_factory=EvalLoopConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def __post_init__(self) -> None:
        at_least(self, steps=1, threads=0)
        if self.algo.mini_batches > self.rollout.prompts_per_step * self.rollout.group_size:
            raise ValueError(
                f"algo.mini_batches={self.algo.mini_batches} exceeds the batch of "
                f"{self.rollout.prompts_per_step * self.rollout.group_size} trajectories"
            )
        if self.rollout.engine == "fake" and not self.rollout.fake_responses:
            raise ValueError("rollout.engine=fake needs rollout.fake_responses")


@dataclass
class SFTConfig:
    data: list[str] = opt([], "trajectory JSONL files (runs' trajectories.jsonl or built data)")
    out: str = opt("", "run directory (default: runs/sft-<time>)")
    model: ModelConfig = field(default_factory=ModelConfig)
    only_correct: bool = opt(
        True, "train only on trajectories scored correct (metadata.correct or reward > 0)"
    )
    epochs: int = opt(1, "passes over the data")
    max_steps: int = opt(0, "stop after this many optimizer steps (0: run all epochs)")
    batch_size: int = opt(8, "trajectories per optimizer step")
    micro_batch_size: int = opt(4, "trajectories per forward/backward")
    max_length: int = opt(2048, "drop trajectories longer than this many tokens")
    seed: int = opt(0, "shuffle seed")
    threads: int = opt(0, THREADS_HELP)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-5, warmup_steps=0))
    checkpoint_every: int = opt(
        0, "write a checkpoint every N optimizer steps (0: only at the end)"
    )
    progress: bool = opt(True, "print a progress line per step")

    def __post_init__(self) -> None:
        at_least(self, batch_size=1, micro_batch_size=1, epochs=1, max_steps=0, max_length=1)
        at_least(self, threads=0, checkpoint_every=0)


_SCI = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def load_train_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """A validated TrainConfig from a YAML file (or defaults) plus `key=value` overrides."""
    from trajlab.flags import resolve

    return resolve(TrainConfig, path=path, overrides=list(overrides or []))


def load_sft_config(path: str | Path | None, overrides: list[str] | None = None) -> SFTConfig:
    """A validated SFTConfig from a YAML file (or defaults) plus `key=value` overrides."""
    from trajlab.flags import resolve

    return resolve(SFTConfig, path=path, overrides=list(overrides or []))
