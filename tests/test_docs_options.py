"""Every options table in docs/ is the one the config dataclass gives (no option undocumented or stale).

A table follows a heading ``### ConfigName`` naming the class. Regenerate them all with
``python tests/test_docs_options.py --write``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from leaf.analyze.config import AnalyzeConfig
from leaf.config import options_markdown
from leaf.data.config import ConvertConfig, DistractorsConfig
from leaf.demo.config import DemoConfig
from leaf.demo.export.config import DemoDataConfig
from leaf.detect.config import DetectConfig
from leaf.distill.config import CacheConfig, DistillConfig
from leaf.evaluate.config import EvaluateConfig, LabelConfig
from leaf.prune.config import PruneConfig
from leaf.report.config import ReportConfig
from leaf.tiny import TinyConfig

DOCS = Path(__file__).resolve().parents[1] / "docs"
CONFIGS = {c.__name__: c for c in (AnalyzeConfig, CacheConfig, ConvertConfig, DemoConfig, DistractorsConfig, DemoDataConfig,
                                   DetectConfig, DistillConfig, EvaluateConfig, LabelConfig, PruneConfig, ReportConfig, TinyConfig)}
TABLE = re.compile(r"^### (\w+Config)\n\n((?:\|.*\|\n)+)", re.MULTILINE)


def tables() -> list[tuple[Path, str, str]]:
    return [(p, m.group(1), m.group(2)) for p in sorted(DOCS.glob("*.md")) for m in TABLE.finditer(p.read_text())]


def test_every_config_has_a_table():
    assert set(CONFIGS) == {name for _, name, _ in tables()}


@pytest.mark.parametrize(("path", "name", "table"), tables(), ids=lambda v: getattr(v, "name", None) or str(v)[:20])
def test_table_matches_the_config(path, name, table):
    assert table.rstrip("\n") == options_markdown(CONFIGS[name]), f"{path.name}: ### {name} is stale (--write)"


if __name__ == "__main__" and "--write" in sys.argv:
    for path in sorted(DOCS.glob("*.md")):
        text = path.read_text()
        new = TABLE.sub(lambda m: f"### {m.group(1)}\n\n{options_markdown(CONFIGS[m.group(1)])}\n", text)
        if new != text:
            path.write_text(new)
            print(f"updated {path}")
