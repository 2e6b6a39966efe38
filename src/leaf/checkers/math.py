"""Math answers: extract the final answer, judge equivalence with math-verify.

Extraction (:func:`extract_answer`) looks, in order, for the last
``\\boxed{...}`` / ``\\fbox{...}`` (braces balanced, so ``\\boxed{\\frac{1}{2}}``
is whole), GSM8K's ``#### 72``, and the last "the answer is ..." /
"final answer: ...". The answer is cleaned (``$...$`` delimiters, a trailing
full stop, a currency sign, thousands separators, a trailing unit word after a
number) and both gold and prediction are parsed by math-verify as
``\\boxed{...}``; ``verify(gold, pred)`` decides (gold first: the relation is
not symmetric). Without any marker the whole prediction goes to math-verify,
which takes the last expression it can read.

math-verify bounds its own work with ``SIGALRM``, which only works in the main
thread. There it is used as is; from any other thread each judgement runs in
a one-process pool with an outer wall-clock limit, so a pathological
expression can never hang the caller.

Errors are never hidden as wrong answers. Without math-verify, building a
:class:`MathChecker` (or judging) raises :class:`~leaf.checkers.MissingExtra`
(one line naming ``pip install 'math-verify>=0.7'``, a core dependency of leaf).
:meth:`MathChecker.run` returns a
:class:`MathResult` whose ``status`` is ``"passed"``, ``"failed"`` (a readable
answer that is not equivalent, or no answer at all), ``"error"`` (math-verify
raised; ``detail`` says what) or ``"timeout"``; ``check`` returns
``run(...).passed`` and keeps the result in ``.last`` and the counts in
``.errors``/``.timeouts``, each error also logged as a warning.
"""

from __future__ import annotations

import atexit
import logging
import re
import threading
from dataclasses import dataclass
from typing import Any

from leaf.data.answers import last_boxed

log = logging.getLogger(__name__)

_HASH = re.compile(r"####\s*(.+)")
_ANSWER_IS = re.compile(r"answer\s*(?:is|:)\s*(?:[:=]\s*)?", re.IGNORECASE)
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_NUMBER_UNIT = re.compile(r"^(-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?)\s+[A-Za-z][A-Za-z ]*$")
# math-verify is a core dependency of leaf: a broken environment lacks it, and the checker must not run without it
_EXTRA = "pip install 'math-verify>=0.7' (a dependency of leaf: reinstall leaf)"


def clean_answer(ans: str) -> str:
    """Strip what surrounds an answer in prose; keep the mathematics."""
    s = ans.strip()
    for _ in range(3):
        before = s
        s = s.strip().rstrip(".").strip()
        if len(s) >= 2 and s[0] == "$" and s[-1] == "$":
            s = s.strip("$")
        if s.startswith("\\(") and s.endswith("\\)"):
            s = s[2:-2]
        if s.startswith("\\[") and s.endswith("\\]"):
            s = s[2:-2]
        s = re.sub(r"^\*\*(.*)\*\*$", r"\1", s)
        if re.match(r"^\\?\$\s*-?\d", s):  # currency: "$18" or "\$18"
            s = re.sub(r"^\\?\$\s*", "", s)
        if s == before:
            break
    unit = _NUMBER_UNIT.match(s)  # "1,080 dollars" -> "1,080"
    if unit:
        s = unit.group(1)
    if _THOUSANDS.match(s):  # "1,080" -> "1080"
        s = s.replace(",", "")
    return s


def extract_answer(text: str) -> str | None:
    """The final answer stated in ``text`` (see the module doc), or None."""
    boxed = last_boxed(text)
    if boxed is not None:
        return clean_answer(boxed)
    hashes = _HASH.findall(text)
    if hashes:
        return clean_answer(hashes[-1])
    marks = list(_ANSWER_IS.finditer(text))
    if marks:
        return clean_answer(text[marks[-1].end() :].split("\n")[0])
    return None


def require_math_verify() -> None:
    """Raise :class:`~leaf.checkers.MissingExtra` (one line) when math-verify cannot be imported."""
    try:
        import math_verify  # noqa: F401
    except ImportError as exc:
        from leaf.checkers import MissingExtra

        raise MissingExtra(f"the math checker needs math-verify ({exc}): {_EXTRA}") from None


class JudgeTimeout(Exception):
    """math-verify did not finish within the outer wall-clock limit."""


def _judge(gold: str, pred: str | None, full_text: str, timeout: int) -> bool:
    require_math_verify()
    from math_verify import parse, verify

    gold_parsed = parse("\\boxed{" + gold + "}", parsing_timeout=timeout)
    if not gold_parsed:
        return False
    if pred is not None:
        pred_parsed = parse("\\boxed{" + pred + "}", parsing_timeout=timeout)
    else:
        pred_parsed = parse(full_text, parsing_timeout=timeout)
    if not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))


_pool: Any = None
_pool_lock = threading.Lock()


def _judge_in_pool(gold: str, pred: str | None, full_text: str, timeout: int) -> bool:
    import concurrent.futures
    import multiprocessing

    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
            atexit.register(_pool.shutdown, wait=False, cancel_futures=True)
        pool = _pool
    fut = pool.submit(_judge, gold, pred, full_text, timeout)
    try:
        # The worker is in its own main thread, so math-verify's alarms work there too;
        # the outer limit (generous: the first call imports sympy) catches anything else.
        return bool(fut.result(timeout=4 * timeout + 30))
    except concurrent.futures.TimeoutError:
        with _pool_lock:
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.kill()
            pool.shutdown(wait=False, cancel_futures=True)
            if _pool is pool:
                _pool = None
        raise JudgeTimeout(f"math-verify did not finish within {4 * timeout + 30} s") from None


@dataclass(frozen=True)
class MathResult:
    """How one math judgement ended: ``status`` is "passed", "failed", "error" or "timeout"."""

    status: str
    answer: str | None  # the extracted final answer (None: none marked; math-verify read the whole text)
    detail: str = ""  # for "error"/"timeout": what went wrong

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def judge_result(gold: str, prediction: str, timeout: int = 5) -> MathResult:
    """Judge ``prediction`` against ``gold``; never hangs, never hides an error as a wrong answer.

    A missing math-verify raises :class:`~leaf.checkers.MissingExtra`; anything math-verify raises
    is an "error" result, an outer time-out a "timeout" result.
    """
    pred = extract_answer(prediction)
    try:
        if threading.current_thread() is threading.main_thread():
            ok = _judge(gold, pred, prediction, timeout)
        else:
            ok = _judge_in_pool(gold, pred, prediction, timeout)
    except JudgeTimeout as exc:
        log.warning("math checker: %s (gold %r, answer %r)", exc, gold, pred)
        return MathResult("timeout", pred, str(exc))
    except ImportError:
        require_math_verify()  # raises MissingExtra: one line, naming the extra
        raise
    except Exception as exc:
        from leaf.checkers import MissingExtra

        if isinstance(exc, MissingExtra):
            raise
        detail = f"{type(exc).__name__}: {exc}"
        log.warning("math checker error on gold %r, answer %r: %s", gold, pred, detail)
        return MathResult("error", pred, detail)
    return MathResult("passed" if ok else "failed", pred)


def judge(gold: str, prediction: str, timeout: int = 5) -> bool:
    """Is the final answer of ``prediction`` equivalent to ``gold``? (False also for an error or
    time-out, which :func:`judge_result` tells apart and logs.)"""
    return judge_result(gold, prediction, timeout).passed


class MathChecker:
    """``check(prediction, sample)``: the final answer equals ``sample.answer`` (math-verify).

    ``run`` returns a :class:`MathResult` (``.passed``, ``.status``: passed/failed/error/timeout);
    ``check`` returns ``run(...).passed``, keeps it in ``.last`` and counts ``.errors`` and
    ``.timeouts`` so a caller can report them instead of silently scoring them wrong.
    """

    name = "math"

    def __init__(self, timeout: int = 5) -> None:
        require_math_verify()
        self.timeout = timeout
        self.last: MathResult | None = None
        self.errors = 0
        self.timeouts = 0

    def gold(self, sample: Any) -> str | None:
        if sample.answer is not None and str(sample.answer).strip():
            return clean_answer(str(sample.answer))
        return extract_answer(sample.response) if getattr(sample, "response", None) else None

    def run(self, prediction: str, sample: Any) -> MathResult:
        gold = self.gold(sample)
        if gold is None:
            raise ValueError(f"sample {sample.id!r}: no gold answer ('answer' field, or a marked answer in 'response')")
        result = judge_result(gold, prediction, self.timeout)
        if result.status == "error":
            self.errors += 1
        elif result.status == "timeout":
            self.timeouts += 1
        return result

    def check(self, prediction: str, sample: Any) -> bool:
        self.last = self.run(prediction, sample)
        return self.last.passed
