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
expression can never hang the caller (it is scored wrong).
"""

from __future__ import annotations

import atexit
import logging
import re
import threading
from typing import Any

from leaf.data.answers import last_boxed

log = logging.getLogger(__name__)

_HASH = re.compile(r"####\s*(.+)")
_ANSWER_IS = re.compile(r"answer\s*(?:is|:)\s*(?:[:=]\s*)?", re.IGNORECASE)
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_NUMBER_UNIT = re.compile(r"^(-?\d+(?:\.\d+)?)\s+[A-Za-z][A-Za-z ]*$")


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
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    unit = _NUMBER_UNIT.match(s)
    if unit:
        s = unit.group(1)
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


def _judge(gold: str, pred: str | None, full_text: str, timeout: int) -> bool:
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
        log.warning("math-verify did not finish in time; scoring as wrong")
        with _pool_lock:
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.kill()
            pool.shutdown(wait=False, cancel_futures=True)
            if _pool is pool:
                _pool = None
        return False


def judge(gold: str, prediction: str, timeout: int = 5) -> bool:
    """Is the final answer of ``prediction`` equivalent to ``gold``? Never hangs."""
    pred = extract_answer(prediction)
    try:
        if threading.current_thread() is threading.main_thread():
            return _judge(gold, pred, prediction, timeout)
        return _judge_in_pool(gold, pred, prediction, timeout)
    except Exception as exc:  # math-verify raises on odd input; an unreadable answer is wrong
        log.debug("math-verify failed on %r vs %r: %s", gold, pred, exc)
        return False


class MathChecker:
    """``check(prediction, sample)``: the final answer equals ``sample.answer`` (math-verify)."""

    name = "math"

    def __init__(self, timeout: int = 5) -> None:
        self.timeout = timeout

    def gold(self, sample: Any) -> str | None:
        if sample.answer is not None and str(sample.answer).strip():
            return clean_answer(str(sample.answer))
        return extract_answer(sample.response) if getattr(sample, "response", None) else None

    def check(self, prediction: str, sample: Any) -> bool:
        gold = self.gold(sample)
        if gold is None:
            raise ValueError(f"sample {sample.id!r}: no gold answer ('answer' field, or a marked answer in 'response')")
        return judge(gold, prediction, self.timeout)
