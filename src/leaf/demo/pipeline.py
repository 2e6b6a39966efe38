"""``leaf demo``: the whole LeaF pipeline on a benchmark with known confounders.

For each seed: draw a distillation pool (confounded split) and held-out test
sets (confounded, counterfactual, clean); label the pool with teacher and
student; detect confounders (gradient, random, PPL; instruction and response
level) on the samples where the teacher is right and the student wrong; build
counterfactuals (span / collective; delete / mask / resample; and from the
ground-truth spans, the "oracle"); distil every arm with the same
hyper-parameters and the same number of optimiser steps; evaluate every arm on
the three test sets; measure attention on the planted spans; write the report.

Everything goes through the package's public stages (``leaf.evaluate.label``,
``leaf.detect``, ``leaf.prune``, ``leaf.distill``, ``leaf.evaluate``,
``leaf.analyze``, ``leaf.report``); this module only wires them. Outputs and
their schema: docs/demo.md.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from leaf.config import Summary, make, to_dict
from leaf.data.counterfactuals import read_counterfactuals, write_counterfactuals
from leaf.data.detections import Detection, detections_to_jsonl, read_detections
from leaf.data.jsonl import dumps, read_jsonl, write_atomic
from leaf.data.spans import overlaps
from leaf.demo.config import ARMS, ATTENTION_ARMS, CF_SETS, SPLITS, DemoConfig
from leaf.demo.metrics import detection_quality, mean_std

log = logging.getLogger(__name__)



# -- small helpers ----------------------------------------------------------------------------


def _write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


class Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str) -> Any:
        timer = self

        class _Block:
            def __enter__(self) -> None:
                self.t0 = time.perf_counter()

            def __exit__(self, *exc: object) -> None:
                timer.seconds[name] = timer.seconds.get(name, 0.0) + time.perf_counter() - self.t0

        return _Block()


def oracle_detections(gradient: list[Detection], pool: dict[str, dict[str, Any]]) -> list[Detection]:
    """Detections that flag exactly the ground-truth spans, on the student's tokens of the gradient run."""
    out = []
    for det in gradient:
        spans = pool[str(det.id)]["meta"].get("confounder_spans") or []
        tokens = [replace(t, flag=bool(t.text.strip()) and overlaps(t.start, t.end, spans)) for t in det.tokens]
        out.append(replace(det, method="oracle", tokens=tokens, spans=[(s, e) for s, e in spans]))
    return out


def evaluate_model(path: Path | str, tests: dict[str, list[dict[str, Any]]], *, batch_size: int = 64,
                   max_new_tokens: int = 64) -> dict[str, Any]:
    """Greedy answers on each test split, checked by exact match of the final answer."""
    from leaf.data.records import Sample
    from leaf.checkers import get_checker
    from leaf.generation import generate
    from leaf.models import load_model, load_tokenizer

    model, tok = load_model(str(path)), load_tokenizer(str(path))
    checker = get_checker("exact")
    out: dict[str, Any] = {}
    for split, records in tests.items():
        preds = generate(model, tok, [r["instruction"] for r in records], max_new_tokens=max_new_tokens,
                         batch_size=batch_size)
        verdicts = [checker.check(p, Sample(id=r["id"], instruction=r["instruction"], response=r["response"],
                                            answer=r["answer"])) for p, r in zip(preds, records)]
        by_family: dict[str, list[bool]] = {}
        for r, v in zip(records, verdicts):
            by_family.setdefault(r["meta"]["family"], []).append(v)
        out[split] = {
            "accuracy": sum(verdicts) / len(verdicts),
            "correct": sum(verdicts),
            "total": len(verdicts),
            "task": "exact",
            "by_family": {f: sum(v) / len(v) for f, v in by_family.items()},
        }
    return out


# -- one seed ---------------------------------------------------------------------------------


def run_seed(seed: int, cfg: DemoConfig, models: Any, out: Path, timer: Timer) -> dict[str, Any]:
    from leaf.demo.tasks import generate_mix
    from leaf.detect import detect
    from leaf.distill import DistillConfig, distill
    from leaf.evaluate import label
    from leaf.prune import prune

    assert cfg.n_train and cfg.n_test and cfg.steps and cfg.arms is not None
    families = tuple(models.config.families)
    teacher, student = str(models.teacher_dir), str(models.student_dir)
    base = 100 * (seed + 1)
    with timer("data"):
        pool = generate_mix(families, "confounded", cfg.n_train, seed=base + 1)
        extra = generate_mix(families, "confounded", cfg.n_train, seed=base + 2)
        tests = {split: generate_mix(families, split, cfg.n_test, seed=base + 3) for split in SPLITS}
        pool_path = _write(out / "pool.jsonl", pool)
        for split, recs in tests.items():
            _write(out / f"test_{split}.jsonl", recs)
    by_id = {r["id"]: r for r in pool}

    with timer("label"):
        labelled = out / "labelled.jsonl"
        label(teacher=teacher, student=student, data=pool_path, task="exact", out=labelled, max_new_tokens=64,
              batch_size=64, dtype="float32", device="cpu")
    rows = read_jsonl(labelled)
    counts = {
        "pool": len(rows),
        "teacher_correct": sum(r["teacher_correct"] for r in rows),
        "student_correct": sum(r["student_correct"] for r in rows),
        "student_wrong_teacher_right": sum(r["teacher_correct"] and not r["student_correct"] for r in rows),
    }

    det_common = dict(teacher=teacher, student=student, data=labelled, select=cfg.select, tau=cfg.tau,
                      batch_size=16, progress=False)
    with timer("detect"):
        for method in ("gradient", "random", "ppl"):
            detect(out=out / f"det_{method}.jsonl", method=method, seed=seed, **det_common)
        detect(out=out / "det_gradient_response.jsonl", level="response", segments=2, **det_common)
        gradient = read_detections(out / "det_gradient.jsonl")
        (out / "det_oracle.jsonl").write_text(detections_to_jsonl(oracle_detections(gradient, by_id)),
                                              encoding="utf-8")
        shutil.copyfile(out / "det_gradient.jsonl", out / "detections.jsonl")  # what the report shows
        shutil.copyfile(out / "det_gradient.jsonl.meta.json", out / "detections.jsonl.meta.json")

    truth = {r["id"]: r["meta"]["confounder_spans"] for r in pool}
    detection: dict[str, Any] = {}
    for method in ("gradient", "random", "ppl"):
        dets = read_detections(out / f"det_{method}.jsonl")
        detection[method] = {"default": detection_quality(dets, truth)}
    detection["gradient"]["by_tau"] = {str(t): detection_quality(gradient, truth, tau=t) for t in cfg.taus}

    needed = {s for arm in cfg.arms if isinstance(ARMS[arm], list) for s in ARMS[arm]}
    cf_counts: dict[str, int] = {}
    with timer("prune"):
        for name in sorted(needed):
            stem, strategy, intervention = CF_SETS[name]
            summary = prune(data=labelled, detections=out / f"{stem}.jsonl", out=out / f"cf_{name}.jsonl",
                            strategy=strategy, intervention=intervention, student=student, seed=seed)
            cf_counts[name] = summary.records_written
        if "gradient" in needed:
            shutil.copyfile(out / "cf_gradient.jsonl", out / "counterfactuals.jsonl")

    accuracy: dict[str, Any] = {}
    with timer("evaluate"):
        accuracy["teacher"] = _cached_eval(out / "eval" / "teacher.json", "teacher", teacher, tests)
    n_extra = cf_counts.get("gradient", 0)
    for arm in cfg.arms:
        spec = ARMS[arm]
        eval_path = out / "eval" / f"{arm}.json"
        log.info("seed %d, arm %s%s", seed, arm, " (done)" if eval_path.exists() else "")
        model_dir: Path | str = student
        if spec is not None and not eval_path.exists():
            train_dir = out / f"train-{arm}"
            shutil.rmtree(train_dir, ignore_errors=True)
            data, cfs = pool_path, None
            if spec == "extra":
                data = _write(out / "pool_plus_extra.jsonl", pool + extra[:n_extra])
            elif spec:
                cfs = out / f"cf_{arm}.jsonl"
                write_counterfactuals(cfs, [r for name in spec for r in read_counterfactuals(out / f"cf_{name}.jsonl")])
            with timer("distill"):
                distill(DistillConfig(
                    student=student, teacher=teacher, data=data, counterfactuals=cfs, lam=cfg.lam if cfs else 1.0,
                    out=train_dir, max_steps=cfg.steps, epochs=1000, batch_size=cfg.batch_size,
                    grad_accum=1, learning_rate=cfg.learning_rate, warmup_steps=5, precision="fp32",
                    dtype="float32", save_steps=10**9, logging_steps=5, seed=seed, max_length=512))
        if spec is not None:
            model_dir = out / f"train-{arm}"
        with timer("evaluate"):
            accuracy[arm] = _cached_eval(eval_path, arm, model_dir, tests)

    attention: dict[str, Any] = {}
    if cfg.attention:
        from leaf.analyze import analyze

        arms = [a for a in ATTENTION_ARMS if a in cfg.arms]
        paths = [student if ARMS[a] is None else str(out / f"train-{a}") for a in arms] + [teacher]
        with timer("analyze"):
            result = analyze(model=paths, label=[*arms, "teacher"], data=out / "test_counterfactual.jsonl",
                             out=out / "analysis", max_samples=40, heatmaps=2, overwrite=True, dtype="float32",
                             device="cpu")
        attention = {m["label"]: m["summary"]["share_on_span"] for m in result.models}

    if cfg.report and seed == 0:
        from leaf.report import build_report

        with timer("report"):
            build_report(run=out, samples=labelled, title=f"leaf demo, seed {seed}")
    return {"seed": seed, "counts": counts, "counterfactuals": cf_counts, "accuracy": accuracy,
            "detection": detection, "attention": attention}


def _cached_eval(path: Path, name: str, model: Path | str, tests: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Evaluate (or read back) one model; the file doubles as the arm's resume marker."""
    if path.exists():
        return {s: b["accuracy"] for s, b in json.loads(path.read_text())["benchmarks"].items()}
    result = evaluate_model(model, tests)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps({"model": name, "benchmarks": result}, indent=2) + "\n")
    return {s: b["accuracy"] for s, b in result.items()}


# -- the whole demo ---------------------------------------------------------------------------


def summarise(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation over seeds of accuracies, detection quality and attention."""
    acc: dict[str, Any] = {}
    for name in per_seed[0]["accuracy"]:
        acc[name] = {split: mean_std([s["accuracy"][name][split] for s in per_seed]) for split in SPLITS}
    det: dict[str, Any] = {}
    for method, d in per_seed[0]["detection"].items():
        det[method] = {k: mean_std([s["detection"][method]["default"][k] for s in per_seed])
                       for k in ("precision", "recall", "f1", "hit_rate")}
    taus = {}
    for tau in per_seed[0]["detection"]["gradient"].get("by_tau", {}):
        taus[tau] = {k: mean_std([s["detection"]["gradient"]["by_tau"][tau][k] for s in per_seed])
                     for k in ("precision", "recall", "f1", "hit_rate")}
    att = {}
    for name in per_seed[0]["attention"]:
        values = [s["attention"][name] for s in per_seed if s["attention"].get(name) is not None]
        att[name] = mean_std(values)
    return {"accuracy": acc, "detection": det, "detection_by_tau": taus, "attention": att}


def _cell(v: dict[str, float], scale: float, digits: int) -> str:
    """``mean ± std`` over seeds; the mean alone when there is one seed (no spread to show)."""
    mean = f"{scale * v['mean']:.{digits}f}"
    return mean if v["n"] < 2 else f"{mean} ± {scale * v['std']:.{digits}f}"


#: What the table's rows and columns mean (printed under it).
LEGEND = (
    "Columns: test sets -- confounded (the planted value is the answer, as in training), counterfactual (it never "
    "is), clean (no planted value). Rows: arms (docs/demo.md): pre_kd the student before distillation, kd plain "
    "distillation, kd_selected the analysed samples unpruned (re-weighting), leaf_* LeaF with the named detection "
    "or intervention, oracle_* the ground-truth spans. Cells: mean ± standard deviation over seeds."
)


def markdown_table(summary: dict[str, Any]) -> str:
    """The paper-shaped table: arms x test sets, mean ± std over seeds (accuracy %), with a legend."""
    head = "| Arm | " + " | ".join(SPLITS) + " |\n|---|" + "---:|" * len(SPLITS) + "\n"
    rows = []
    for name, by_split in summary["accuracy"].items():
        cells = [_cell(v, 100, 1) for v in (by_split[s] for s in SPLITS)]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    det = summary["detection"]
    det_rows = "\n".join(
        f"| {m} | " + " | ".join(_cell(v[k], 1, 2) for k in ("precision", "recall", "f1", "hit_rate")) + " |"
        for m, v in det.items()
    )
    att = summary.get("attention") or {}
    att_rows = "\n".join(f"| {m} | {_cell(v, 1, 3)} |" for m, v in att.items())
    text = "### Accuracy (%)\n\n" + head + "\n".join(rows) + f"\n\n{LEGEND}\n\n### Detection (token level, default tau)\n\n"
    text += "| Method | precision | recall | F1 | hit rate |\n|---|---:|---:|---:|---:|\n" + det_rows + "\n"
    if att_rows:
        text += "\n### Attention share of response tokens on planted spans (counterfactual test set)\n\n"
        text += "| Model | share |\n|---|---:|\n" + att_rows + "\n"
    return text


@dataclass
class DemoSummary(Summary):
    """``results`` is what OUT/results.json holds (schema: docs/demo.md); ``table`` the printed table."""

    out: Path
    results: dict[str, Any]
    table: str

    def line(self) -> str:
        return (f"{self.table}\nresults: {self.out / 'results.json'}; report: {self.out / 'report.html'}; "
                f"took {self.results['timings']['total']:.0f} s")


def demo(config: DemoConfig | None = None, **kwargs: Any) -> DemoSummary:
    """Run the demo; write OUT/results.json, table.md and report.html; return them in a summary."""
    from leaf.demo.models import QUICK, DemoModelsConfig
    from leaf.demo.models import build as build_models

    cfg = make(DemoConfig, config, kwargs, "leaf.demo()").resolved()
    log.setLevel(logging.INFO)
    out = Path(cfg.out)
    settings = {k: v for k, v in to_dict(cfg).items() if k not in ("overwrite", "report", "cache_dir")}
    marker = out / "demo_settings.json"
    if cfg.overwrite and out.exists():
        shutil.rmtree(out)
    if marker.exists() and json.loads(marker.read_text()) != json.loads(dumps(settings)):
        raise ValueError(f"{out} holds a demo run with other settings; use another --out or --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(marker, dumps(settings) + "\n")

    timer = Timer()
    t0 = time.perf_counter()
    with timer("models"):
        models = build_models(QUICK if cfg.quick else DemoModelsConfig(), cache_dir=cfg.cache_dir,
                              log=lambda msg: log.info(msg))
    per_seed = []
    assert cfg.seeds is not None
    for seed in range(cfg.seeds):
        log.info("seed %d", seed)
        per_seed.append(run_seed(seed, cfg, models, out / f"seed-{seed}", timer))
    summary = summarise(per_seed)
    results = {
        "config": settings,
        "models": {"root": str(models.root), "config": asdict(models.config),
                   "cached": models.cached, "build_timings": models.timings},
        "seeds": per_seed,
        "summary": summary,
        "timings": {**timer.seconds, "total": time.perf_counter() - t0},
    }
    write_atomic(out / "results.json", json.dumps(results, indent=2, default=str) + "\n")
    table = markdown_table(summary)
    write_atomic(out / "table.md", table)
    if cfg.report and (out / "seed-0" / "report.html").exists():
        shutil.copyfile(out / "seed-0" / "report.html", out / "report.html")
    return DemoSummary(out, results, table)
