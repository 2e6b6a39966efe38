"""Dataset references: samples read through ``datasets.load_dataset`` wherever a samples JSONL is accepted.

Syntax (docs/data-format.md)::

    hf:NAME[:CONFIG][@SPLIT][#TARGET=COLUMN,...]
    hf://datasets/NAME[:CONFIG][@SPLIT][#TARGET=COLUMN,...]     (the same, huggingface_hub's URL form)

* ``NAME`` -- a Hub dataset id (``OWNER/NAME``) or anything else ``load_dataset``
  takes as its first argument: a local dataset folder, a data file (``.jsonl``,
  ``.json``, ``.parquet``, ``.csv``; loaded with the matching builder), or a
  builder name;
* ``CONFIG`` -- the dataset's configuration (``load_dataset``'s ``name``);
* ``SPLIT`` -- a ``datasets`` split expression, e.g. ``train``, ``test[:500]``,
  ``train[10%:]`` (default ``train``);
* ``#TARGET=COLUMN,...`` -- which columns hold the sample fields when the
  dataset uses other names (targets: ``id``, ``instruction``, ``response``,
  ``answer``, ``meta``), e.g. ``#instruction=problem,response=solution``.
  Other columns are kept as they are (a column named like a target is
  replaced by the mapped one).

Rows then go through the same validation as a JSONL line; a problem names the
reference, the row (its 0-based index in the split, as ``ds[i]``) and the
field. A row without an ``id`` column gets its row index as id.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PREFIX = "hf:"
TARGETS = ("id", "instruction", "response", "answer", "meta")
_FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text"}


class RefError(ValueError):
    """A malformed dataset reference (the message names it)."""


@dataclass(frozen=True)
class DatasetRef:
    """A parsed ``hf:`` reference."""

    text: str  #: the reference as written (canonical ``hf:`` form)
    name: str
    config: str | None = None
    split: str = "train"
    fields: dict[str, str] = field(default_factory=dict)  #: target -> column

    def __str__(self) -> str:
        return self.text

    @property
    def label(self) -> str:
        """A short name (for file names and tables): the dataset's last path part and its split."""
        base = Path(self.name).name.removesuffix(".gz").removesuffix(".jsonl").removesuffix(".json")
        base = base.removesuffix(".parquet").removesuffix(".csv")
        split = re.split(r"[\[+]", self.split, maxsplit=1)[0].strip()
        return re.sub(r"[^\w.-]+", "_", f"{base}-{split}" if split != "train" else base)


def is_ref(value: str | Path | None) -> bool:
    """Is ``value`` a dataset reference (rather than a file path)?"""
    return value is not None and str(value).startswith(PREFIX)


def parse_ref(value: str | Path) -> DatasetRef:
    """Parse ``hf:NAME[:CONFIG][@SPLIT][#TARGET=COLUMN,...]`` (also ``hf://datasets/...``).

    A ``Path`` collapses ``//``, so ``hf:/datasets/NAME`` reads as ``hf://datasets/NAME``.
    """
    text = str(value)
    if not text.startswith(PREFIX):
        raise RefError(f"{text}: not a dataset reference (expected {PREFIX}NAME[:CONFIG][@SPLIT])")
    body = text[len(PREFIX):]
    for url in ("//datasets/", "/datasets/"):
        if body.startswith(url):
            body = body[len(url):]
            break
    body, _, mapping = body.partition("#")
    head, at, split = body.partition("@")
    name, colon, config = head.partition(":")
    if not name.strip():
        raise RefError(f"{text}: no dataset name (expected {PREFIX}NAME[:CONFIG][@SPLIT])")
    if colon and not config.strip():
        raise RefError(f"{text}: empty CONFIG after ':'")
    if at and not split.strip():
        raise RefError(f"{text}: empty SPLIT after '@'")
    fields = parse_fields(mapping, text) if mapping else {}
    canon = f"{PREFIX}{name}" + (f":{config}" if colon else "") + (f"@{split}" if at else "") + (f"#{mapping}" if mapping else "")
    return DatasetRef(canon, name.strip(), config.strip() if colon else None, split.strip() if at else "train", fields)


def parse_fields(text: str, where: str) -> dict[str, str]:
    """``"instruction=problem,response=solution"`` -> ``{"instruction": "problem", "response": "solution"}``."""
    out: dict[str, str] = {}
    for part in text.split(","):
        key, sep, col = part.partition("=")
        key, col = key.strip(), col.strip()
        if not sep or not key or not col:
            raise RefError(f"{where}: field mapping: expected TARGET=COLUMN, got {part!r}")
        if key not in TARGETS:
            raise RefError(f"{where}: field mapping: unknown target {key!r}; use {', '.join(TARGETS)}")
        if key in out:
            raise RefError(f"{where}: field mapping: {key!r} given twice")
        out[key] = col
    return out


def load_rows(ref: DatasetRef | str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(row index, record)`` of a reference's split, columns mapped to sample fields.

    Raises :class:`RefError` naming the reference when the dataset cannot be loaded, or when a mapped
    column does not exist.
    """
    if not isinstance(ref, DatasetRef):
        ref = parse_ref(ref)
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets comes with the install
        raise RefError(f"{ref}: reading a dataset reference needs the datasets package: pip install datasets") from None
    path, kwargs = ref.name, {}
    local = Path(ref.name)
    if local.is_file():  # a single data file: its builder (json, parquet, csv), its one split is "train"
        builder = _FILE_BUILDERS.get(Path(local.name.removesuffix(".gz")).suffix)
        if builder is None:
            raise RefError(f"{ref}: {local.name} is not a data file datasets can read ({', '.join(_FILE_BUILDERS)})")
        path, kwargs = builder, {"data_files": str(local)}
    try:
        ds = datasets.load_dataset(path, ref.config, split=ref.split, **kwargs)
    except Exception as exc:  # noqa: BLE001 - any loader failure is reported with the reference
        raise RefError(f"{ref}: could not load the dataset ({type(exc).__name__}: {exc})") from None
    if not isinstance(ds, datasets.Dataset):
        raise RefError(f"{ref}: SPLIT must name one split (got {type(ds).__name__})")
    missing = [f"{col!r} (for {key})" for key, col in ref.fields.items() if col not in ds.column_names]
    if missing:
        raise RefError(f"{ref}: column {', '.join(missing)} not found; columns: {', '.join(ds.column_names)}")
    for i, row in enumerate(ds):
        yield i, map_row(row, ref.fields, i)


def map_row(row: dict[str, Any], fields: dict[str, str], index: int) -> dict[str, Any]:
    """A dataset row as a sample record: mapped columns renamed to their targets, row index as default id."""
    out = dict(row)
    for key, col in fields.items():
        out.pop(col, None)
    for key, col in fields.items():
        out[key] = row[col]
    if out.get("id") is None:
        out["id"] = index
    return out
