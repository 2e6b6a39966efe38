"""Exact match, for the synthetic demo tasks and users' own tasks.

Both sides are normalised: the text after the last "The answer is" (when
present, up to the end of its line), stripped of surrounding whitespace,
quotes/``**`` and a trailing full stop, whitespace collapsed, case folded.

With an answer pattern (``--answer-pattern``, a regular expression with one
group, as lm-eval's filters), the answer is the group of the *last* match in
the generation instead -- and in the reference response when the sample has
no ``answer`` field; a generation without a match is wrong.
"""

from __future__ import annotations

import re
from typing import Any

_ANSWER_IS = re.compile(r"the answer is\s*:?", re.IGNORECASE)


def normalize(text: str) -> str:
    marks = list(_ANSWER_IS.finditer(text))
    s = text[marks[-1].end() :].split("\n")[0] if marks else text
    s = s.strip()
    for _ in range(2):
        s = s.strip().strip("*").strip("\"'`").rstrip(".").strip()
    return " ".join(s.split()).casefold()


def answer_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a user's answer pattern; it must have exactly one group (the answer)."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"--answer-pattern {pattern!r} is not a regular expression ({exc})") from None
    if compiled.groups != 1:
        raise ValueError(f"--answer-pattern {pattern!r} must have exactly one group (the answer), "
                         f"it has {compiled.groups}")
    return compiled


def last_match(pattern: re.Pattern[str], text: str) -> str | None:
    found = list(pattern.finditer(text))
    return found[-1].group(1) if found else None


class ExactChecker:
    name = "exact"

    def __init__(self, pattern: str | None = None) -> None:
        self.pattern = None if pattern is None else answer_pattern(pattern)

    def gold(self, sample: Any) -> str | None:
        if sample.answer is not None:
            return str(sample.answer)
        return last_match(self.pattern, sample.response) if self.pattern is not None else None

    def check(self, prediction: str, sample: Any) -> bool:
        gold = self.gold(sample)
        if gold is None:
            where = "an 'answer' (or a match of --answer-pattern in 'response')" if self.pattern else "an 'answer'"
            raise ValueError(f"sample {sample.id!r}: exact match needs {where}")
        if self.pattern is None:
            return normalize(prediction) == normalize(gold)
        got = last_match(self.pattern, prediction)
        return got is not None and normalize(got) == normalize(gold)
