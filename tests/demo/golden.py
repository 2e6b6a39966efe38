"""A snapshot of a ``leaf demo --quick`` run: every number and every result file, for before/after checks.

``python tests/demo/golden.py RUN_DIR CACHE_DIR`` records it into
``tests/demo/golden_quick.json.gz``; ``tests/demo/test_pipeline.py`` compares a
fresh run against the recorded one with :func:`differences`, so a change that
alters any detection, counterfactual, label, generation or accuracy is caught.

What "the same" means:

* the results (``results.json``: accuracies, detection quality, attention,
  counts) are equal exactly;
* in every result file, every string, integer, boolean, key and list length is
  equal exactly (ids, texts, flags, spans, counterfactual records, verdicts);
* floating-point values (saliencies, scores, losses) are equal to 1 % of the
  largest magnitude that field takes in that file: a change of summation order
  (chunked output heads, another thread count) moves the last digits of small
  gradients, which is not a change of result.

Left out on purpose: sidecars (``*.meta.json``, which carry the schema version),
training logs (``metrics.*``, which hold throughput), model weights and the HTML
report (its layout is not a result), timings and the models' cache location.
Machine-specific folders inside files are replaced by placeholders.
"""

from __future__ import annotations

import gzip
import json
import math
import sys
from pathlib import Path
from typing import Any

SKIP_SUFFIXES = (".meta.json", ".png", ".html", ".md")
GOLDEN = Path(__file__).with_name("golden_quick.json.gz")
RELATIVE = 1e-2


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


def _content(path: Path, places: dict[str, str]) -> Any:
    text = path.read_text(encoding="utf-8")
    for folder, name in places.items():
        text = text.replace(folder, name)
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return json.loads(text)


def snapshot(run: str | Path, cache: str | Path) -> dict[str, Any]:
    run = Path(run)
    places = {str(run.resolve()): "<RUN>", str(run): "<RUN>", str(Path(cache).resolve()): "<CACHE>",
              str(cache): "<CACHE>"}
    results = json.loads((run / "results.json").read_text())
    return {
        "seeds": results["seeds"],
        "summary": results["summary"],
        "files": {str(p.relative_to(run)): _content(p, places) for p in result_files(run)},
    }


def _float_scales(obj: Any, key: str = "", out: dict[str, float] | None = None) -> dict[str, float]:
    """The largest magnitude of the floats stored under each key name."""
    out = {} if out is None else out
    if isinstance(obj, dict):
        for k, v in obj.items():
            _float_scales(v, k, out)
    elif isinstance(obj, list):
        for v in obj:
            _float_scales(v, key, out)
    elif isinstance(obj, float) and math.isfinite(obj):
        out[key] = max(out.get(key, 0.0), abs(obj))
    return out


def _diff(want: Any, got: Any, where: str, key: str, scales: dict[str, float], found: list[str]) -> None:
    if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        if not math.isclose(want, got, rel_tol=0.0, abs_tol=RELATIVE * scales.get(key, abs(want)) + 1e-12):
            found.append(f"{where}: {want!r} -> {got!r}")
    elif type(want) is not type(got):
        found.append(f"{where}: {type(want).__name__} -> {type(got).__name__}")
    elif isinstance(want, dict):
        if set(want) != set(got):
            found.append(f"{where}: keys {sorted(set(want) ^ set(got))}")
        for k in want.keys() & got.keys():
            _diff(want[k], got[k], f"{where}.{k}", k, scales, found)
    elif isinstance(want, list):
        if len(want) != len(got):
            found.append(f"{where}: {len(want)} items -> {len(got)}")
        for i, (a, b) in enumerate(zip(want, got)):
            _diff(a, b, f"{where}[{i}]", key, scales, found)
    elif want != got:
        found.append(f"{where}: {want!r} -> {got!r}")


def differences(golden: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """Where ``got`` differs from ``golden`` (empty: the same run); results exact, files as the module says."""
    found = [f"results: {part} differs" for part in ("seeds", "summary") if golden[part] != got[part]]
    for name in sorted(golden["files"].keys() | got["files"].keys()):
        if name not in golden["files"] or name not in got["files"]:
            found.append(f"{name}: only in the {'recorded' if name in golden['files'] else 'new'} run")
            continue
        scales = _float_scales(golden["files"][name])
        _diff(golden["files"][name], got["files"][name], name, "", scales, found)
    return found


def load_golden() -> dict[str, Any]:
    return json.loads(gzip.decompress(GOLDEN.read_bytes()))


if __name__ == "__main__":
    data = json.dumps(snapshot(sys.argv[1], sys.argv[2]), sort_keys=True, ensure_ascii=False).encode("utf-8")
    GOLDEN.write_bytes(gzip.compress(data, 9, mtime=0))
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes)")
