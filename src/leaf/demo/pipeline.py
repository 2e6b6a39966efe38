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

import functools
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
from leaf.demo.config import ATTENTION_ARMS, CF_SETS, REFERENCES, SPLITS, DemoConfig
from leaf.demo.metrics import detection_quality, mean_std
from leaf.demo.models import OTHER_TEACHER, other_tokenizer_teacher
from leaf.stats import paired

log = logging.getLogger(__name__)

#: Rows of the results that are teachers, not arms (no paired tests, no goals).
TEACHERS = ("teacher", OTHER_TEACHER)



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
    """Greedy answers on each test split, scored as ``leaf evaluate --task exact`` scores them (its
    :func:`~leaf.evaluate.run.score`), with the accuracy per family and the verdict per problem added."""
    from leaf.data.records import Sample
    from leaf.evaluate.run import score
    from leaf.generation import generate
    from leaf.models import load_model, load_tokenizer

    model, tok = load_model(str(path)), load_tokenizer(str(path))
    out: dict[str, Any] = {}
    for split, records in tests.items():
        samples = [Sample(id=r["id"], instruction=r["instruction"], response=r["response"], answer=r["answer"])
                   for r in records]
        preds = generate(model, tok, [s.instruction for s in samples], max_new_tokens=max_new_tokens,
                         batch_size=batch_size)
        summary, scored = score(samples, {str(s.id): p for s, p in zip(samples, preds)}, "exact", benchmark=split,
                                workers=1)
        by_family: dict[str, list[bool]] = {}
        for r, rec in zip(records, scored):
            by_family.setdefault(r["meta"]["family"], []).append(rec["correct"])
        out[split] = {
            **summary,
            "by_family": {f: sum(v) / len(v) for f, v in by_family.items()},
            "verdicts": {str(r["id"]): bool(rec["correct"]) for r, rec in zip(records, scored)},
        }
    return out


# -- one seed ---------------------------------------------------------------------------------


def pool_mix(families: tuple[str, ...], n: int, clean_share: float, *, seed: int) -> list[dict[str, Any]]:
    """``n`` problems per family: ``round(n * clean_share)`` clean ones, the rest confounded, interleaved.

    Clean and confounded problems are different problems (the confounded ones start where the clean
    ones end). With no clean share this is the v1 pool exactly.
    """
    from leaf.demo.tasks import generate_mix

    n_clean = round(n * clean_share)
    conf = generate_mix(families, "confounded", n - n_clean, seed=seed, start=n_clean)
    if not n_clean:
        return conf
    clean = generate_mix(families, "clean", n_clean, seed=seed)
    # spread evenly: clean record i goes after confounded record round(i * len(conf) / len(clean))
    out: list[dict[str, Any]] = []
    ci = 0
    for i, rec in enumerate(clean):
        upto = round(i * len(conf) / len(clean))
        out += conf[ci:upto]
        ci = upto
        out.append(rec)
    return out + conf[ci:]


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
        pool = pool_mix(families, cfg.n_train, cfg.pool_clean_share or 0.0, seed=base + 1)
        extra = pool_mix(families, cfg.n_train, cfg.pool_clean_share or 0.0, seed=base + 2)
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

    specs = cfg.arm_specs()
    needed = {n for arm in specs.values() if isinstance(arm.sets, tuple) for n in arm.sets}
    det_common = dict(teacher=teacher, student=student, data=labelled, select=cfg.select, tau=cfg.tau,
                      batch_size=16, progress=False)
    with timer("detect"):
        for method in ("gradient", "random", "ppl"):
            detect(out=out / f"det_{method}.jsonl", method=method, seed=seed, **det_common)
        detect(out=out / "det_gradient_response.jsonl", level="response", segments=2, **det_common)
        if any(CF_SETS[n].detections == "det_gradient_all" for n in needed):
            detect(out=out / "det_gradient_all.jsonl", method="gradient", **{**det_common, "select": "all"})
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

    cf_counts: dict[str, int] = {}
    with timer("prune"):
        for name in sorted(needed):
            cs = CF_SETS[name]
            more: dict[str, Any] = {"draws": cs.draws} if cs.draws != 1 else {}
            if cs.intervention == "resample":
                more["resample_from"] = cs.resample_from
            verify = cs.verify or cfg.verify or "none"
            if verify != "none":
                more.update(verify=True, verify_with=verify, task="exact", max_new_tokens=64, batch_size=64,
                            dtype="float32", device="cpu")
            summary = prune(data=labelled, detections=out / f"{cs.detections}.jsonl", out=out / f"cf_{name}.jsonl",
                            strategy=cs.strategy, intervention=cs.intervention, student=student, teacher=teacher,
                            seed=seed, **more)
            cf_counts[name] = summary.records_written
        if "gradient" in needed:
            shutil.copyfile(out / "cf_gradient.jsonl", out / "counterfactuals.jsonl")

    accuracy: dict[str, Any] = {}
    verdicts: dict[str, Any] = {}
    with timer("evaluate"):
        accuracy["teacher"], verdicts["teacher"] = _cached_eval(out / "eval" / "teacher.json", "teacher", teacher,
                                                                tests)
    other_teacher = None
    if any(spec.other_tokenizer for spec in specs.values()):
        with timer("models"):
            other_teacher = other_tokenizer_teacher(models, log=log.info)
        with timer("evaluate"):  # measured stronger than the student before it teaches
            accuracy[OTHER_TEACHER], verdicts[OTHER_TEACHER] = _cached_eval(
                out / "eval" / f"{OTHER_TEACHER}.json", OTHER_TEACHER, other_teacher, tests)
    n_extra = cf_counts.get("gradient", 0)
    trained: dict[str, dict[str, Any]] = {}
    for i, (arm, spec) in enumerate(specs.items()):
        eval_path = out / "eval" / f"{arm}.json"
        log.info("seed %d/%d, arm %d/%d: %s%s", seed + 1, cfg.seeds, i + 1, len(specs), arm,
                 " (done)" if eval_path.exists() else "")
        model_dir: Path | str = student
        if spec.sets is not None and not eval_path.exists():
            train_dir = out / f"train-{arm}"
            shutil.rmtree(train_dir, ignore_errors=True)
            data, cfs = pool_path, None
            if spec.sets == "extra":
                data = _write(out / "pool_plus_extra.jsonl", pool + extra[:n_extra])
            elif spec.sets:
                cfs = out / f"cf_{arm}.jsonl"
                write_counterfactuals(cfs, combine_sets({name: read_counterfactuals(out / f"cf_{name}.jsonl")
                                                         for name in spec.sets}))
            lam = (cfg.lam if spec.lam is None else spec.lam) if cfs else 1.0
            arm_teacher, more = teacher, dict(spec.options)
            if spec.other_tokenizer:
                arm_teacher, more["cross_tokenizer"] = str(other_teacher), "auto"
            with timer("distill"):
                summary = distill(DistillConfig(
                    student=student, teacher=arm_teacher, data=data, counterfactuals=cfs, lam=lam,
                    cd_weighting=spec.cd_weighting,
                    out=train_dir, max_steps=cfg.steps, epochs=1000, batch_size=cfg.batch_size,
                    grad_accum=1, learning_rate=cfg.learning_rate, warmup_steps=5, precision="fp32",
                    dtype="float32", save_steps=10**9, logging_steps=5, seed=seed, max_length=512,
                    student_max_new_tokens=64, **more))
            write_atomic(train_dir / "demo_budget.json", json.dumps(
                _budget(summary, data, cfs, cfg, tokenizer=student), indent=2) + "\n")
        if spec.sets is not None:
            model_dir = out / f"train-{arm}"
            budget = model_dir / "demo_budget.json"
            trained[arm] = json.loads(budget.read_text()) if budget.exists() else {}
        with timer("evaluate"):
            accuracy[arm], verdicts[arm] = _cached_eval(eval_path, arm, model_dir, tests)

    attention: dict[str, Any] = {}
    if cfg.attention:
        from leaf.analyze import analyze

        arms = [a for a in ATTENTION_ARMS[cfg.setting] if a in specs]
        paths = [student if specs[a].sets is None else str(out / f"train-{a}") for a in arms] + [teacher]
        with timer("analyze"):
            result = analyze(model=paths, label=[*arms, "teacher"], data=out / "test_counterfactual.jsonl",
                             out=out / "analysis", max_samples=40, heatmaps=2, overwrite=True, dtype="float32",
                             device="cpu")
        attention = {m["label"]: m["summary"]["share_on_span"] for m in result.models}

    if cfg.report and seed == 0:
        from leaf.report import build_report

        with timer("report"):
            build_report(run=out, samples=labelled, title=f"leaf demo, seed {seed}")
    result = {"seed": seed, "counts": counts, "counterfactuals": cf_counts, "accuracy": accuracy,
              "detection": detection, "attention": attention}
    if cfg.setting != "v1":  # v1's results keep their recorded shape
        result["by_family"] = {arm: {split: v["by_family"] for split, v in acc.items()} for arm, acc in verdicts.items()}
        result["training"] = trained
        result["_verdicts"] = {arm: {split: v["verdicts"] for split, v in acc.items()} for arm, acc in verdicts.items()}
    return result


def combine_sets(sets: dict[str, list[Any]]) -> list[Any]:
    """The records of several counterfactual sets in one list; an id already taken by an earlier set gets
    ``+<set name>`` appended (deletion and resample records of one span share an id)."""
    out, seen = [], set()
    for name, records in sets.items():
        for rec in records:
            if rec.id in seen:
                rec = replace(rec, id=f"{rec.id}+{name}")
            seen.add(rec.id)
            out.append(rec)
    return out


@functools.lru_cache(maxsize=4)
def _tokenizer(path: str) -> Any:
    from leaf.models import load_tokenizer

    return load_tokenizer(path)


def _budget(summary: Any, data: Path, cfs: Path | None, cfg: DemoConfig, *, tokenizer: str) -> dict[str, Any]:
    """What an arm trained on: optimiser steps, examples per step, and the tokens it saw.

    Every arm takes ``steps`` optimiser steps of ``batch_size`` examples drawn from its training set
    (originals and counterfactuals interleaved evenly), so the tokens it sees are ``steps x batch_size``
    times the mean tokens per example of that set: the expected value is reported (exact over whole passes),
    with the reference responses (an on-policy arm replaces ``student_responses`` of them by its own, spending
    ``generation_share`` of its training time generating them).
    """
    from leaf.data.render import encode, render

    tok = _tokenizer(tokenizer)
    records = read_jsonl(data) + (read_jsonl(cfs) if cfs else [])
    lengths = [len(encode(tok, render(tok, r["instruction"], r["response"]).text).input_ids) for r in records]
    assert cfg.steps is not None
    examples = cfg.steps * cfg.batch_size
    return {"steps": summary.steps, "examples_per_step": cfg.batch_size, "examples_seen": examples,
            "training_set": summary.examples, "counterfactual_records": summary.counterfactual_examples,
            "tokens_seen": round(examples * sum(lengths) / len(lengths)),
            "student_responses": summary.student_responses or 0,
            "generation_share": round(summary.generation_share or 0.0, 4),
            "aligned_1to1": 1.0 if summary.aligned_1to1 is None else round(summary.aligned_1to1, 4)}


def _cached_eval(path: Path, name: str, model: Path | str,
                 tests: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, float], dict[str, Any]]:
    """Evaluate (or read back) one model: accuracy per split, and per split the by-family accuracies and
    per-problem verdicts. The file doubles as the arm's resume marker."""
    if path.exists():
        result = json.loads(path.read_text())["benchmarks"]
    else:
        result = evaluate_model(model, tests)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps({"model": name, "benchmarks": result}, indent=2) + "\n")
    detail = {s: {"by_family": b["by_family"], "verdicts": b.get("verdicts", {})} for s, b in result.items()}
    return {s: b["accuracy"] for s, b in result.items()}, detail


# -- the whole demo ---------------------------------------------------------------------------


def summarise(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation over seeds of accuracies, detection quality and attention; for v2 runs
    also per family, the paired tests of every arm against each reference arm, the training budgets and
    the v2 benchmark's goals."""
    acc: dict[str, Any] = {}
    for name in per_seed[0]["accuracy"]:
        acc[name] = {split: mean_std([s["accuracy"][name][split] for s in per_seed]) for split in SPLITS}
    det: dict[str, Any] = {}
    for method in per_seed[0]["detection"]:
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
    out: dict[str, Any] = {"accuracy": acc, "detection": det, "detection_by_tau": taus, "attention": att}
    if "by_family" in per_seed[0]:
        out.update(_v2_summary(per_seed, acc))
    return out


def _family_of(problem_id: str) -> str:
    return problem_id.split("-", 1)[0]  # ids are "<family>-<split>-s<seed>-<i>" (leaf.demo.tasks)


def _v2_summary(per_seed: list[dict[str, Any]], accuracy: dict[str, Any]) -> dict[str, Any]:
    arms = list(per_seed[0]["by_family"])
    families = sorted(per_seed[0]["by_family"][arms[0]]["clean"])
    by_family = {arm: {split: {f: mean_std([s["by_family"][arm][split][f] for s in per_seed]) for f in families}
                       for split in SPLITS} for arm in arms}
    tests: dict[str, Any] = {}
    for ref in REFERENCES:
        if ref not in arms:
            continue
        for arm in arms:
            if arm in (ref, *TEACHERS):
                continue
            cell: dict[str, Any] = {}
            for split in SPLITS:
                a = [s["_verdicts"][arm][split] for s in per_seed]
                b = [s["_verdicts"][ref][split] for s in per_seed]
                cell[split] = paired(a, b)
                for f in families:
                    cell[f"{split}/{f}"] = paired([{k: v for k, v in x.items() if _family_of(k) == f} for x in a],
                                                  [{k: v for k, v in x.items() if _family_of(k) == f} for x in b])
            tests.setdefault(arm, {})[ref] = cell
    unset = {"aligned_1to1": 1.0}  # a budget written before a field existed: its value for every arm then
    budget = {arm: {k: mean_std([s["training"][arm].get(k, unset.get(k, 0)) for s in per_seed
                                 if s["training"].get(arm)])
                    for k in ("steps", "examples_seen", "tokens_seen", "counterfactual_records", "student_responses",
                              "generation_share", "aligned_1to1")}
              for arm in per_seed[0]["training"]}
    summary = {"families": families, "by_family": by_family, "paired": tests, "budget": budget}
    summary["goals"] = goals({"accuracy": accuracy, **summary})
    return summary


def goals(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The v2 benchmark's goals, measured from a summary (accuracy over seeds, families, paired tests): each a dict
    with ``goal``, ``measured`` and ``met``."""
    acc = summary["accuracy"]
    out = []
    if "kd" in acc and "pre_kd" in acc:
        gains = {split: 100 * (acc["kd"][split]["mean"] - acc["pre_kd"][split]["mean"]) for split in ("clean", "confounded")}
        best = max(gains, key=lambda k: gains[k])
        out.append({"goal": "KD improves the student over pre-KD by >= 5 points on clean or confounded data",
                    "measured": ", ".join(f"{k} {v:+.1f}" for k, v in gains.items()), "met": gains[best] >= 5})
    if "kd" in acc:
        kd_clean = 100 * acc["kd"]["clean"]["mean"]
        losses = {arm: kd_clean - 100 * v["clean"]["mean"] for arm, v in acc.items()
                  if arm not in (*TEACHERS, "pre_kd", "kd")}
        worst = max(losses, key=lambda k: losses[k]) if losses else None
        out.append({"goal": "no distilled arm loses more than 1 point of clean accuracy against KD",
                    "measured": f"largest loss {losses[worst]:.1f} ({worst})" if worst else "no arm",
                    "met": not worst or losses[worst] <= 1.0})
    paired_tests = summary.get("paired", {})

    def beats(arm: str, ref: str, key: str) -> tuple[bool, str]:
        t = paired_tests.get(arm, {}).get(ref, {}).get(key)
        if t is None:
            return False, "not run"
        ok = t["diff_mean"] >= 5 and t["diff_mean"] - t["diff_std"] > 0 and t["pooled_p"] < 0.05
        return ok, f"{t['diff_mean']:+.1f} ± {t['diff_std']:.1f} (p {t['pooled_p']:.2g})"

    if "distract" in summary.get("families", ()):
        ok, text = beats("leaf_instr", "kd", "counterfactual/distract")
        out.append({"goal": "on the distractor family, deletion (leaf_instr) beats KD by >= 5 points counterfactual, "
                            "beyond the seed spread", "measured": text, "met": ok})
    winners = []
    for arm in paired_tests:
        if arm.split("@")[0] in ("kd", "kd_selected", "kd_extra", "pre_kd"):  # not interventions
            continue
        fams = [f for f in summary.get("families", ()) if beats(arm, "kd", f"counterfactual/{f}")[0]
                and beats(arm, "kd_selected", f"counterfactual/{f}")[0]]
        if len(fams) >= 2:
            winners.append(f"{arm} ({', '.join(fams)})")
    out.append({"goal": "some intervention beats both KD and re-weighting by >= 5 points counterfactual on at least "
                        "two families", "measured": "; ".join(winners) or "none", "met": bool(winners)})
    return out


def _cell(v: dict[str, float], scale: float, digits: int) -> str:
    """``mean ± std`` over seeds; the mean alone when there is one seed (no spread to show)."""
    mean = f"{scale * v['mean']:.{digits}f}"
    return mean if v["n"] < 2 else f"{mean} ± {scale * v['std']:.{digits}f}"


#: What the table's rows and columns mean (printed under it).
LEGEND = (
    "Columns: test sets -- confounded (the planted value is the answer, as in training), counterfactual (it never "
    "is), clean (no planted value). Rows: arms (docs/demo.md): pre_kd the student before distillation, kd plain "
    "distillation, kd_selected the analysed samples unpruned (re-weighting), leaf_* LeaF with the named detection "
    "or intervention, oracle_* the ground-truth spans, NAME@L the arm at lambda L. Cells: mean ± standard deviation "
    "over seeds."
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
    if "by_family" in summary:
        text += v2_tables(summary)
    return text


def _p(value: float) -> str:
    return f"{value:.2g}" if value >= 1e-4 else "<1e-4"


def v2_tables(summary: dict[str, Any]) -> str:
    """Per-family accuracy, paired tests against KD and re-weighting, training budgets and the goals."""
    fams = summary["families"]
    by = summary["by_family"]
    head = "| Arm | " + " | ".join(f"{f} cf | {f} clean" for f in fams) + " |\n|---|" + "---:|" * (2 * len(fams))
    rows = [f"| {arm} | " + " | ".join(f"{_cell(by[arm]['counterfactual'][f], 100, 1)} | {_cell(by[arm]['clean'][f], 100, 1)}"
                                      for f in fams) + " |" for arm in by]
    text = "\n### Per family: counterfactual (cf) and clean accuracy (%)\n\n" + head + "\n" + "\n".join(rows) + "\n"
    tests = summary["paired"]
    if tests:
        refs = [r for r in REFERENCES if any(r in t for t in tests.values())]
        text += ("\n### Paired tests, counterfactual set: arm minus reference (points, mean ± std over seeds), "
                 "pooled exact McNemar p, seeds won/lost\n\n")
        cols = [f"{f}" for f in ["all", *fams]]
        text += "| Arm | ref | " + " | ".join(cols) + " |\n|---|---|" + "---:|" * len(cols) + "\n"
        for arm, by_ref in tests.items():
            for ref in refs:
                if ref not in by_ref:
                    continue
                cells = []
                for key in ["counterfactual", *(f"counterfactual/{f}" for f in fams)]:
                    t = by_ref[ref][key]
                    spread = f" ± {t['diff_std']:.1f}" if len(t["seeds"]) > 1 else ""
                    cells.append(f"{t['diff_mean']:+.1f}{spread} (p {_p(t['pooled_p'])}, {t['wins']}/{t['losses']})")
                text += f"| {arm} | {ref} | " + " | ".join(cells) + " |\n"
    budget = summary.get("budget") or {}
    if budget:
        text += ("\n### Training budget per arm (mean over seeds)\n\n| Arm | steps | examples seen | tokens seen "
                 "(reference responses) | counterfactual records | student responses | generation share | loss tokens "
                 "aligned 1:1 |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
        for arm, b in budget.items():
            text += f"| {arm} | " + " | ".join(f"{b[k]['mean']:.0f}" for k in (
                "steps", "examples_seen", "tokens_seen", "counterfactual_records", "student_responses"))
            text += (f" | {100 * b.get('generation_share', {}).get('mean', 0.0):.0f} % | "
                     f"{100 * b.get('aligned_1to1', {}).get('mean', 1.0):.1f} % |\n")
    text += "\n### Goals of the v2 benchmark\n\n| goal | measured | met |\n|---|---|---|\n"
    text += "".join(f"| {g['goal']} | {g['measured']} | {'yes' if g['met'] else '**no**'} |\n" for g in summary["goals"])
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
    from leaf.demo.models import build as build_models
    from leaf.demo.models import models_config

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
        models = build_models(models_config(cfg.setting, quick=cfg.quick), cache_dir=cfg.cache_dir,
                              log=lambda msg: log.info(msg))
    per_seed = []
    assert cfg.seeds is not None
    for seed in range(cfg.seeds):
        log.info("seed %d", seed)
        per_seed.append(run_seed(seed, cfg, models, out / f"seed-{seed}", timer))
    summary = summarise(per_seed)
    for s in per_seed:
        s.pop("_verdicts", None)  # per-problem verdicts stay in seed-*/eval/*.json
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
    if "by_family" in summary:
        from leaf.demo.figure import arms_figure

        arms_figure(summary, out / "arms.png")
    if cfg.report and (out / "seed-0" / "report.html").exists():
        if "by_family" in summary:  # the seed-0 page with the benchmark over seeds on top
            from leaf.report import build_report

            build_report(run=out / "seed-0", samples=out / "seed-0" / "labelled.jsonl", out=out / "report.html",
                         title="leaf demo", benchmark=out / "results.json")
        else:
            shutil.copyfile(out / "seed-0" / "report.html", out / "report.html")
    return DemoSummary(out, results, table)
