"""The prediction record: a model's answer to one sample, as ``leaf evaluate --predictions`` reads it.

One JSON object per line: ``id`` (string or integer, unique in the file) and
``prediction`` (string; ``generation``, the field leaf's own generation files
use, is accepted instead), plus optionally the gold ``answer``, ``meta`` and the
``instruction``/``response`` it was made from. Read through
:func:`read_predictions`, which names file, line and field of every problem and
refuses duplicate ids (two answers to one sample cannot both be scored).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leaf.data.detections import FieldChecker
from leaf.data.records import Sample, SampleId, id_key, read_validated


@dataclass
class Prediction:
    id: SampleId
    prediction: str
    answer: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    instruction: str | None = None
    response: str | None = None

    def as_sample(self) -> Sample:
        """The sample this prediction answers, from the fields the line carries."""
        return Sample(id=self.id, instruction=self.instruction or "(not given)",
                      response=self.response or "(not given)", answer=self.answer, meta=self.meta)


def prediction_from_json(obj: Any, where: str, problems: list[str]) -> Prediction | None:
    if not isinstance(obj, dict):
        problems.append(f"{where}: expected a JSON object, got {type(obj).__name__}")
        return None
    c = FieldChecker(where, problems)
    name = "prediction" if "prediction" in obj or "generation" not in obj else "generation"
    answer = c.get(obj, "answer", (str, int, float), optional=True)
    rec = Prediction(
        id=c.get(obj, "id", (str, int)), prediction=c.get(obj, name, (str,), default=""),
        answer=None if answer is None else str(answer), meta=c.get(obj, "meta", (dict,), optional=True, default={}),
        instruction=c.get(obj, "instruction", (str,), optional=True),
        response=c.get(obj, "response", (str,), optional=True),
    )
    return rec if c.ok else None


def read_predictions(path: str | Path) -> list[Prediction]:
    """Every prediction of a file, validated; duplicate ids are refused."""
    return read_validated(path, prediction_from_json, lambda p: id_key(p.id), what="id", plural="predictions")


__all__ = ["Prediction", "prediction_from_json", "read_predictions"]
