"""Read the parts of a run folder that exist; name the ones that do not.

Layout (every part optional)::

    DIR/detections.jsonl (+ detections.jsonl.meta.json)   leaf detect
    DIR/counterfactuals.jsonl                             leaf prune
    DIR/train*/metrics.jsonl (+ leaf_config.json)         leaf distill
    DIR/eval/*.json                                       leaf evaluate
    DIR/analysis/attention.json + *.png                   leaf analyze

A part that exists but cannot be read is not fatal: the page shows the error
instead of the part, so one bad file never hides the rest of a run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from leaf.data.counterfactuals import Counterfactual, read_counterfactuals
from leaf.data.detections import Detection, read_detections
from leaf.data.jsonl import iter_jsonl
from leaf.data.records import DataError, id_key

T = TypeVar("T")


@dataclass
class TrainingRun:
    name: str
    metrics: list[dict[str, Any]]
    config: dict[str, Any] | None = None


@dataclass
class RunData:
    """What was found in a run folder (``None`` / empty = absent) and what went wrong."""

    root: Path
    detections: list[Detection] | None = None
    detections_meta: dict[str, Any] | None = None
    counterfactuals: list[Counterfactual] | None = None
    training: list[TrainingRun] = field(default_factory=list)
    evaluations: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    attention: dict[str, Any] | None = None
    figures: list[tuple[str, bytes]] = field(default_factory=list)
    instructions: dict[str, str] = field(default_factory=dict)  # sample id -> instruction text
    missing: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)  #: part -> why its file was left out

    def has(self, part: str) -> bool:
        """Is the part's file in the run (read, or present but unreadable)?"""
        return getattr(self, part) is not None or part in self.unreadable

    def records(self, part: str) -> list[Any]:
        """The part's typed records; ``ValueError`` naming the problem when its file could not be read."""
        if part in self.unreadable:
            raise ValueError(self.unreadable[part])
        return list(getattr(self, part) or [])


def _jsonl(path: Path, errors: list[str]) -> list[dict[str, Any]] | None:
    rows = []
    for lineno, obj, err in iter_jsonl(path):
        if err or not isinstance(obj, dict):
            errors.append(f"{path}:{lineno}: {err or 'expected a JSON object'} (line skipped)")
            continue
        rows.append(obj)
    return rows


def _records(read: Callable[[Path], list[T]], path: Path, run: RunData, part: str) -> list[T] | None:
    """A record file through its typed reader; a malformed file is left out and its problems listed."""
    try:
        return read(path)
    except DataError as exc:
        run.errors.extend(f"{p} (file left out)" for p in exc.problems)
        run.unreadable[part] = exc.problems[0]
        return None


def _json(path: Path, errors: list[str]) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        errors.append(f"{path}: cannot read: {exc}")
        return None


def _instructions_from(path: Path, errors: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    if path.is_file():
        for row in _jsonl(path, errors) or []:
            if isinstance(row.get("instruction"), str) and "id" in row:
                out[id_key(row["id"])] = row["instruction"]
    return out


def load_run(root: str | Path, samples: str | Path | None = None) -> RunData:
    """Everything :func:`leaf.report.html.build_page` shows, from ``root``."""
    from leaf.analyze.spans import restore_original

    root = Path(root)
    run = RunData(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: run folder not found")

    det = root / "detections.jsonl"
    if det.is_file():
        run.detections = _records(read_detections, det, run, "detections")
        meta = det.with_name(det.name + ".meta.json")
        if meta.is_file():
            run.detections_meta = _json(meta, run.errors)
    else:
        run.missing.append("detections.jsonl (leaf detect)")

    cf = root / "counterfactuals.jsonl"
    if cf.is_file():
        run.counterfactuals = _records(read_counterfactuals, cf, run, "counterfactuals")
    else:
        run.missing.append("counterfactuals.jsonl (leaf prune)")

    for metrics in sorted(root.glob("train*/metrics.jsonl")):
        rows = _jsonl(metrics, run.errors) or []
        config_path = metrics.parent / "leaf_config.json"
        config = _json(config_path, run.errors) if config_path.is_file() else None
        run.training.append(TrainingRun(metrics.parent.name, rows, config if isinstance(config, dict) else None))
    if not run.training:
        run.missing.append("train*/metrics.jsonl (leaf distill)")

    for path in sorted((root / "eval").glob("*.json")):
        obj = _json(path, run.errors)
        if isinstance(obj, dict) and isinstance(obj.get("benchmarks"), dict):
            run.evaluations.append((path.stem, obj))
        elif obj is not None:
            run.errors.append(f"{path}: not an evaluation result (no 'benchmarks' object)")
    if not run.evaluations:
        run.missing.append("eval/*.json (leaf evaluate)")

    analysis = root / "analysis"
    att = analysis / "attention.json"
    if att.is_file():
        obj = _json(att, run.errors)
        run.attention = obj if isinstance(obj, dict) else None
    else:
        run.missing.append("analysis/attention.json (leaf analyze)")
    for png in sorted(analysis.glob("*.png")):
        data = png.read_bytes()
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            run.figures.append((png.name, data))
        else:
            run.errors.append(f"{png}: not a PNG file (skipped)")

    # Instruction texts, to show the exact text between detection tokens.
    for rec in run.counterfactuals or []:
        if rec.level == "instruction" and rec.intervention in ("delete", "none"):
            original = restore_original(rec.instruction, [r.to_json() for r in rec.removed])
            run.instructions[id_key(rec.source_id if rec.source_id is not None else rec.id)] = original
    candidates = [Path(samples)] if samples else []
    settings = (run.detections_meta or {}).get("settings", {}) if isinstance(run.detections_meta, dict) else {}
    for key in ("data", "samples"):
        if isinstance(settings.get(key), str):
            candidates.append(Path(settings[key]))
    for path in candidates:
        run.instructions.update(_instructions_from(path, run.errors))
    return run
