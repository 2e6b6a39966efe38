"""``leaf run configs/recipes/demo_quick.yaml`` end to end: the demo's models and data through the recipe stages.

The models are trained into a temporary cache (about a minute on 2 cores); the rest of the run takes seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leaf.cli import main
from leaf.data.jsonl import read_jsonl
from leaf.demo.models import QUICK, V2_QUICK
from leaf.demo.pipeline import evaluate_model, pool_mix
from leaf.demo.tasks import generate_mix

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "configs" / "recipes" / "demo_quick.yaml"
STAGES = ["prepare", "label", "detect", "prune", "distill", "distill_kd", "eval_teacher", "eval_before", "eval_leaf",
          "eval_kd", "analyze", "report"]

pytestmark = pytest.mark.slow


def leaf_run(run: Path, cache: Path, *extra: str) -> int:
    return main(["run", str(RECIPE), "--set", f"run={run}", f"prepare.cache_dir={cache}", *extra])


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo-recipe")
    run, cache = root / "run", root / "cache"
    assert leaf_run(run, cache) == 0
    return run, cache


def test_quick_demo_recipe_runs_end_to_end_then_is_a_no_op(demo_run, capsys):
    run, cache = demo_run
    for name in STAGES:
        marker = json.loads((run / "stages" / f"{name}.json").read_text())
        assert marker["stage"] == name and Path(marker["output"]).exists()
    # the demo's --quick models (v2), copied out of the temporary cache
    root = cache / V2_QUICK.key()
    assert (root / "settings.json").is_file() and V2_QUICK != QUICK
    for role in ("tokenizer", "teacher", "student"):
        for f in (root / role).iterdir():
            assert (run / "prepare" / role / f.name).read_bytes() == f.read_bytes(), f
    kd = json.loads((run / "distill_kd" / "leaf_config.json").read_text())
    assert kd["lam"] == 1.0 and kd["counterfactuals"] is None and kd["max_steps"] == 25
    assert kd["student"] == str(run / "prepare" / "student") and kd["data"] == str(run / "prepare" / "pool.jsonl")
    leaf = json.loads((run / "distill" / "leaf_config.json").read_text())
    assert leaf["lam"] == 0.5 and leaf["counterfactuals"] == str(run / "prune" / "counterfactuals.jsonl")
    assert (leaf["batch_size"], leaf["learning_rate"], leaf["warmup_steps"], leaf["seed"]) == (16, 1e-3, 5, 0)
    cfs = read_jsonl(run / "prune" / "counterfactuals.jsonl")
    assert cfs and {(c["intervention"], c["method"], c["level"]) for c in cfs} == {("resample", "gradient",
                                                                                     "instruction")}
    assert all(ch["replacement"] != ch["text"] for c in cfs for ch in c["changes"])  # spans resampled, not deleted
    capsys.readouterr()
    assert leaf_run(run, cache) == 0
    out = capsys.readouterr().out
    assert out.count(": skipped (finished with these settings") == len(STAGES)
    assert "| distill_kd" in out and "test_counterfactual" in out


def test_the_pool_and_tests_are_the_demos_seed_0(demo_run):
    run, _ = demo_run
    families = V2_QUICK.families
    assert read_jsonl(run / "prepare" / "pool.jsonl") == pool_mix(families, 80, 0.5, seed=101)
    for split in ("confounded", "counterfactual", "clean"):
        assert read_jsonl(run / "prepare" / f"test_{split}.jsonl") == generate_mix(families, split, 25, seed=103)
    labelled = read_jsonl(run / "label" / "labelled.jsonl")
    assert [r["id"] for r in labelled] == [r["id"] for r in pool_mix(families, 80, 0.5, seed=101)]


def test_recipe_accuracy_is_what_the_demo_measures(demo_run):
    """The recipe's evaluate of the KD student equals leaf.demo.pipeline.evaluate_model on that model folder."""
    run, _ = demo_run
    tests = {s: read_jsonl(run / "prepare" / f"test_{s}.jsonl") for s in ("counterfactual", "clean")}
    demo = evaluate_model(run / "distill_kd", tests)
    results = json.loads((run / "eval_kd" / "results.json").read_text())
    for split in tests:
        bench = results["benchmarks"][f"test_{split}"]
        assert (bench["correct"], bench["total"]) == (demo[split]["correct"], demo[split]["total"]), split
        assert bench["accuracy"] == demo[split]["accuracy"]
        verdicts = {r["id"]: r["correct"] for r in results["records"] if r["benchmark"] == f"test_{split}"}
        assert verdicts == demo[split]["verdicts"], split
    assert demo["counterfactual"]["total"] == 50
    # the teacher solves the counterfactual set; the student before distillation falls for the planted values.
    # Margins, not recorded numbers (the models train to other weights on another CPU or thread count): over the
    # demo's --quick v2 seeds 0-1 with OMP_NUM_THREADS=1 and 2 the teacher scored 0.98-1.00 counterfactual and the
    # student 0.34-0.44 (seed 0, which this recipe uses: 0.34), a gap of at least 0.56.
    teacher = json.loads((run / "eval_teacher" / "results.json").read_text())["benchmarks"]
    before = json.loads((run / "eval_before" / "results.json").read_text())["benchmarks"]
    assert teacher["test_counterfactual"]["accuracy"] >= 0.9
    assert before["test_counterfactual"]["accuracy"] < teacher["test_counterfactual"]["accuracy"] - 0.3
