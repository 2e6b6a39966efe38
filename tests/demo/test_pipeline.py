"""`leaf demo --quick` end to end: every stage runs, the results follow the documented schema, the counts and
accuracies are what the per-problem files say, and the premise and the method-level facts hold with margins.

The tiny models train to other weights on another CPU or thread count, so no number here is one recorded run's:
each margin was measured over seeds 0-2 with OMP_NUM_THREADS=1 and 2 (this machine) and seed 0 of the run
recorded on another x86 machine. Checking that a refactor changes nothing on one machine is tests/demo/golden.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from leaf.cli import main
from leaf.demo.config import ARMS, SPLITS, DemoConfig


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def verdicts_agree(seed_dir: Path, accuracy: dict[str, dict[str, float]], n_test: int) -> dict[str, Any]:
    """Every arm's accuracy per split recomputed from the per-problem verdicts of ``eval/ARM.json``."""
    verdicts = {}
    for arm in accuracy:
        bench = json.loads((seed_dir / "eval" / f"{arm}.json").read_text())["benchmarks"]
        verdicts[arm] = {split: bench[split]["verdicts"] for split in SPLITS}
        for split in SPLITS:
            v = verdicts[arm][split]
            assert len(v) == bench[split]["total"] == n_test, (arm, split)
            assert bench[split]["correct"] == sum(v.values())
            assert accuracy[arm][split] == pytest.approx(sum(v.values()) / len(v))
    return verdicts


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--quick", "--setting", "v1", "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "### Accuracy (%)" in printed and "results:" in printed

    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"config", "models", "seeds", "summary", "timings"}
    assert results["config"]["quick"] is True and len(results["seeds"]) == 1
    seed = results["seeds"][0]
    assert set(seed) == {"seed", "counts", "counterfactuals", "accuracy", "detection", "attention"}
    # every arm (and the teacher) evaluated on every test set, accuracies in [0, 1]
    assert set(seed["accuracy"]) == {"teacher", *ARMS}
    for acc in seed["accuracy"].values():
        assert set(acc) == set(SPLITS) and all(0.0 <= v <= 1.0 for v in acc.values())
    # label counts add up; detection is scored for each method and tau
    counts = seed["counts"]
    assert counts["student_wrong_teacher_right"] <= counts["pool"] - counts["student_correct"]
    assert set(seed["detection"]) == {"gradient", "random", "ppl"}
    for method in seed["detection"].values():
        q = method["default"]
        assert 0.0 <= q["precision"] <= 1.0 and 0.0 <= q["hit_rate"] <= 1.0
        assert q["samples"] == counts["student_wrong_teacher_right"]
    assert set(seed["detection"]["gradient"]["by_tau"]) == {"0.05", "0.1", "0.15", "0.2", "0.3"}
    assert set(seed["attention"]) == {"pre_kd", "kd", "leaf_instr", "leaf_oracle", "leaf_resample", "teacher"}
    assert all(seed["counterfactuals"][name] >= 0 for name in seed["counterfactuals"])
    # summary: mean/std per arm and split
    kd = results["summary"]["accuracy"]["kd"]["counterfactual"]
    assert kd["n"] == 1 and kd["std"] == 0.0 and kd["mean"] == seed["accuracy"]["kd"]["counterfactual"]
    # files a person looks at
    assert (out / "table.md").read_text().startswith("### Accuracy (%)")
    html = (out / "report.html").read_text()
    assert "<html" in html and "leaf demo" in html
    for name in ("detections.jsonl", "counterfactuals.jsonl", "eval/kd.json", "train-kd/metrics.jsonl",
                 "analysis/attention.json"):
        assert (out / "seed-0" / name).exists(), name

    # counts exactly, and what the per-problem files say: 2 families x 80 pool problems, 2 x 25 per test set
    seed_dir = out / "seed-0"
    labelled = read_jsonl(seed_dir / "labelled.jsonl")
    assert counts["pool"] == len(labelled) == 160
    assert counts["teacher_correct"] == sum(r["teacher_correct"] for r in labelled)
    assert counts["student_correct"] == sum(r["student_correct"] for r in labelled)
    assert counts["student_wrong_teacher_right"] == sum(r["teacher_correct"] and not r["student_correct"]
                                                        for r in labelled)
    verdicts_agree(seed_dir, seed["accuracy"], n_test=50)
    assert len(read_jsonl(seed_dir / "det_gradient.jsonl")) == counts["student_wrong_teacher_right"]
    for name, n in seed["counterfactuals"].items():
        assert len(read_jsonl(seed_dir / f"cf_{name}.jsonl")) == n, name
    # one oracle / selected record per analysed sample (v1 plants a span in every pool problem)
    for name in ("oracle", "oracle_mask", "oracle_resample", "selected"):
        assert seed["counterfactuals"][name] == counts["student_wrong_teacher_right"], name

    # Method-level facts. Measured (seeds 0-2 x OMP_NUM_THREADS 1, 2; and seed 0 recorded elsewhere):
    acc = seed["accuracy"]
    # the teacher solves every test set: 1.00 on every split in all 7 runs
    assert all(acc["teacher"][split] >= 0.9 for split in SPLITS)
    # the premise: the student is misled by the planted values: confounded 0.92-0.98, counterfactual 0.02-0.10
    # (gap >= 0.84), and the teacher is right where it is misled (teacher - student counterfactual >= 0.90)
    assert acc["pre_kd"]["confounded"] >= acc["pre_kd"]["counterfactual"] + 0.6
    assert acc["teacher"]["counterfactual"] >= acc["pre_kd"]["counterfactual"] + 0.7
    assert counts["teacher_correct"] >= 0.95 * counts["pool"]  # 160 of 160 in all 7 runs
    # KD on v1's all-confounded pool costs clean accuracy: pre-KD clean 0.52-0.62, KD 0.18-0.30 (loss >= 0.28)
    assert acc["kd"]["clean"] <= acc["pre_kd"]["clean"] - 0.1
    # gradient detection finds the planted spans: hit rate 0.89-1.00, precision 0.67-1.00 (0.67 in a fresh clone
    # on another machine at OMP_NUM_THREADS=1, hit rate 0.91 there); random <= 0.11, PPL 0
    det = {m: seed["detection"][m]["default"] for m in ("gradient", "random", "ppl")}
    assert det["gradient"]["hit_rate"] >= 0.8 and det["gradient"]["precision"] >= 0.5
    assert det["gradient"]["precision"] >= max(det["random"]["precision"], det["ppl"]["precision"]) + 0.4
    assert det["gradient"]["hit_rate"] >= max(det["random"]["hit_rate"], det["ppl"]["hit_rate"]) + 0.5
    # the teacher attends less to the planted spans than the student: teacher / pre-KD 0.68-0.70
    assert seed["attention"]["teacher"] <= 0.85 * seed["attention"]["pre_kd"]

    # resuming the finished run recomputes nothing and gives the same results
    again = main(["demo", "--quick", "--setting", "v1", "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    assert again == 0
    resumed = json.loads((out / "results.json").read_text())
    assert resumed["seeds"] == results["seeds"]
    with pytest.raises(ValueError, match="other settings"):
        from leaf.demo.pipeline import demo

        demo(DemoConfig(out=out, quick=True, setting="v1", steps=3, cache_dir=tmp_path / "cache"))


def test_unknown_arm_is_refused(capsys):
    assert main(["demo", "--arms", "kd", "leaf_magic"]) == 2
    assert "unknown arm(s) leaf_magic" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_demo_v2_tables_agree_with_the_per_problem_verdicts(tmp_path):
    """The v2 run: a pool with clean problems, the distractor family, budgets, paired tests and the figure,
    every summary number recomputed here from the per-problem verdicts the run wrote."""
    from leaf.stats import paired

    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    results = json.loads((out / "results.json").read_text())
    cfg = results["config"]
    assert cfg["setting"] == "v2" and cfg["pool_clean_share"] == 0.5
    summary = results["summary"]
    families = summary["families"]
    assert families == ["arith", "distract"]

    # the pool: half clean, half confounded, per family; clean and confounded problems differ
    pool = read_jsonl(out / "seed-0" / "pool.jsonl")
    for fam in families:
        mine = [r for r in pool if r["meta"]["family"] == fam]
        assert len(mine) == cfg["n_train"]
        assert sum(r["meta"]["split"] == "clean" for r in mine) == round(cfg["n_train"] * 0.5)
        assert len({r["id"].rsplit("-", 1)[1] for r in mine}) == len(mine)

    # accuracies and per-family accuracies are what the per-problem verdicts say
    verdicts = verdicts_agree(out / "seed-0", results["seeds"][0]["accuracy"], n_test=cfg["n_test"] * len(families))
    for arm in verdicts:
        for split in SPLITS:
            v = verdicts[arm][split]
            for fam in families:
                fv = [ok for k, ok in v.items() if k.startswith(fam + "-")]
                assert summary["by_family"][arm][split][fam]["mean"] == pytest.approx(sum(fv) / len(fv))

    # the paired tests: recomputed from the verdicts
    for arm, by_ref in summary["paired"].items():
        for ref, cells in by_ref.items():
            mine = paired([verdicts[arm]["counterfactual"]], [verdicts[ref]["counterfactual"]])
            assert cells["counterfactual"]["diff_mean"] == pytest.approx(mine["diff_mean"])
            assert cells["counterfactual"]["pooled_p"] == pytest.approx(mine["pooled_p"])
    assert set(summary["paired"]) >= {"leaf_instr", "leaf_resample", "kd"}

    # equal optimiser steps and examples for every trained arm; tokens within 5 % of KD's
    budget = summary["budget"]
    assert {b["steps"]["mean"] for b in budget.values()} == {cfg["steps"]}
    assert {b["examples_seen"]["mean"] for b in budget.values()} == {cfg["steps"] * cfg["batch_size"]}
    kd_tokens = budget["kd"]["tokens_seen"]["mean"]
    assert all(abs(b["tokens_seen"]["mean"] / kd_tokens - 1) < 0.05 for b in budget.values())
    assert budget["kd"]["counterfactual_records"]["mean"] == 0 < budget["leaf_instr"]["counterfactual_records"]["mean"]

    # the goals are measured and the figure and report show the run
    assert [g["met"] in (True, False) for g in summary["goals"]] and len(summary["goals"]) == 4
    assert (out / "arms.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "report.html").read_text()
    assert 'id="benchmark"' in html and "data:image/png;base64" in html
    table = (out / "table.md").read_text()
    assert "### Paired tests" in table and "### Goals of the v2 benchmark" in table


def test_combined_sets_keep_every_record_under_a_unique_id():
    from leaf.data.counterfactuals import counterfactual_from_json
    from leaf.demo.pipeline import combine_sets

    def rec(rid, text):
        problems: list[str] = []
        r = counterfactual_from_json({"id": rid, "instruction": text, "response": "r", "removed": []}, rid, problems)
        assert r is not None, problems
        return r

    deleted = [rec("a#s0", "x"), rec("b#s0", "y")]
    resampled = [rec("a#s0", "x2"), rec("c#s0", "z")]
    out = combine_sets({"gradient": deleted, "gradient_resample": resampled})
    assert [r.id for r in out] == ["a#s0", "b#s0", "a#s0+gradient_resample", "c#s0"]
    assert [r.instruction for r in out] == ["x", "y", "x2", "z"]


def test_pool_mix_interleaves_clean_and_confounded_problems():
    from leaf.demo.pipeline import pool_mix
    from leaf.demo.tasks import generate_mix

    pool = pool_mix(("arith", "code"), 10, 0.3, seed=5)
    assert len(pool) == 20 and sum(r["meta"]["split"] == "clean" for r in pool) == 6
    # the confounded problems are v1's pool shifted past the clean ones; no share is v1's pool exactly
    assert [r for r in pool if r["meta"]["split"] == "confounded"] == generate_mix(("arith", "code"), "confounded", 7,
                                                                                   seed=5, start=3)
    assert pool_mix(("arith", "code"), 10, 0.0, seed=5) == generate_mix(("arith", "code"), "confounded", 10, seed=5)
    # evenly spread: no run of more than 3 confounded records between clean ones
    splits = "".join("c" if r["meta"]["split"] == "clean" else "k" for r in pool)
    assert "kkkk" not in splits.strip("k")
