"""``leaf evaluate`` as a Python API: generate, score, write results, compare runs.

Three ways in:

* :func:`evaluate` with ``model`` + ``benchmark`` -- generate answers (resumable,
  one JSONL of generations per benchmark beside the results), score them with
  the benchmark's checker, write ``results.json``;
* :func:`evaluate` with ``predictions`` + ``task`` -- score generations made
  elsewhere (one JSON object per line: ``id`` and ``prediction``, plus the
  gold ``answer``/``meta`` on the line or from ``benchmark``);
* :func:`compare_table` -- a table of several results files laid out like the
  paper's (rows = models, columns = benchmarks, averages).

Results schema (docs/evaluation.md)::

    {"model": str,
     "benchmarks": {NAME: {"accuracy": float, "correct": int, "total": int, "task": str, ...}},
     "records": [{"benchmark", "id", "correct", "prediction", "answer", ...}]}
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leaf.config import ConfigError, Summary, make, to_dict
from leaf.data.jsonl import write_atomic
from leaf.data.predictions import read_predictions
from leaf.data.records import DataError, Sample, id_key
from leaf.evaluate.arms import arms_text, compare_arms, markdown_table, parse_arm
from leaf.evaluate.config import EvaluateConfig

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- scoring


def score(
    samples: Sequence[Sample],
    predictions: dict[str, str],
    task: str,
    *,
    benchmark: str,
    workers: int = 4,
    code_timeout: float = 10.0,
    answer_pattern: str | None = None,
    code_sandbox: str = "bwrap",
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(summary, records)`` for the samples that have a prediction (others count as wrong)."""
    from leaf.checkers import checker_for

    checker: Any = checker_for(task, code_timeout=code_timeout, answer_pattern=answer_pattern, code_sandbox=code_sandbox)
    preds = [predictions.get(id_key(s.id)) for s in samples]

    def one(k: int) -> dict[str, Any]:
        s, pred = samples[k], preds[k]
        rec: dict[str, Any] = {"benchmark": benchmark, "id": s.id, "prediction": pred, "answer": s.answer}
        if pred is None:
            rec["correct"] = False
            rec["missing"] = True
            return rec
        try:
            if task == "code":
                res = checker.run(pred, s)
                rec["correct"], rec["status"] = res.passed, res.status
            else:
                rec["correct"] = bool(checker.check(pred, s))
                if task == "qa":
                    rec["f1"] = checker.f1(pred, s)
        except ValueError as exc:  # the sample lacks what its checker needs (gold answer, tests)
            raise DataError([f"{benchmark}: {exc}"]) from None
        return rec

    if task == "code" and workers > 1:
        # Each check is its own process; threads only wait on them.
        with ThreadPoolExecutor(workers) as pool:
            records = list(pool.map(one, range(len(samples))))
    else:
        # math-verify's timeouts need the main thread: score serially here.
        records = [one(k) for k in range(len(samples))]
    correct = sum(r["correct"] for r in records)
    summary: dict[str, Any] = {
        "accuracy": correct / len(records) if records else 0.0,
        "correct": correct,
        "total": len(records),
        "task": task,
    }
    if task == "qa":
        summary["f1"] = sum(r.get("f1", 0.0) for r in records) / len(records) if records else 0.0
    missing = sum(1 for r in records if r.get("missing"))
    if missing:
        summary["missing"] = missing
        log.warning("%s: %d of %d samples have no prediction; scored wrong", benchmark, missing, len(records))
    return summary, records


# ----------------------------------------------------------------------------- evaluation


def generations_path(out: Path, benchmark: str) -> Path:
    return out.parent / f"{out.stem}.generations" / f"{benchmark}.jsonl"


@dataclass
class EvaluateSummary(Summary):
    """What ``evaluate`` did: the results written to ``out``, or a comparison table of results files."""

    out: Path | None
    results: dict[str, Any] = field(default_factory=dict)
    table: str = ""

    def line(self) -> str:
        if self.out is None:
            return self.table
        return f"{summary_table(self.results)}\nwrote {self.out}"


def evaluate(config: EvaluateConfig | None = None, **kwargs: Any) -> EvaluateSummary:
    """Run an evaluation (see the module doc); write the results and return them in a summary."""
    cfg = make(EvaluateConfig, config, kwargs, "leaf.evaluate()")
    if cfg.compare:
        return EvaluateSummary(None, table=compare_table(cfg.compare))
    if cfg.arm:
        return _compare_arms(cfg)
    assert cfg.out is not None
    results = _load_existing(cfg.out, cfg.name or cfg.model or str(cfg.predictions))
    if cfg.predictions is not None:
        name, task, summary, records = _score_predictions(cfg)
        results["benchmarks"][name] = summary
        results["records"] = [r for r in results["records"] if r.get("benchmark") != name] + records
    else:
        _generate_and_score(cfg, results)
    from leaf.distributed import barrier, rank_and_world

    rank, world = rank_and_world()
    results["config"] = to_dict(cfg)
    if rank == 0:  # several processes: each generated its share; process 0 scored the merged generations
        write_atomic(cfg.out, json.dumps(results, ensure_ascii=False, indent=1) + "\n")
    if world > 1:
        barrier()
        results = json.loads(cfg.out.read_text(encoding="utf-8"))
    return EvaluateSummary(cfg.out, results)


def _load_existing(out: Path, model: str) -> dict[str, Any]:
    """Earlier results of the same model in ``out`` are kept (benchmarks run again are replaced).

    A results file holds one model: writing another model's results into it is
    refused rather than dropping what it holds, and so is a file that is not a
    results file (a damaged one is never silently started afresh).
    """
    if not out.exists():
        return {"model": model, "benchmarks": {}, "records": []}
    try:
        old = json.loads(out.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError([f"{out}: exists but is not a results file ({exc}); move it away or choose another --out"]) from None
    if not (isinstance(old, dict) and isinstance(old.get("benchmarks"), dict) and isinstance(old.get("records", []), list)):
        raise DataError([f"{out}: exists but is not a results file (no 'benchmarks'); choose another --out"])
    if old.get("model") != model:
        raise DataError([f"{out}: holds the results of model {old.get('model')!r}; the results of {model!r} go to "
                         "another --out (compare them with --compare)"])
    old.setdefault("records", [])
    return old


def _score_predictions(cfg: EvaluateConfig) -> tuple[str, str, dict[str, Any], list[dict[str, Any]]]:
    from leaf.data.benchmarks import load_benchmark

    assert cfg.predictions is not None
    rows = read_predictions(cfg.predictions)
    preds = {id_key(r.id): r.prediction for r in rows}
    if cfg.benchmark:
        if len(cfg.benchmark) != 1:
            raise DataError(["--predictions scores one --benchmark at a time"])
        name, task, samples = load_benchmark(cfg.benchmark[0], task=cfg.task, limit=cfg.limit)
        unknown = sorted(set(preds) - {id_key(s.id) for s in samples})
        if unknown:
            raise DataError([f"{cfg.predictions}: id {u!r} is not in {name}" for u in unknown[:20]])
    else:
        assert cfg.task is not None
        task = cfg.task
        name = cfg.predictions.name.removesuffix(".jsonl")
        samples = [r.as_sample() for r in rows]
    summary, records = score(samples, preds, task, benchmark=name, workers=cfg.workers, code_timeout=cfg.code_timeout,
                             answer_pattern=cfg.answer_pattern, code_sandbox=cfg.code_sandbox)
    return name, task, summary, records


def _generate_and_score(cfg: EvaluateConfig, results: dict[str, Any]) -> None:
    from leaf.checkers import check_code_sandbox
    from leaf.data.benchmarks import BENCHMARKS, load_benchmark
    from leaf.distributed import rank_and_world
    from leaf.generation import decoding_options, generate_to_jsonl, load_generator

    assert cfg.model is not None and cfg.out is not None
    loaded = [
        load_benchmark(spec, task=cfg.task, limit=cfg.limit) for spec in cfg.benchmark
    ]  # fail before loading a model
    for _, task, _ in loaded:
        check_code_sandbox(task, cfg.code_sandbox)
    _check_special_tokens(cfg, loaded)
    model, tok = load_generator(cfg.model, backend=cfg.backend, dtype=cfg.dtype, device=cfg.device)
    for name, task, samples in loaded:
        budget = cfg.max_new_tokens or (BENCHMARKS[name].max_new_tokens if name in BENCHMARKS else 1024)
        settings = {
            "model": cfg.model,
            "benchmark": name,
            "max_new_tokens": budget,
            **decoding_options(cfg),
        }
        records = [{"id": s.id, "instruction": s.instruction} for s in samples]
        gens = generate_to_jsonl(
            model,
            tok,
            records,
            generations_path(cfg.out, name),
            settings=settings,
            overwrite=cfg.overwrite,
            max_new_tokens=budget,
            batch_size=cfg.batch_size,
            max_tokens_per_batch=cfg.max_tokens_per_batch,
            progress=True,
            **decoding_options(cfg),
        )
        if rank_and_world()[0] != 0:
            continue  # the generations are merged; process 0 scores them
        summary, recs = score(samples, gens, task, benchmark=name, workers=cfg.workers, code_timeout=cfg.code_timeout,
                              answer_pattern=cfg.answer_pattern, code_sandbox=cfg.code_sandbox)
        results["benchmarks"][name] = summary
        results["records"] = [r for r in results["records"] if r.get("benchmark") != name] + recs
        log.info("%s: %.2f%% (%d/%d)", name, 100 * summary["accuracy"], summary["correct"], summary["total"])


# ----------------------------------------------------------------------------- tables


def _compare_arms(cfg: EvaluateConfig) -> EvaluateSummary:
    """``--arm``: the arms-over-seeds tables, and their JSON at ``--out`` when given."""
    arms = dict(parse_arm(a) for a in cfg.arm)
    if cfg.out is not None and any(Path(f).resolve() == cfg.out.resolve() for files in arms.values() for f in files):
        raise ConfigError(f"--out {cfg.out} is one of the arms' results files (inputs are never overwritten)")
    result = compare_arms(arms)
    table = arms_text(result)
    if cfg.out is not None:
        write_atomic(cfg.out, json.dumps(result, indent=2) + "\n")
        table += f"\nwrote {cfg.out}"
    return EvaluateSummary(None, results=result, table=table)


def compare_table(paths: Sequence[str | Path]) -> str:
    """A Markdown table: rows = results files (models), columns = benchmarks (paper order), averages in %."""
    from leaf.data.benchmarks import DISPLAY, PAPER_ORDER

    runs: list[tuple[str, Path, dict[str, Any]]] = []
    for p in paths:
        p = Path(p)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
            benches = data["benchmarks"]
        except FileNotFoundError:
            raise DataError([f"{p}: file not found"]) from None
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DataError([f"{p}: not a results file (no 'benchmarks')"]) from None
        runs.append((str(data.get("model") or p.stem), p, benches))
    labels = [m for m, _, _ in runs]
    labels = [f"{m} ({p.stem})" if labels.count(m) > 1 else m for m, p, _ in runs]
    names = {n for _, _, b in runs for n in b}
    columns = [n for n in PAPER_ORDER if n in names] + sorted(names - set(PAPER_ORDER))
    task_of = {n: b[n].get("task", "?") for _, _, b in runs for n in b}
    tasks = list(dict.fromkeys(task_of[n] for n in columns))
    header = ["Model"] + [DISPLAY.get(n, n) for n in columns]
    if len(tasks) > 1:
        header += [f"Avg {t}" for t in tasks]
    header.append("Avg")
    rows = []
    for label, (_, _, benches) in zip(labels, runs):
        cells = [label]
        accs = {n: 100 * float(benches[n]["accuracy"]) for n in columns if n in benches}
        cells += [f"{accs[n]:.2f}" if n in accs else "-" for n in columns]
        if len(tasks) > 1:
            for t in tasks:
                vals = [accs[n] for n in columns if task_of[n] == t and n in accs]
                cells.append(f"{sum(vals) / len(vals):.2f}" if vals else "-")
        cells.append(f"{sum(accs.values()) / len(accs):.2f}" if accs else "-")
        rows.append(cells)
    return "\n".join(markdown_table(header, rows))


def summary_table(results: dict[str, Any]) -> str:
    """One line per benchmark of a results dict (what the CLI prints after a run)."""
    lines = []
    for name, b in results["benchmarks"].items():
        extra = f"  F1 {100 * b['f1']:.2f}" if "f1" in b else ""
        lines.append(f"{name:<16} {b['task']:<5} {100 * b['accuracy']:6.2f}%  ({b['correct']}/{b['total']}){extra}")
    return "\n".join(lines)


def _check_special_tokens(cfg: Any, loaded: list[tuple[str, str, list[Any]]]) -> None:
    """Control-token strings in the benchmarks' instructions: warned about, escaped or refused, before a model loads."""
    from leaf.data.records import record_locations
    from leaf.data.special import apply_policy, scan
    from leaf.models import load_tokenizer

    tok = load_tokenizer(cfg.model)
    hits = []
    for spec, (name, _task, samples) in zip(cfg.benchmark, loaded):
        def where(spec: str = spec, name: str = name) -> dict[str, str]:
            return record_locations(spec) if Path(spec).is_file() else {}
        hits += scan(samples, {"model": tok}, where, fields=("instruction",))
    apply_policy(cfg.special_tokens_in_text, hits)
