"""The demo-data stage without training anything: its draws, the runner's wiring around it, its refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from leaf.cli import main
from leaf.config import ConfigError, build
from leaf.demo.export import demo_data
from leaf.demo.export.config import DemoDataConfig
from leaf.demo.pipeline import pool_mix
from leaf.demo.tasks import generate_mix
from leaf.recipe import RecipeConfig
from leaf.recipe.estimate import estimate_plan
from leaf.recipe.runner import resolve_plan
from leaf.recipe.stages import plan

ROOT = Path(__file__).resolve().parents[2]
QUICK = ROOT / "configs" / "recipes" / "demo_quick.yaml"


def test_draws_are_the_demos_for_that_seed():
    cfg = build(DemoDataConfig, {"out": "x", "quick": True, "seed": 2})
    pool, tests = cfg.draw()
    families = ("arith", "distract")  # V2_QUICK's
    assert pool == pool_mix(families, 80, 0.5, seed=301)
    assert len(pool) == 160 and sum(r["meta"]["split"] == "clean" for r in pool) == 80
    assert set(tests) == {"confounded", "counterfactual", "clean"}
    for split, records in tests.items():
        assert records == generate_mix(families, split, 25, seed=303)
    full = build(DemoDataConfig, {"out": "x", "setting": "v1", "n_train": 7, "n_test": 3})
    pool, tests = full.draw()
    assert len(pool) == 14 and not any(r["meta"]["split"] == "clean" for r in pool)  # v1: no clean share
    assert pool == pool_mix(("arith", "code"), 7, 0.0, seed=101)
    assert all(len(v) == 6 for v in tests.values())


def _plan(tmp_path: Path, **recipe):
    base = {"run": str(tmp_path / "run"), "task": "exact", "stages": ["prepare", "label", "distill", "eval_kd"],
            "prepare": {"stage": "demo-data", "quick": True}, "distill": {"lam": 1.0, "counterfactuals": None},
            "eval_kd": {"stage": "evaluate", "model": "distill", "benchmark": ["counterfactual", "gsm8k"]}}
    base.update(recipe)
    return plan(base)


def test_runner_fills_the_demos_paths_into_later_stages(tmp_path):
    run, steps, _ = _plan(tmp_path)
    folder = run / "prepare"
    by = {s.name: s for s in steps}
    assert by["prepare"].values["out"] == str(folder)
    assert by["label"].values["data"] == str(folder / "pool.jsonl")
    assert (by["label"].values["teacher"], by["label"].values["student"]) == (str(folder / "teacher"),
                                                                              str(folder / "student"))
    assert by["distill"].values["data"] == str(folder / "pool.jsonl")
    assert by["distill"].values["student"] == str(folder / "student")
    assert by["eval_kd"].values["benchmark"] == [str(folder / "test_counterfactual.jsonl"), "gsm8k"]
    assert by["eval_kd"].values["model"] == str(run / "distill")
    assert by["eval_kd"].sources == ["prepare", "distill"]
    # no benchmark: all three test sets
    _, steps, _ = _plan(tmp_path, eval_kd={"stage": "evaluate", "model": "student"})
    assert steps[-1].values["benchmark"] == [str(folder / f"test_{s}.jsonl")
                                             for s in ("confounded", "counterfactual", "clean")]
    assert steps[-1].values["model"] == str(folder / "student")


@pytest.mark.parametrize(("change", "message"), [
    ({"stages": ["label", "prepare", "distill", "eval_kd"]}, "must be the first in `stages:`"),
    ({"stages": ["prepare", "prepare2", "distill", "eval_kd"], "prepare2": {"stage": "demo_data"}},
     "are both demo-data stages"),
    ({"teacher": "me/teacher"}, "shared key 'teacher': the demo-data stage 'prepare' provides the teacher"),
    ({"prepare": {"stage": "demo-data", "out": "elsewhere"}}, "'out' is a path between stages"),
])
def test_bad_demo_recipes_are_refused(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        _plan(tmp_path, **change)


def test_bad_options_are_refused_before_anything_is_built(tmp_path):
    with pytest.raises(ConfigError, match="setting.*v3"):
        demo_data(out=tmp_path / "d", setting="v3")
    with pytest.raises(ConfigError, match="seed"):
        demo_data(out=tmp_path / "d", seed=-1)
    with pytest.raises(ConfigError, match="n_test"):
        demo_data(out=tmp_path / "d", n_test=0)
    (tmp_path / "file").write_text("")
    assert main(["demo-data", "--out", str(tmp_path / "file"), "--cache-dir", str(tmp_path / "cache")]) == 2
    assert not (tmp_path / "cache").exists()  # refused before any model was trained


def test_dry_run_counts_the_demos_sets_and_sizes_its_models(tmp_path, capsys):
    cfg = build(RecipeConfig, {"recipe": QUICK, "overrides": [f"run={tmp_path / 'run'}",
                                                              f"prepare.cache_dir={tmp_path / 'cache'}"]})
    p = resolve_plan(cfg)
    est = {e.name: e for e in estimate_plan(p)}
    lines = dict(est["prepare"].lines)
    assert lines["samples"] == "pool 160; tests confounded 50, counterfactual 50, clean 50"
    assert "trained once into" in lines["compute"]
    assert "50 samples x up to 64 new tokens" in dict(est["eval_kd"].lines)[str(tmp_path / "run" / "prepare" /
                                                                               "test_counterfactual.jsonl")]
    # the student's spec: 2 layers of hidden 32 (MLP 128), vocabulary 512, untied head
    student = DemoDataConfig(out=Path("x"), quick=True).model_config("student")
    from leaf.estimate import param_count

    assert param_count(student) == 512 * 32 * 2 + 2 * (4 * 32 * 32 + 3 * 32 * 128 + 2 * 32) + 32
    assert est["detect"].numbers["student_params"] == param_count(student)
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()
