"""Turn a training corpus into leaf's sample JSONL (``leaf data convert``).

Known corpora (the paper's), each by name, ``NAME=PATH`` for a local copy, or
recognised from its columns when a bare ``PATH`` is given:

* ``numinamath-cot`` (``AI-MO/NuminaMath-CoT``): ``problem`` -> instruction,
  ``solution`` -> response, the last ``\\boxed{}`` of the solution -> answer,
  ``source`` -> meta.source;
* ``acecode-87k`` (``TIGER-Lab/AceCode-87K``): ``question`` -> instruction, the
  best-passing completion in ``inferences`` -> response (records without one
  are skipped), ``test_cases`` -> meta.tests (asserts, for the code checker);
* ``hotpotqa`` (``hotpotqa/hotpot_qa``, ``distractor``): passages + question ->
  instruction (the evaluation prompt), "The answer is X." -> response, answer.

Any other dataset converts with a column mapping, ``--field
instruction=COL,response=COL[,answer=COL][,id=COL]`` (a mapping also
overrides the columns a known corpus uses). Records whose instruction or
response comes out empty are skipped and counted, never written invalid.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leaf.config import Summary, make
from leaf.data.config import ConvertConfig
from leaf.data.records import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Corpus:
    name: str
    hub: str
    config: str | None
    split: str
    columns: frozenset[str]  # what identifies it in a local file
    adapt: Callable[[dict[str, Any]], dict[str, Any]]


def _numina(r: dict[str, Any]) -> dict[str, Any]:
    from leaf.data.answers import last_boxed

    out: dict[str, Any] = {"instruction": r["problem"], "response": r["solution"]}
    boxed = last_boxed(str(r["solution"]))
    if boxed is not None and boxed.strip():
        out["answer"] = boxed.strip()
    if r.get("source"):
        out["meta"] = {"source": r["source"]}
    return out


def _acecode(r: dict[str, Any]) -> dict[str, Any]:
    inferences = r.get("inferences") or []
    best = max(inferences, key=lambda x: float(x.get("pass_rate") or 0.0), default=None)
    response = ""
    if best is not None and float(best.get("pass_rate") or 0.0) > 0:
        response = str(best.get("completion") or "")
    tests = r.get("test_cases") or r.get("tests") or []
    if isinstance(tests, str):
        tests = json.loads(tests)
    meta: dict[str, Any] = {"tests": list(tests)}
    if r.get("source"):
        meta["source"] = r["source"]
    if best is not None and response:
        meta["response_from"] = best.get("model_name")
        meta["response_pass_rate"] = float(best.get("pass_rate") or 0.0)
    return {"id": r.get("id"), "instruction": r["question"], "response": response, "meta": meta}


def _hotpot(r: dict[str, Any]) -> dict[str, Any]:
    from leaf.data.benchmarks import hotpot_sample

    s = hotpot_sample(r, 0)
    return {"id": s.id, "instruction": s.instruction, "response": s.response, "answer": s.answer, "meta": s.meta}


CORPORA: dict[str, Corpus] = {
    c.name: c
    for c in (
        Corpus("numinamath-cot", "AI-MO/NuminaMath-CoT", None, "train", frozenset({"problem", "solution"}), _numina),
        Corpus("acecode-87k", "TIGER-Lab/AceCode-87K", None, "train", frozenset({"question", "test_cases"}), _acecode),
        Corpus(
            "hotpotqa",
            "hotpotqa/hotpot_qa",
            "distractor",
            "train",
            frozenset({"question", "answer", "context"}),
            _hotpot,
        ),
    )
}
ALIASES = {c.hub.lower(): c.name for c in CORPORA.values()}


def parse_fields(text: str | None) -> dict[str, str]:
    """``"instruction=problem,response=solution"`` -> ``{"instruction": "problem", ...}``."""
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        key, sep, col = part.partition("=")
        key, col = key.strip(), col.strip()
        if not sep or not key or not col:
            raise DataError([f"--field: expected TARGET=COLUMN, got {part!r}"])
        if key not in ("id", "instruction", "response", "answer"):
            raise DataError([f"--field: unknown target {key!r}; use id, instruction, response, answer"])
        out[key] = col
    return out


def _mapped(r: dict[str, Any], fields: dict[str, str], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, col in fields.items():
        if col not in r:
            raise DataError([f"{where}: column {col!r} (for {key}) not found; columns: {', '.join(sorted(r))}"])
        out[key] = r[col]
    return out


def _records(
    dataset: str, split: str | None, subset: str | None
) -> tuple[Corpus | None, Iterable[dict[str, Any]], str]:
    """(known corpus or None, raw records, where they came from)."""
    from leaf.data.benchmarks import read_records

    name, _, path = dataset.partition("=")
    key = ALIASES.get(name.lower(), name.lower())
    if key in CORPORA and path:
        c = CORPORA[key]
        return c, read_records(path, split or c.split), path
    p = Path(dataset)
    if p.exists():
        rows = read_records(p, split)
        cols = set(rows[0]) if rows else set()
        corpus = next((c for c in CORPORA.values() if c.columns <= cols), None)
        return corpus, rows, str(p)
    import datasets

    corpus = CORPORA.get(key)
    hub = corpus.hub if corpus else dataset
    try:
        ds = datasets.load_dataset(
            hub, subset or (corpus.config if corpus else None), split=split or (corpus.split if corpus else "train")
        )
    except Exception as exc:
        raise DataError(
            [
                f"{dataset}: not a local file and could not load {hub} from the Hub "
                f"({type(exc).__name__}: {exc}); download it and pass NAME=PATH"
            ]
        ) from None
    return corpus, ds, hub


@dataclass
class ConvertSummary(Summary):
    out: Path
    written: int
    corpus: str | None
    skipped: dict[str, int]

    def line(self) -> str:
        kind = f" as {self.corpus}" if self.corpus else ""
        n = sum(self.skipped.values())
        return f"wrote {self.written} samples{kind} to {self.out}" + (f" (skipped {n}: {self.skipped})" if n else "")


def convert(config: ConvertConfig | None = None, **kwargs: Any) -> ConvertSummary:
    """``leaf data convert`` as a function: a :class:`ConvertConfig` or its fields as keyword arguments."""
    cfg = make(ConvertConfig, config, kwargs, "leaf.data.convert()")
    report = convert_dataset(cfg.dataset, cfg.out, fields=cfg.field, split=cfg.split, subset=cfg.subset,
                             limit=cfg.limit)
    return ConvertSummary(cfg.out, report["written"], report["corpus"], report["skipped"])


def convert_dataset(
    dataset: str,
    to: str | Path,
    *,
    fields: dict[str, str] | str | None = None,
    split: str | None = None,
    subset: str | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Write ``dataset`` as sample JSONL to ``to``.

    Returns ``{"written": n, "skipped": {reason: n}, "corpus": name or None}``.
    """
    fields = parse_fields(fields) if isinstance(fields, str) or fields is None else dict(fields)
    corpus, rows, where = _records(dataset, split, subset)
    if corpus is None and not {"instruction", "response"} <= set(fields):
        raise DataError(
            [
                f"{where}: not a known corpus ({', '.join(CORPORA)}); "
                "give --field instruction=COLUMN,response=COLUMN[,answer=COLUMN]"
            ]
        )
    to = Path(to)
    to.parent.mkdir(parents=True, exist_ok=True)
    skipped: Counter[str] = Counter()
    seen: set[str] = set()
    written = 0
    tmp = to.with_name(to.name + ".part")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            for i, raw in enumerate(_limited(rows, limit)):
                raw = dict(raw)
                here = f"{where}: record {i + 1}"
                try:
                    rec = corpus.adapt(raw) if corpus is not None else {}
                except KeyError as exc:
                    raise DataError(
                        [f"{here}: field {exc.args[0]!r}: missing (is this really {getattr(corpus, 'name', dataset)}?)"]
                    ) from None
                rec.update(_mapped(raw, fields, here))
                rec = _clean(rec, i)
                reason = _invalid(rec)
                if reason:
                    skipped[reason] += 1
                    continue
                sid = str(rec["id"])
                if sid in seen:
                    rec["id"] = sid = f"{sid}-{i}"
                seen.add(sid)
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                written += 1
    except BaseException:
        tmp.unlink(missing_ok=True)  # never leave a half-written output behind
        raise
    tmp.replace(to)
    if skipped:
        log.warning("%s: skipped %d record(s): %s", where, sum(skipped.values()), dict(skipped))
    return {"written": written, "skipped": dict(skipped), "corpus": corpus.name if corpus else None}


def _limited(rows: Iterable[dict[str, Any]], limit: int | None) -> Iterator[dict[str, Any]]:
    for i, r in enumerate(rows):
        if limit is not None and i >= limit:
            return
        yield r


def _clean(rec: dict[str, Any], i: int) -> dict[str, Any]:
    out: dict[str, Any] = {"id": rec.get("id") if rec.get("id") not in (None, "") else i}
    if not isinstance(out["id"], (str, int)) or isinstance(out["id"], bool):
        out["id"] = str(out["id"])
    for key in ("instruction", "response"):
        value = rec.get(key)
        out[key] = "" if value is None else str(value)
    if rec.get("answer") not in (None, ""):
        ans = rec["answer"]
        out["answer"] = ans if isinstance(ans, (str, int, float)) and not isinstance(ans, bool) else str(ans)
    if rec.get("meta"):
        out["meta"] = rec["meta"]
    return out


def _invalid(rec: dict[str, Any]) -> str | None:
    if not rec["instruction"].strip():
        return "empty instruction"
    if not rec["response"].strip():
        return "empty response"
    return None
