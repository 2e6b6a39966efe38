"""Final answers inside model-written text: pure string functions shared by data conversion and checkers."""

from __future__ import annotations

import re

_BOX = re.compile(r"\\(?:boxed|fbox)\s*(\{)?")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (balanced braces) or ``\\boxed x``; None if absent."""
    found = None
    for m in _BOX.finditer(text):
        if m.group(1) is None:  # "\boxed 5": up to the next space or "$"
            rest = re.match(r"[^\s$]+", text[m.end() :])
            if rest:
                found = rest.group(0)
            continue
        depth, i = 1, m.end()
        while i < len(text) and depth:
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
            i += 1
        if depth == 0:
            found = text[m.end() : i - 1]
    return found


__all__ = ["last_boxed"]
