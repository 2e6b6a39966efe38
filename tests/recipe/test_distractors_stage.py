"""Recipe stages that make their own data and teacher: the ``distractors`` stage kind (its splits as
samples and as evaluation sets) and a ``teacher`` / ``student`` that names an earlier distill stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leaf.cli import main
from leaf.config import ConfigError, build
from leaf.data.config import DISTRACTOR_KINDS, DISTRACTOR_POSITIONS
from leaf.data.distractors import family_records
from leaf.recipe import RecipeConfig
from leaf.recipe.estimate import estimate_plan
from leaf.recipe.runner import resolve_plan
from leaf.recipe.stages import plan
from leaf.tiny import write_tiny

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT / "configs" / "recipes" / "real_smollm2.yaml"
FAMILIES = ["add", "two-step"]
KINDS, POSITIONS = list(DISTRACTOR_KINDS), list(DISTRACTOR_POSITIONS)


def _recipe(tmp_path: Path, **change):
    base = {
        "run": str(tmp_path / "run"), "student": "my/student", "teacher": "finetune", "task": "math",
        "stages": ["clean_data", "train_data", "tests", "finetune", "detect", "prune", "distill", "eval_teacher",
                   "eval_leaf", "analyze"],
        "clean_data": {"stage": "distractors", "n": 3, "seed": 1, "families": FAMILIES, "split": "clean"},
        "train_data": {"stage": "distractors", "n": 3, "seed": 1, "families": FAMILIES},
        "tests": {"stage": "distractors", "n": 2, "seed": 0, "families": FAMILIES},
        "finetune": {"stage": "distill", "input": ["clean_data"], "teacher": "student", "alpha": 1.0},
        "detect": {"input": ["train_data"]},
        "distill": {"input": ["train_data", "prune"]},
        "eval_teacher": {"stage": "evaluate", "model": "teacher", "benchmark": ["tests.clean", "tests.distracted"]},
        "eval_leaf": {"stage": "evaluate", "model": "distill", "benchmark": ["tests.distracted", "gsm8k"]},
        "analyze": {"input": ["tests"], "model": ["student", "distill"]},
    }
    base.update(change)
    return base


def test_the_stages_read_the_split_files_and_the_trained_teacher(tmp_path):
    run, steps, _ = plan(_recipe(tmp_path))
    by = {s.name: s for s in steps}
    assert by["clean_data"].values["out"] == str(run / "clean_data")
    assert by["finetune"].values["data"] == str(run / "clean_data" / "clean.jsonl")
    assert (by["finetune"].values["teacher"], by["finetune"].values["student"]) == ("my/student", "my/student")
    assert "counterfactuals" not in by["finetune"].values
    assert by["detect"].values["data"] == str(run / "train_data" / "distracted.jsonl")  # the default split
    assert by["detect"].values["teacher"] == str(run / "finetune") and by["detect"].values["student"] == "my/student"
    assert set(by["detect"].sources) == {"train_data", "finetune"}
    assert by["distill"].values["teacher"] == str(run / "finetune")
    assert by["distill"].values["data"] == str(run / "train_data" / "distracted.jsonl")
    assert by["distill"].values["counterfactuals"] == str(run / "prune" / "counterfactuals.jsonl")
    assert "finetune" in by["distill"].sources
    assert by["eval_teacher"].values["model"] == str(run / "finetune")
    assert by["eval_teacher"].values["benchmark"] == [str(run / "tests" / "clean.jsonl"),
                                                      str(run / "tests" / "distracted.jsonl")]
    assert set(by["eval_teacher"].sources) == {"finetune", "tests"}
    assert by["eval_leaf"].values["benchmark"] == [str(run / "tests" / "distracted.jsonl"), "gsm8k"]
    # the known spans of the test problems, no detections needed
    assert by["analyze"].values["data"] == str(run / "tests" / "distracted.jsonl")
    assert by["analyze"].values.get("samples") is None
    assert by["analyze"].values["model"] == ["my/student", str(run / "distill")]


def test_a_home_folder_model_is_expanded(tmp_path):
    _, steps, _ = plan(_recipe(tmp_path, student="~/models/s"))
    assert steps[3].values["student"] == str(Path.home() / "models" / "s")


@pytest.mark.parametrize(("change", "message"), [
    ({"detect": {"input": ["train_data"], "split": "clean"}}, "`split:` is a key of distractors stages only"),
    ({"tests": {"stage": "distractors", "split": "counterfactual"}}, "split: 'counterfactual'; use one of"),
    ({"finetune": {"stage": "distill", "input": ["clean_data"], "teacher": "distill"}},
     "teacher 'distill' is a stage that does not run before this one"),
    ({"teacher": "tests"}, "teacher 'tests' is a distractors stage; name a distill stage"),
    ({"tests": {"stage": "distractors", "out": "x"}}, "'out' is a path between stages"),
])
def test_bad_references_are_refused(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        plan(_recipe(tmp_path, **change))


def test_dry_run_counts_the_generated_records(tmp_path):
    cfg = build(RecipeConfig, {"recipe": REAL, "overrides": [f"run={tmp_path / 'run'}"]})
    est = {e.name: dict(e.lines) for e in estimate_plan(resolve_plan(cfg))}
    assert est["teacher_data"]["samples"] == "clean 300, distracted 300; later stages read clean"
    assert est["test_data"]["samples"] == "clean 90, distracted 90; later stages read distracted"
    assert est["detect"]["samples"] == "300 (distracted split, 3 families, seed 1)"
    tests = str(tmp_path / "run" / "test_data" / "distracted.jsonl")
    assert est["eval_kd"][tests].startswith("90 samples x up to 64 new tokens")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_recipe_fine_tunes_its_teacher_then_detects_and_evaluates_with_it(tmp_path, capsys):
    """End to end on the tiny pair: the data are written, the teacher is trained from the student, and the
    stages after it load that teacher (the detections name it, its results score the test split)."""
    write_tiny(out=tmp_path / "models")
    student = tmp_path / "models" / "student"
    train = {"max_steps": 1, "batch_size": 2, "grad_accum": 1, "precision": "fp32", "max_length": 256,
             "save_steps": 1000, "warmup_steps": 0}
    recipe = _recipe(
        tmp_path, student=str(student), device="cpu", dtype="float32",
        stages=["clean_data", "train_data", "tests", "finetune", "detect", "eval_teacher", "analyze"],
        finetune={"stage": "distill", "input": ["clean_data"], "teacher": "student", "alpha": 1.0, **train},
        detect={"input": ["train_data"], "batch_size": 2, "progress": False},
        eval_teacher={"stage": "evaluate", "model": "teacher", "benchmark": ["tests.clean", "tests.distracted"],
                      "max_new_tokens": 4, "batch_size": 4},
        analyze={"input": ["tests"], "model": ["student", "teacher"], "plots": False, "heatmaps": 0},
    )
    for unused in ("prune", "distill", "eval_leaf"):
        recipe.pop(unused, None)
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(recipe))  # JSON is YAML
    assert main(["run", str(path)]) == 0
    run = tmp_path / "run"
    table = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert [table[n][4] for n in ("clean_data", "train_data", "tests")] == ["6", "6", "4"]  # the split's records
    for split in ("clean", "distracted"):
        lines = (run / "tests" / f"{split}.jsonl").read_text().splitlines()
        assert [json.loads(x) for x in lines] == [r for f in FAMILIES for r in family_records(
            f, 2, 0, KINDS, POSITIONS)[split]]
    assert (run / "finetune" / "model.safetensors").is_file()
    meta = json.loads((run / "detect" / "detections.jsonl.meta.json").read_text())
    assert meta["settings"]["teacher"] == str(run / "finetune")
    detected = [json.loads(x) for x in (run / "detect" / "detections.jsonl").read_text().splitlines()]
    assert sorted(d["id"] for d in detected) == sorted(
        r["id"] for f in FAMILIES for r in family_records(f, 3, 1, KINDS, POSITIONS)["distracted"])
    result = json.loads((run / "eval_teacher" / "results.json").read_text())
    assert result["config"]["model"] == str(run / "finetune")
    assert {k: v["total"] for k, v in result["benchmarks"].items()} == {"clean": 4, "distracted": 4}
    attention = json.loads((run / "analyze" / "attention.json").read_text())
    assert [m["model"] for m in attention["models"]] == [str(student), str(run / "finetune")]
    assert all(len(m["samples"]) == 2 * len(FAMILIES) for m in attention["models"])


def test_the_real_recipes_arms_learn_from_the_fine_tuned_teacher(tmp_path):
    """Each arm of real_smollm2.yaml distils the fine-tuned teacher (a YAML anchor that carried the teacher
    stage's `teacher: student` would make every term zero); only the teacher stage trains against itself,
    with cross-entropy."""
    p = resolve_plan(build(RecipeConfig, {"recipe": REAL, "overrides": [f"run={tmp_path / 'run'}"]}))
    arms = {s.name: p.configs[s.name] for s in p.steps if s.kind.name == "distill"}
    assert set(arms) == {"teacher_ft", "distill", "distill_kd", "distill_reweight", "distill_resample",
                         "distill_kd_s43", "distill_s43", "distill_kd_s44", "distill_s44", "distill_token",
                         "distill_sw", "gemma_ft", "distill_xtok", "distill_xtok_leaf"}
    for name, cfg in arms.items():
        if name in ("teacher_ft", "gemma_ft"):
            assert cfg.teacher == cfg.student and cfg.alpha == 1.0 and cfg.counterfactuals is None
        elif name == "distill_xtok":  # KD from the fine-tuned Gemma-3, another tokenizer
            assert cfg.teacher == str(tmp_path / "run" / "gemma_ft") and cfg.alpha == 0.0 and cfg.lam == 1.0
            assert cfg.cross_tokenizer == "auto" and cfg.counterfactuals is None
            assert cfg.student == arms["distill"].student != arms["gemma_ft"].student
        elif name == "distill_xtok_leaf":  # LeaF from it: the same pruned problems as LeaF from the SmolLM2 teacher
            assert cfg.teacher == str(tmp_path / "run" / "gemma_ft") and cfg.alpha == 0.0 and cfg.lam == 0.5
            assert cfg.cross_tokenizer == "auto" and cfg.counterfactuals == arms["distill"].counterfactuals
        else:
            assert cfg.teacher == str(tmp_path / "run" / "teacher_ft") and cfg.alpha == 0.0
    assert "prune_sw" in str(arms["distill_sw"].counterfactuals)  # the paper's selection: its own detections
    assert {n: (c.lam, c.counterfactuals is not None, c.seed, c.cd_weighting) for n, c in arms.items()
            if n not in ("teacher_ft", "gemma_ft", "distill_xtok", "distill_xtok_leaf")} == {
        "distill": (0.5, True, 42, "term-mean"), "distill_kd": (1.0, False, 42, "term-mean"),
        "distill_s43": (0.5, True, 43, "term-mean"), "distill_kd_s43": (1.0, False, 43, "term-mean"),
        "distill_s44": (0.5, True, 44, "term-mean"), "distill_kd_s44": (1.0, False, 44, "term-mean"),
        "distill_token": (0.5, True, 42, "token"), "distill_reweight": (0.5, True, 42, "term-mean"),
        "distill_resample": (0.5, True, 42, "term-mean"), "distill_sw": (0.5, True, 42, "term-mean")}
    # the seeds differ in training order alone: one teacher, one detection, one set of counterfactuals
    for seed in (43, 44):
        assert p.configs[f"distill_s{seed}"].counterfactuals == p.configs["distill"].counterfactuals
        assert p.configs[f"distill_s{seed}"].teacher == p.configs["distill"].teacher
    assert p.settings["arms"]["KD"] == ["eval_kd", "eval_kd_s43", "eval_kd_s44"]
    assert [p.configs[e].model for e in p.settings["arms"]["LeaF"]] == [
        str(tmp_path / "run" / d) for d in ("distill", "distill_s43", "distill_s44")]


def test_a_stage_distilling_the_student_from_itself_is_refused(tmp_path):
    recipe = _recipe(tmp_path, stages=["clean_data", "finetune"])
    for unused in ("prune", "distill", "eval_leaf", "eval_teacher", "analyze", "detect", "train_data", "tests", "task"):
        recipe.pop(unused, None)
    recipe["finetune"] = {"stage": "distill", "input": ["clean_data"], "teacher": "student"}
    path = tmp_path / "r.yaml"
    path.write_text(json.dumps(recipe))
    with pytest.raises(ConfigError, match="is the student itself and --alpha is 0"):
        resolve_plan(build(RecipeConfig, {"recipe": path}))


def test_an_analyze_stage_reads_the_generations_of_named_evaluate_stages(tmp_path):
    """`responses: [EVAL ...]` in an analyze stage: each evaluate stage's generations on the analysed split
    (its own answers as the queries), and the analysis waits for those stages."""
    p = resolve_plan(build(RecipeConfig, {"recipe": REAL, "overrides": [f"run={tmp_path / 'run'}"]}))
    cfg = p.configs["analyze_own"]
    run = tmp_path / "run"
    assert cfg.data == run / "test_data" / "distracted.jsonl"
    assert cfg.responses == [run / e / "results.generations" / "distracted.jsonl"
                             for e in ("eval_student", "eval_kd", "eval_leaf")]
    assert cfg.model[1:] == [str(run / "distill_kd"), str(run / "distill")]
    (step,) = [s for s in p.steps if s.name == "analyze_own"]
    assert {"eval_student", "eval_kd", "eval_leaf"} <= set(step.sources)
