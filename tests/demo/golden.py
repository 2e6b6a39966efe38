"""A digest of a ``leaf demo --quick`` run: every number and every result file, for before/after checks.

``python tests/demo/golden.py RUN_DIR CACHE_DIR > tests/demo/golden_quick.json`` records it;
``tests/demo/test_pipeline.py`` compares a fresh run against the recorded one, so a
refactor that changes any detection, counterfactual, label, generation or accuracy is caught.

Left out on purpose: sidecars (``*.meta.json``, which carry the schema version),
training logs (``metrics.*``, which hold throughput), model weights and the HTML
report (its layout is not a result), timings and the models' cache location.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

SKIP_SUFFIXES = (".meta.json", ".png", ".html", ".md")


def result_files(run: Path) -> list[Path]:
    files = []
    for path in sorted(run.rglob("*")):
        rel = path.relative_to(run)
        if not path.is_file() or rel.parts[0] in ("results.json", "demo_settings.json"):
            continue
        if any(part.startswith("train-") for part in rel.parts) or path.name.endswith(SKIP_SUFFIXES):
            continue
        if path.suffix in (".json", ".jsonl"):
            files.append(path)
    return files


def _content(path: Path, places: dict[str, str]) -> bytes:
    """The file's JSON content, canonical (keys sorted), with machine-specific folders replaced by placeholders.

    Content, not layout: the order of keys inside an object is not a result.
    """
    text = path.read_text(encoding="utf-8")
    for folder, name in places.items():
        text = text.replace(folder, name)
    if path.suffix == ".jsonl":
        objs = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        objs = [json.loads(text)]
    return "\n".join(json.dumps(o, sort_keys=True, ensure_ascii=False) for o in objs).encode("utf-8")


def digest(run: str | Path, cache: str | Path) -> dict[str, Any]:
    run = Path(run)
    places = {str(run.resolve()): "<RUN>", str(run): "<RUN>", str(Path(cache).resolve()): "<CACHE>",
              str(cache): "<CACHE>"}
    results = json.loads((run / "results.json").read_text())
    return {
        "seeds": results["seeds"],
        "summary": results["summary"],
        "files": {str(p.relative_to(run)): hashlib.sha256(_content(p, places)).hexdigest() for p in result_files(run)},
    }


if __name__ == "__main__":
    json.dump(digest(sys.argv[1], sys.argv[2]), sys.stdout, indent=1, sort_keys=True)
    print()
