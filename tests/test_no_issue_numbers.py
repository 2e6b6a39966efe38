"""What users read speaks of the product, not of this project's issue tracker.

Docstrings, CLI text, docs and configs name the setting, the goal or the option ("the v2 benchmark's goals"),
never "issue 13" or "#13": a reader has no access to the tracker, and the numbers mean nothing outside it.
References to other projects' issues stay allowed: a URL (``https://github.com/huggingface/trl/pull/5731``) or
the project named before the number ("TRL PR 5731", "transformers issue 123").
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLACES = ("src", "docs", "README.md", "configs")
#: "issue 13", "issues 6 and 7", "ticket #4", or a bare "#13" (not a colour such as "#555" or "#555555").
REFERENCE = re.compile(r"\b(?:issues?|tickets?)\s*#?\d+|(?<![\w&#/\"'])#\d{1,5}\b(?![\w;\"'])", re.IGNORECASE)
OTHER_PROJECTS = re.compile(r"\b(?:TRL|transformers|PyTorch|torch|tokenizers|accelerate|vLLM|datasets|PEFT|"
                            r"llama\.cpp|numpy|pytest|CPython|Python)\s+(?:PR|pull|issues?)?\s*$", re.IGNORECASE)
URL = re.compile(r"https?://\S+")


def references(text: str) -> list[str]:
    """The references to this project's issues in ``text``, one string per hit."""
    urls = [m.span() for m in URL.finditer(text)]
    found = []
    for m in REFERENCE.finditer(text):
        if any(a <= m.start() < b for a, b in urls) or OTHER_PROJECTS.search(text[max(0, m.start() - 40):m.start()]):
            continue
        found.append(m.group(0))
    return found


def text_files() -> list[Path]:
    files = []
    for place in PLACES:
        root = ROOT / place
        for path in sorted([root] if root.is_file() else root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                data = path.read_bytes()
                if b"\0" not in data[:4096]:
                    files.append(path)
    return files


def test_the_pattern_catches_our_issue_numbers_and_spares_others():
    assert references("the v2 benchmark (issue 13), issues 6 and 7, see #13, fixed in Issue #7.") == [
        "issue 13", "issues 6", "#13", "Issue #7"]
    spared = ('color="#555555", color: #555; TRL PR 5731, transformers issue 123, '
              "https://github.com/huggingface/trl/issues/12#issuecomment-9, item #a3, &#39; heading ## Usage")
    assert references(spared) == []


def test_no_user_facing_text_cites_an_issue_number():
    hits = []
    for path in text_files():
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            for ref in references(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {ref!r} in {line.strip()[:100]!r}")
    assert len(text_files()) > 50  # the places exist and were read
    assert not hits, "name the setting, goal or option instead of an issue number:\n" + "\n".join(hits)
