"""Math answers: extract the model's final answer and judge it against the reference.

How it is used:

    correct, prediction = score_math(example, trajectory)    # the eval harness
    REWARDS["math_correct"](example, trajectory)             # 1.0 / 0.0
    REWARDS["math_pm1"](example, trajectory)                 # +1 / -1, as CIR and ToRL

Extraction (`extract_answer`) reads one string and supports four methods:
`boxed` (the last `\\boxed{...}` with balanced, possibly nested braces, or the
brace-less `\\boxed 5`), `answer_tag` (the content of the last
`<answer>...</answer>`), `last_number` (the last number, with signs, thousands
commas, decimals, fractions like 3/4 and `$`) and `auto` (the first of those three
that finds something).

Equivalence (`is_equivalent`) first tries an exact / normalised-numeric short
circuit ("18" = "18.0" = "$18", "18,000" = "18000", "3/4" = "0.75"), then
falls back to math-verify (`math_verify.parse` / `verify`), which knows LaTeX,
fractions, sets, intervals and symbolic equality.

Where this departs from the papers:
* Only the model's own text counts (`Trajectory.model_text`, with its code blocks
  removed). A `\\boxed{}` printed by the interpreter is tool output, not an
  answer the model gave. SimpleTIR is the exception: it prepends a
  `final_answer(x)` helper that prints `\\boxed{x}` and ends the episode on it;
  to train that style, the model must still restate the box in its own words.
* `auto` extraction falls back to the last number, which is more lenient than
  CIR/ToRL (box or nothing). `math_pm1` follows the papers (box only);
  `math_correct` uses `auto`, which gives a 135M model some signal before it
  learns to box its answers.
* A trailing unit word or percent sign ("18 dollars", "25\\%") is dropped by the
  numeric short circuit; math-verify alone would call "18 dollars" wrong.

The math-verify timeout trap: math-verify enforces its timeouts with
`signal.alarm`, which only works in the main thread (elsewhere it raises
ValueError) and which also cancels any alarm the caller had set (pytest-timeout,
for one, arms such an alarm around every test). Rewards are
called from worker threads too, so `VerifyConfig.backend="auto"` runs math-verify
inline (with its own signal timeouts) only in the main thread when no alarm is
pending, and otherwise in one long-lived helper subprocess (where the signal
timeouts work again) that the caller kills and restarts if it does not answer
within `hard_timeout_s`, which also covers hangs inside C code that no signal
interrupts.

What it does not do: QA scoring (EM/F1), partial credit, or LLM judging.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from trajlab.types import Example, Trajectory

logger = logging.getLogger(__name__)

EXTRACTION_METHODS = ("auto", "boxed", "answer_tag", "last_number")


# -- extraction ---------------------------------------------------------------

_BOXED = re.compile(r"\\boxed(?![A-Za-z])")
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
# A number not glued to a word or another number: optional sign and `$`, an
# integer part with or without thousands commas, decimals, an optional /denominator.
_NUMBER = re.compile(
    r"(?<![\w.])(?P<sign>[-+]?)\\?\$?(?P<sign2>-?)"
    r"(?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?P<dec>\.\d+)?(?:/(?P<den>\d+))?"
)
# Code is the model's text, but not its answer: `print(2**10)` must not make "10"
# the last number. Unterminated blocks (a truncated turn) run to the end.
_CODE = re.compile(r"```(?:python|py)?\s*\n.*?(?:```|\Z)|<python>.*?(?:</python>|\Z)", re.DOTALL)


def strip_code(text: str) -> str:
    """Remove ```python fences and <python> blocks, so extraction sees prose only."""
    return _CODE.sub(" ", text)


def _balanced(text: str, start: int) -> str | None:
    """Content of the brace group opening at text[start] == '{'; None if it never closes."""
    depth, i = 0, start
    while i < len(text):
        ch = text[i]
        if ch == "\\":  # \{ and \} are literal braces in LaTeX, not grouping
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
        i += 1
    return None


def extract_boxed(text: str) -> str | None:
    """The last `\\boxed{...}` (nested braces ok) or `\\boxed 5`; None if absent or unclosed.

    An unclosed last box (a truncated answer) gives None rather than an earlier
    box: the model's final word is unknown, so no answer is the honest reading.
    """
    matches = list(_BOXED.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end() :]
    stripped = rest.lstrip()
    if stripped.startswith("{"):
        content = _balanced(stripped, 0)
    elif rest[:1].isspace():
        token = re.match(r"[^\s$]+", stripped)
        content = token.group(0) if token else None
    else:
        content = None
    if content is None or not content.strip():
        return None
    return content.strip()


def extract_answer_tag(text: str) -> str | None:
    """Content of the last <answer>...</answer>; None if there is none or it is empty."""
    found = _ANSWER_TAG.findall(text)
    if not found or not found[-1].strip():
        return None
    return found[-1].strip()


def extract_last_number(text: str) -> str | None:
    """The last number in the text, normalised: "$1,234.50" -> "1234.50", "-3/4" -> "-3/4"."""
    text = text.replace("\u2212", "-")  # unicode minus sign
    found = list(_NUMBER.finditer(text))
    if not found:
        return None
    m = found[-1]
    sign = "-" if "-" in (m.group("sign") + m.group("sign2")) else ""
    number = m.group("int").replace(",", "") + (m.group("dec") or "")
    if m.group("den"):
        number += "/" + m.group("den")
    return sign + number


def extract_answer(text: str, method: str = "auto") -> str | None:
    """The final answer in `text` by `method` (see EXTRACTION_METHODS), or None."""
    if method == "boxed":
        return extract_boxed(text)
    if method == "answer_tag":
        return extract_answer_tag(text)
    if method == "last_number":
        return extract_last_number(text)
    if method == "auto":
        for fn in (extract_boxed, extract_answer_tag, extract_last_number):
            found = fn(text)
            if found is not None:
                return found
        return None
    raise ValueError(
        f"unknown extraction method {method!r}; valid: {', '.join(EXTRACTION_METHODS)}"
    )


# -- numeric short circuit ----------------------------------------------------


@dataclass(frozen=True)
class _Number:
    value: Fraction
    exact: bool  # False when written with a decimal point (math-verify may round it)


_NOISE = re.compile(r"\\[!,; ]|\\left|\\right|\{,\}|\\?\$|\s+")
_UNIT = re.compile(r"(?:\s*\\(?:text|mbox|mathrm)\{[^{}\d]*\}|\s+[A-Za-z]{2,}(?:\s+[A-Za-z]+)*)$")
_PERCENT = re.compile(r"(?:\\?%|\^\{?\\circ\}?)$")
_FRAC = re.compile(r"^(-?)\\[dt]?frac\{(-?\d+)\}\{(\d+)\}$")
_PLAIN = re.compile(r"^([-+]?)(\d{1,3}(?:,\d{3})+|\d+)(\.\d*)?(?:/(\d+))?$")


def _as_number(s: str) -> _Number | None:
    """Read an answer as an exact rational number when it plainly is one, else None."""
    s = s.strip().replace("\u2212", "-")
    s = _UNIT.sub("", s)  # "18 dollars", "18\text{ apples}"
    s = _NOISE.sub("", s)
    s = _PERCENT.sub("", s)
    s = s.rstrip(".")
    if m := _FRAC.match(s):
        num, den = int(m.group(2)), int(m.group(3))
        if den == 0:
            return None
        sign = -1 if m.group(1) else 1
        return _Number(sign * Fraction(num, den), exact=True)
    m = _PLAIN.match(s)
    if not m:
        return None
    sign, whole, dec, den = m.groups()
    value = Fraction(whole.replace(",", "") + (dec if dec and dec != "." else ""))
    if den is not None:
        if dec or int(den) == 0:
            return None
        value /= int(den)
    return _Number(-value if sign == "-" else value, exact=not dec)


# -- math-verify, thread-safe and hang-proof ----------------------------------

VERIFY_BACKENDS = ("auto", "inline", "subprocess")


@dataclass(frozen=True)
class VerifyConfig:
    """How math-verify is run. The defaults suit training and evaluation alike."""

    # auto: inline in the main thread when no SIGALRM is pending, else subprocess.
    # inline: always in-process (raises from worker threads: math-verify needs signals).
    # subprocess: always in the helper process.
    backend: str = "auto"
    timeout_s: int = 5  # math-verify's own per-parse / per-comparison limit (whole seconds)
    hard_timeout_s: float = 30.0  # subprocess only: kill and restart the helper past this
    startup_timeout_s: float = 120.0  # subprocess only: time allowed to import math-verify

    def __post_init__(self) -> None:
        if self.backend not in VERIFY_BACKENDS:
            raise ValueError(
                f"VerifyConfig.backend={self.backend!r}; valid: {', '.join(VERIFY_BACKENDS)}"
            )
        if int(self.timeout_s) != self.timeout_s or self.timeout_s < 1:
            raise ValueError(
                f"VerifyConfig.timeout_s must be a whole number >= 1, got {self.timeout_s}"
            )


DEFAULT_VERIFY = VerifyConfig()


def _latex(s: str) -> str:
    """Wrap an answer in $...$ for math-verify, as CIR does; drop stray unescaped `$`."""
    return "$" + re.sub(r"(?<!\\)\$", "", s) + "$"


def _import_math_verify():
    try:
        import math_verify
    except ImportError as e:
        raise ImportError(
            "math answers are judged with math-verify, which is not installed; "
            "fix: pip install 'math-verify>=0.7'"
        ) from e
    return math_verify


def _verify_inline(gold: str, pred: str, timeout_s: int) -> bool:
    mv = _import_math_verify()
    # raise_on_error stays False: an answer math-verify cannot parse is simply wrong.
    g = mv.parse(_latex(gold), parsing_timeout=timeout_s)
    p = mv.parse(_latex(pred), parsing_timeout=timeout_s)
    return bool(mv.verify(g, p, timeout_seconds=timeout_s))


def _serve_verifier() -> None:
    """Entry point of the helper process: one JSON request per line in, one reply out."""
    out = sys.stdout
    sys.stdout = sys.stderr  # anything math-verify prints must not corrupt the replies
    _import_math_verify()
    out.write('{"ready": true}\n')
    out.flush()
    for line in sys.stdin:
        req = json.loads(line)
        equal = _verify_inline(req["gold"], req["pred"], req["timeout_s"])
        out.write(json.dumps({"equal": equal}) + "\n")
        out.flush()


# The helper's command line; tests swap it for one that never answers.
_WORKER_CODE = "from trajlab.rewards.math import _serve_verifier; _serve_verifier()"


class _VerifierProcess:
    """A lazily started helper process running `_serve_verifier`, shared by all threads.

    Requests are serialised by a lock (math-verify calls take milliseconds).
    A request unanswered within hard_timeout_s kills the helper; the next one
    starts a fresh helper. A helper that dies on its own is a broken install
    and raises.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner = 0  # pid that started _proc: a forked child must not share it
        self._buf = b""

    def _start(self, cfg: VerifyConfig) -> subprocess.Popen[bytes]:
        root = str(Path(__file__).resolve().parents[2])  # the dir holding the trajlab package
        env = dict(os.environ)
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER_CODE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            bufsize=0,
        )
        self._proc, self._owner, self._buf = proc, os.getpid(), b""
        reply = self._read_reply(cfg.startup_timeout_s)
        if reply is None or not reply.get("ready"):
            self.close()
            raise RuntimeError(
                f"the math-verify helper process did not start within {cfg.startup_timeout_s}s; "
                f"check that `{sys.executable} -c 'import math_verify'` works"
            )
        return proc

    def _read_reply(self, timeout_s: float) -> dict | None:
        """Next JSON line from the helper; None on timeout; raises if the helper died."""
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                code = self._proc.wait()
                self._proc = None
                raise RuntimeError(
                    f"the math-verify helper process exited with code {code} (its stderr is "
                    f"above); check that `{sys.executable} -c 'import math_verify'` works"
                )
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def equal(self, gold: str, pred: str, cfg: VerifyConfig) -> bool | None:
        """math-verify's verdict, or None if the helper hung and was killed."""
        with self._lock:
            if self._proc is None or self._owner != os.getpid() or self._proc.poll() is not None:
                self._start(cfg)
            assert self._proc is not None and self._proc.stdin is not None
            request = {"gold": gold, "pred": pred, "timeout_s": int(cfg.timeout_s)}
            self._proc.stdin.write((json.dumps(request) + "\n").encode())
            reply = self._read_reply(cfg.hard_timeout_s)
            if reply is None:
                self.close()
                return None
            return bool(reply["equal"])

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and self._owner == os.getpid():
            proc.kill()
            proc.wait()


_VERIFIER = _VerifierProcess()
atexit.register(_VERIFIER.close)


def _can_run_inline() -> bool:
    if threading.current_thread() is not threading.main_thread():
        return False  # signal.alarm raises outside the main thread
    return signal.getitimer(signal.ITIMER_REAL)[0] == 0  # math-verify would cancel it


def math_verify_equal(gold: str, pred: str, config: VerifyConfig = DEFAULT_VERIFY) -> bool:
    """math-verify's judgement of pred against gold; a hang or timeout counts as not equal."""
    inline = config.backend == "inline" or (config.backend == "auto" and _can_run_inline())
    if inline:
        return _verify_inline(gold, pred, config.timeout_s)
    verdict = _VERIFIER.equal(gold, pred, config)
    if verdict is None:
        logger.warning(
            "math-verify did not answer within %.0fs on prediction %r; scored as incorrect",
            config.hard_timeout_s,
            pred[:200],
        )
        return False
    return verdict


def is_equivalent(
    prediction: str | None, reference: str, config: VerifyConfig = DEFAULT_VERIFY
) -> bool:
    """Whether `prediction` states the same answer as `reference`.

    Fast path: identical strings, or both plain numbers with equal values
    ("18" = "18.0" = "$18" = "18 dollars", "18,000" = "18000", "3/4" = "0.75").
    Two unequal integers or fractions are decided here too; anything else
    (LaTeX, expressions, unequal decimals that math-verify might round) goes to
    math-verify.
    """
    if prediction is None or not prediction.strip():
        return False
    pred, ref = prediction.strip(), reference.strip()
    if pred == ref:
        return True
    p, r = _as_number(pred), _as_number(ref)
    if p is not None and r is not None:
        if p.value == r.value:
            return True
        if p.exact and r.exact:
            return False
    return math_verify_equal(ref, pred, config)


# -- scoring and rewards ------------------------------------------------------


def score_math(
    example: Example,
    trajectory: Trajectory,
    method: str = "auto",
    config: VerifyConfig = DEFAULT_VERIFY,
) -> tuple[bool, str | None]:
    """(correct, prediction): the answer the model wrote, judged against every reference."""
    prediction = extract_answer(strip_code(trajectory.model_text), method)
    return judge(example, prediction, config), prediction


def judge(example: Example, prediction: str | None, config: VerifyConfig = DEFAULT_VERIFY) -> bool:
    """Whether `prediction` matches any of the example's references (None never does)."""
    references = example.references
    if not references:
        raise ValueError(
            f"example {example.id!r} has no reference answer; give each task row "
            "an `answer` or a non-empty `answers` list"
        )
    return prediction is not None and any(
        is_equivalent(prediction, ref, config) for ref in references
    )


def math_correct(example: Example, trajectory: Trajectory) -> float:
    """1.0 if the final answer (auto extraction) is right, else 0.0 (as SimpleTIR, 0/1)."""
    return 1.0 if score_math(example, trajectory, "auto")[0] else 0.0


def math_correct_boxed(example: Example, trajectory: Trajectory) -> float:
    """1.0 if the last \\boxed{} answer is right, else 0.0; no box scores 0."""
    return 1.0 if score_math(example, trajectory, "boxed")[0] else 0.0


def math_pm1(example: Example, trajectory: Trajectory) -> float:
    """+1 if the last \\boxed{} answer is right, else -1, no box included (CIR, ToRL)."""
    return 1.0 if score_math(example, trajectory, "boxed")[0] else -1.0
