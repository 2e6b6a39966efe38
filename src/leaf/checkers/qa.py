"""Multi-hop QA answers: the official HotpotQA normalisation, exact match and F1.

Normalisation (as in ``hotpot_evaluate_v1.py``): lowercase, drop punctuation,
drop the articles a/an/the, collapse whitespace. F1 is over the normalised
tokens, except that when either side normalises to ``yes``, ``no`` or
``noanswer`` the two must be identical (else F1 = 0).

A free-form generation is first reduced to its stated answer: the text after
the last "answer is" / "Answer:" when present (up to the end of that line),
else the first non-empty line.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Any

_PUNCT = set(string.punctuation)
_SPECIAL = ("yes", "no", "noanswer")
_ANSWER = re.compile(r"answer is\s*:?|answer:", re.IGNORECASE)


def normalize_answer(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def exact_match(prediction: str, gold: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(gold)


def f1_score(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction), normalize_answer(gold)
    if (pred in _SPECIAL or ref in _SPECIAL) and pred != ref:
        return 0.0
    p_tokens, r_tokens = pred.split(), ref.split()
    common = Counter(p_tokens) & Counter(r_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p_tokens), same / len(r_tokens)
    return 2 * precision * recall / (precision + recall)


def extract_answer(text: str) -> str:
    """The stated answer of a free-form generation (see the module doc)."""
    marks = list(_ANSWER.finditer(text))
    if marks:
        ans = text[marks[-1].end() :].split("\n")[0]
    else:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        ans = lines[0] if lines else ""
    return ans.strip().strip("*").strip()


def _golds(sample: Any) -> list[str]:
    if sample.answer is None:
        raise ValueError(f"sample {sample.id!r}: QA needs an 'answer'")
    aliases = (sample.meta or {}).get("answer_aliases") or []
    return [str(sample.answer), *(str(a) for a in aliases)]


class QAChecker:
    """``check`` = exact match after normalisation (max over ``meta.answer_aliases``); ``f1`` too."""

    name = "qa"

    def check(self, prediction: str, sample: Any) -> bool:
        pred = extract_answer(prediction)
        return any(exact_match(pred, g) for g in _golds(sample))

    def f1(self, prediction: str, sample: Any) -> float:
        pred = extract_answer(prediction)
        return max(f1_score(pred, g) for g in _golds(sample))
