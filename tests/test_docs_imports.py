"""Every ``from leaf... import ...`` and ``leaf.x.y(...)`` written in the README and docs/ works as written."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FROM = re.compile(r"from (leaf(?:\.\w+)*) import ([\w, ]+)")
DOTTED = re.compile(r"`(leaf(?:\.\w+)+)(?:\(|`)")


def _imports() -> list[tuple[str, str, str]]:
    found = set()
    for path in TEXTS:
        text = path.read_text(encoding="utf-8")
        for module, names in FROM.findall(text):
            for name in (n.strip() for n in names.split(",")):
                if name:
                    found.add((path.name, module, name))
        for dotted in DOTTED.findall(text):
            module, _, name = dotted.rpartition(".")
            found.add((path.name, module, name))
    return sorted(found)


@pytest.mark.parametrize(("doc", "module", "name"), _imports(), ids=lambda v: str(v))
def test_documented_name_exists(doc, module, name):
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError:
        # `leaf.detect.detect` names a function: module leaf.detect, attribute detect
        parent, _, attr = module.rpartition(".")
        mod = getattr(importlib.import_module(parent), attr)
    if not hasattr(mod, name):
        importlib.import_module(f"{module}.{name}")  # a submodule is fine too
