"""Exact match for the synthetic demo tasks.

Both sides are normalised: the text after the last "The answer is" (when
present, up to the end of its line), stripped of surrounding whitespace,
quotes/``**`` and a trailing full stop, whitespace collapsed, case folded.
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


class ExactChecker:
    name = "exact"

    def check(self, prediction: str, sample: Any) -> bool:
        if sample.answer is None:
            raise ValueError(f"sample {sample.id!r}: exact match needs an 'answer'")
        return normalize(prediction) == normalize(str(sample.answer))
