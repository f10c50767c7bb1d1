"""Built-in synthetic math tasks where running code helps a small model.

How it is used: `make_arith(n=100, split="train", seed=0)`, or through
`trajlab.tasks.load_task("arith", split="train", n=100, seed=0, max_digits=5)`.

* `arith`: multi-step arithmetic on 4-6 digit numbers (products and sums), as a
  bare expression or a short word problem. A 135M model cannot multiply
  48213 * 9172 in its head; one line of Python can.
* `puzzles`: number puzzles with exact answers: the digit sum of a large power,
  the count of primes below N, a modular power, gcd, lcm, the sum of multiples
  below N, and an arithmetic series. Each needs a loop or a big integer.

Every answer is an exact integer computed here by Python, and each Example's
`meta["params"]` holds the numbers it was built from, so tests can recompute
the answer independently.

Determinism and splits: the random stream is seeded by (task, split, seed), so
the same call always returns the same examples. A question belongs to the test
split iff a SHA-256 hash of its text falls in the test bucket (1 in 5); each
split keeps only its own bucket, so train and test never share a question,
whatever the seeds and sizes.

What it does not do: natural-language reasoning tasks, or answers that are not
integers.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from trajlab.types import Example

SPLITS = ("train", "test")
TEST_BUCKETS = 5  # one question in TEST_BUCKETS belongs to the test split


def split_of(question: str) -> str:
    """The split a question belongs to, fixed by its text alone."""
    digest = hashlib.sha256(question.encode("utf-8")).digest()
    return "test" if int.from_bytes(digest[:8], "big") % TEST_BUCKETS == 0 else "train"


# -- arith --------------------------------------------------------------------


@dataclass(frozen=True)
class ArithConfig:
    """Difficulty of `arith`. Operand sizes are in decimal digits."""

    min_digits: int = 4  # smallest operand
    max_digits: int = 6  # largest operand
    min_terms: int = 2  # fewest terms added or subtracted in an expression
    max_terms: int = 3  # most terms
    product_prob: float = 0.7  # chance an expression term is a product of two numbers
    word_prob: float = 0.3  # chance of a word problem instead of a bare expression

    def __post_init__(self) -> None:
        if not 1 <= self.min_digits <= self.max_digits:
            raise ValueError(
                f"need 1 <= min_digits <= max_digits, got {self.min_digits}, {self.max_digits}"
            )
        if not 1 <= self.min_terms <= self.max_terms:
            raise ValueError(
                f"need 1 <= min_terms <= max_terms, got {self.min_terms}, {self.max_terms}"
            )
        for name in ("product_prob", "word_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"ArithConfig.{name} must be in [0, 1], got {getattr(self, name)}")


def _operand(rng: random.Random, cfg: ArithConfig) -> int:
    digits = rng.randint(cfg.min_digits, cfg.max_digits)
    return rng.randint(10 ** (digits - 1), 10**digits - 1)


def _arith_expression(rng: random.Random, cfg: ArithConfig) -> tuple[str, int, dict[str, Any]]:
    # terms: [(sign, [factors])]; the first term is always added
    terms = []
    for i in range(rng.randint(cfg.min_terms, cfg.max_terms)):
        sign = 1 if i == 0 or rng.random() < 0.5 else -1
        k = 2 if rng.random() < cfg.product_prob else 1
        terms.append((sign, [_operand(rng, cfg) for _ in range(k)]))
    if cfg.product_prob > 0 and all(len(f) == 1 for _, f in terms):
        terms[0][1].append(_operand(rng, cfg))  # at least one product, or it is too easy
    answer = sum(sign * math.prod(factors) for sign, factors in terms)
    text = ""
    for i, (sign, factors) in enumerate(terms):
        term = " * ".join(str(f) for f in factors)
        text += term if i == 0 else (" + " if sign > 0 else " - ") + term
    question = f"What is {text}?"
    params = {"terms": [[sign, factors] for sign, factors in terms]}
    return question, answer, {"style": "expression", "params": params}


def _arith_word(rng: random.Random, cfg: ArithConfig) -> tuple[str, int, dict[str, Any]]:
    a, b, c = _operand(rng, cfg), _operand(rng, cfg), _operand(rng, cfg)
    template = rng.randrange(3)
    if template == 0:
        question = (
            f"A warehouse has {a} crates with {b} bolts in each crate, and {c} loose bolts. "
            "How many bolts are there in total?"
        )
        answer = a * b + c
    elif template == 1:
        c = min(c, a * b)  # small operand settings must not sell more than was harvested
        question = (
            f"A farm harvests {a} kg of grain per day for {b} days, then sells {c} kg. "
            "How many kg of grain are left?"
        )
        answer = a * b - c
    else:
        d = _operand(rng, cfg)
        question = (
            f"A shop sells {a} items at {b} cents each and {c} items at {d} cents each. "
            "How many cents does it take in?"
        )
        answer = a * b + c * d
        return question, answer, {"style": f"word{template}", "params": {"numbers": [a, b, c, d]}}
    return question, answer, {"style": f"word{template}", "params": {"numbers": [a, b, c]}}


def _arith_one(rng: random.Random, cfg: ArithConfig) -> tuple[str, int, dict[str, Any]]:
    if rng.random() < cfg.word_prob:
        return _arith_word(rng, cfg)
    return _arith_expression(rng, cfg)


# -- puzzles ------------------------------------------------------------------

PUZZLE_KINDS = (
    "digit_sum_power",
    "count_primes",
    "mod_power",
    "gcd",
    "lcm",
    "multiples_sum",
    "arithmetic_series",
)


@dataclass(frozen=True)
class PuzzlesConfig:
    """Difficulty of `puzzles`: which kinds, and how large their numbers get."""

    kinds: tuple[str, ...] = PUZZLE_KINDS  # drawn uniformly
    scale: int = 1  # >= 1; multiplies exponents, bounds and operand ranges

    def __post_init__(self) -> None:
        object.__setattr__(self, "kinds", tuple(self.kinds))  # accept a list from YAML/CLI
        bad = [k for k in self.kinds if k not in PUZZLE_KINDS]
        if bad or not self.kinds:
            raise ValueError(
                f"PuzzlesConfig.kinds has {bad or 'nothing'}; valid: {', '.join(PUZZLE_KINDS)}"
            )
        if self.scale < 1:
            raise ValueError(f"PuzzlesConfig.scale must be >= 1, got {self.scale}")


def count_primes_below(n: int) -> int:
    """Number of primes p < n (sieve of Eratosthenes)."""
    if n < 3:
        return 0
    sieve = bytearray([1]) * n
    sieve[0] = sieve[1] = 0
    for p in range(2, math.isqrt(n - 1) + 1):
        if sieve[p]:
            sieve[p * p :: p] = bytearray(len(range(p * p, n, p)))
    return sum(sieve)


def _puzzle(rng: random.Random, kind: str, s: int) -> tuple[str, int, dict[str, Any]]:
    if kind == "digit_sum_power":
        base, exp = rng.randint(2, 19), rng.randint(30, 150 * s)
        q = f"What is the sum of the digits of {base}^{exp}?"
        return q, sum(int(d) for d in str(base**exp)), {"base": base, "exp": exp}
    if kind == "count_primes":
        n = rng.randint(1000, 20000 * s)
        return f"How many prime numbers are less than {n}?", count_primes_below(n), {"n": n}
    if kind == "mod_power":
        base, exp, mod = rng.randint(2, 999), rng.randint(100, 10000 * s), rng.randint(7, 9999)
        q = f"What is the remainder when {base}^{exp} is divided by {mod}?"
        return q, pow(base, exp, mod), {"base": base, "exp": exp, "mod": mod}
    if kind == "gcd":
        g = rng.randint(10, 999)  # a shared factor, so the gcd is rarely 1
        a, b = g * rng.randint(100, 9999 * s), g * rng.randint(100, 9999 * s)
        q = f"What is the greatest common divisor of {a} and {b}?"
        return q, math.gcd(a, b), {"a": a, "b": b}
    if kind == "lcm":
        nums = [rng.randint(10, 999 * s) for _ in range(3)]
        q = f"What is the least common multiple of {nums[0]}, {nums[1]} and {nums[2]}?"
        return q, math.lcm(*nums), {"numbers": nums}
    if kind == "multiples_sum":
        a, b = rng.sample(range(3, 14), 2)
        n = rng.randint(1000, 100000 * s)
        q = f"What is the sum of all positive integers below {n} that are multiples of {a} or {b}?"
        # multiples of a, plus multiples of b, minus those counted twice
        answer = sum(range(0, n, a)) + sum(range(0, n, b)) - sum(range(0, n, math.lcm(a, b)))
        return q, answer, {"a": a, "b": b, "n": n}
    if kind == "arithmetic_series":
        first, step, count = rng.randint(-500, 5000), rng.randint(2, 97), rng.randint(50, 2000 * s)
        q = (
            f"An arithmetic sequence starts {first}, {first + step}, {first + 2 * step}, ... "
            f"What is the sum of its first {count} terms?"
        )
        answer = count * first + step * count * (count - 1) // 2
        return q, answer, {"first": first, "step": step, "count": count}
    raise ValueError(f"unknown puzzle kind {kind!r}; valid: {', '.join(PUZZLE_KINDS)}")


def _puzzles_one(rng: random.Random, cfg: PuzzlesConfig) -> tuple[str, int, dict[str, Any]]:
    kind = rng.choice(cfg.kinds)
    question, answer, params = _puzzle(rng, kind, cfg.scale)
    return question, answer, {"kind": kind, "params": params}


# -- generation loop ----------------------------------------------------------


def _config(cls: type, options: dict[str, Any]):
    valid = {f.name for f in fields(cls)}
    bad = sorted(set(options) - valid)
    if bad:
        raise ValueError(
            f"unknown option(s) {bad} for {cls.__name__}; valid: {', '.join(sorted(valid))}"
        )
    return cls(**options)


def _generate(
    task: str,
    one: Callable[[random.Random], tuple[str, int, dict[str, Any]]],
    n: int,
    split: str,
    seed: int,
) -> list[Example]:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} for task {task!r}; valid: {', '.join(SPLITS)}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(f"trajlab/{task}/{split}/{seed}")  # str seeds are stable across runs
    examples: list[Example] = []
    seen: set[str] = set()
    attempts, max_attempts = 0, 50 * n + 1000
    while len(examples) < n:
        attempts += 1
        if attempts > max_attempts:
            raise ValueError(
                f"task {task!r} produced only {len(examples)} distinct {split} questions of {n} "
                "asked; ask for fewer or widen the difficulty settings"
            )
        question, answer, meta = one(rng)
        if question in seen or split_of(question) != split:
            continue
        seen.add(question)
        meta = {**meta, "task": task, "split": split, "seed": seed}
        examples.append(
            Example(
                id=f"{task}-{split}-{seed}-{len(examples)}",
                question=question,
                answer=str(answer),
                meta=meta,
            )
        )
    return examples


def make_arith(n: int = 100, split: str = "test", seed: int = 0, **options: Any) -> list[Example]:
    """`n` arithmetic questions; options are ArithConfig fields."""
    cfg = _config(ArithConfig, options)
    return _generate("arith", lambda rng: _arith_one(rng, cfg), n, split, seed)


def make_puzzles(n: int = 100, split: str = "test", seed: int = 0, **options: Any) -> list[Example]:
    """`n` number puzzles; options are PuzzlesConfig fields."""
    cfg = _config(PuzzlesConfig, options)
    return _generate("puzzles", lambda rng: _puzzles_one(rng, cfg), n, split, seed)
