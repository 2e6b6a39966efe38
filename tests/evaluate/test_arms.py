"""Arms over seeds (``leaf evaluate --arm``, a recipe's ``arms:``): accuracies and paired tests against the first
arm, checked against counts made here from the verdicts, and the errors of bad arms."""

from __future__ import annotations

import json
import math
import random
import statistics

import pytest

from leaf.cli import main
from leaf.config import ConfigError, build
from leaf.data.records import DataError
from leaf.evaluate import evaluate
from leaf.evaluate.arms import arms_text, compare_arms
from leaf.recipe import RecipeConfig
from leaf.recipe.runner import compare_arms_of, resolve_plan

BENCHES = ("clean", "distracted")


def _results(path, verdicts):
    """A results file as leaf evaluate writes it: per benchmark a summary, per problem a record."""
    records = [{"benchmark": b, "id": i, "correct": ok, "prediction": "", "answer": ""}
               for b, per in verdicts.items() for i, ok in per.items()]
    benches = {b: {"task": "math", "accuracy": sum(per.values()) / len(per), "correct": sum(per.values()),
                   "total": len(per)} for b, per in verdicts.items()}
    path.write_text(json.dumps({"model": path.stem, "benchmarks": benches, "records": records}))
    return path


def _draw(rng, p, n=40):
    return {b: {f"q{k}": rng.random() < p + (0.1 if b == "clean" else 0.0) for k in range(n)} for b in BENCHES}


def _binomial_p(b, c):
    """Two-sided exact binomial test of b successes in b + c at 1/2 (computed with math.comb)."""
    n, k = b + c, min(b, c)
    return 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


@pytest.fixture()
def arms(tmp_path):
    rng = random.Random(3)
    verdicts = {"KD": [_draw(rng, 0.4) for _ in range(3)], "LeaF": [_draw(rng, 0.55) for _ in range(3)],
                "one seed": [_draw(rng, 0.5)]}
    files = {a: [_results(tmp_path / f"{a.replace(' ', '_')}{k}.json", v) for k, v in enumerate(vs)]
             for a, vs in verdicts.items()}
    return verdicts, files


def test_accuracies_and_paired_tests_equal_counts_made_from_the_verdicts(arms):
    verdicts, files = arms
    result = compare_arms(files)
    assert result["baseline"] == "KD" and result["benchmarks"] == list(BENCHES)
    for arm, runs in verdicts.items():
        for b in BENCHES:
            accs = [sum(r[b].values()) / len(r[b]) for r in runs]
            got = result["arms"][arm]["accuracy"][b]
            assert got["per_seed"] == pytest.approx(accs)
            assert got["mean"] == pytest.approx(sum(accs) / len(accs))
            assert got["std"] == pytest.approx(statistics.stdev(accs) if len(accs) > 1 else 0.0)
            if arm == "KD":
                continue
            base = verdicts["KD"][:len(runs)]  # the one-seed arm pairs with KD's first seed
            only_arm = sum(r[b][q] and not k[b][q] for r, k in zip(runs, base) for q in r[b])
            only_kd = sum(k[b][q] and not r[b][q] for r, k in zip(runs, base) for q in r[b])
            diffs = [100 * (sum(r[b].values()) - sum(k[b].values())) / len(r[b]) for r, k in zip(runs, base)]
            vs = result["arms"][arm]["vs_baseline"][b]
            assert (vs["only_arm"], vs["only_baseline"]) == (only_arm, only_kd)
            assert vs["pooled_p"] == pytest.approx(_binomial_p(only_arm, only_kd))
            assert vs["diff_mean"] == pytest.approx(sum(diffs) / len(diffs))
            assert (vs["wins"], vs["losses"]) == (sum(d > 0 for d in diffs), sum(d < 0 for d in diffs))
    assert "vs_baseline" not in result["arms"]["KD"]
    text = arms_text(result)
    kd = result["arms"]["KD"]["accuracy"]["distracted"]
    assert f"{100 * kd['mean']:.1f} ± {100 * kd['std']:.1f}" in text and "Against KD, paired by seed" in text


def test_the_cli_prints_the_tables_and_writes_the_json(arms, tmp_path, capsys):
    _, files = arms
    out = tmp_path / "arms.json"
    flags = [f"--arm={a}={','.join(map(str, fs))}" for a, fs in files.items()]
    assert main(["evaluate", *flags, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Arms over seeds" in printed and str(out) in printed
    assert json.loads(out.read_text()) == json.loads(json.dumps(compare_arms(files)))


@pytest.mark.parametrize("arm, message", [
    ("KD", "expected NAME=RESULTS.json"), ("=a.json", "expected NAME=RESULTS.json"), ("KD=", "expected NAME"),
])
def test_a_malformed_arm_is_one_line(arm, message):
    with pytest.raises(ConfigError, match=message):
        evaluate(arm=[arm])


def test_bad_arms_are_refused(arms, tmp_path):
    verdicts, files = arms
    with pytest.raises(ConfigError, match="given twice"):
        evaluate(arm=[f"KD={files['KD'][0]}", f"KD={files['KD'][1]}"])
    with pytest.raises(ConfigError, match="never overwritten"):
        evaluate(arm=[f"KD={files['KD'][0]}"], out=files["KD"][0])
    with pytest.raises(DataError, match="only 1"):  # more seeds than the baseline: nothing to pair with
        compare_arms({"one seed": files["one seed"], "LeaF": files["LeaF"]})
    other = _results(tmp_path / "other.json", {b: {f"z{k}": True for k in range(40)} for b in BENCHES})
    with pytest.raises(DataError, match="different problems"):
        compare_arms({"KD": files["KD"][:1], "other": [other]})
    partial = _results(tmp_path / "partial.json", {"clean": verdicts["KD"][0]["clean"]})
    with pytest.raises(DataError, match="no records of benchmark 'distracted'"):
        compare_arms({"KD": files["KD"][:1], "partial": [partial]})
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"benchmarks": {}}))
    with pytest.raises(DataError, match="per-problem records"):
        compare_arms({"KD": [bare]})


def _recipe(tmp_path, arms):
    bench = {"stage": "distractors", "n": 2, "seed": 0, "families": ["add"]}
    recipe = {"run": str(tmp_path / "run"), "student": "s", "teacher": "t", "task": "math",
              "stages": ["tests", "eval_a", "eval_b", "eval_c"], "tests": bench, "arms": arms,
              **{f"eval_{x}": {"stage": "evaluate", "model": "student", "benchmark": ["tests.clean"]}
                 for x in "abc"}}
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(recipe))
    return resolve_plan(build(RecipeConfig, {"recipe": path}))


def test_a_recipe_compares_its_finished_arms_and_names_the_others(tmp_path, arms):
    verdicts, _ = arms
    p = _recipe(tmp_path, {"KD": ["eval_a", "eval_b"], "LeaF": ["eval_c"], "later": ["eval_c", "eval_b"]})
    steps = {s.name: s for s in p.steps}
    assert compare_arms_of(p) == "arms not compared yet (their evaluate stages have not all run): KD, LeaF, later"
    for name, v in (("eval_a", verdicts["KD"][0]), ("eval_b", verdicts["KD"][1]), ("eval_c", verdicts["LeaF"][0])):
        steps[name].output.parent.mkdir(parents=True)
        _results(steps[name].output, v)
    text = compare_arms_of(p)
    expected = compare_arms({"KD": [steps["eval_a"].output, steps["eval_b"].output],
                             "LeaF": [steps["eval_c"].output], "later": [steps["eval_c"].output,
                                                                         steps["eval_b"].output]})
    assert json.loads((p.run / "arms.json").read_text()) == json.loads(json.dumps(expected))
    assert arms_text(expected) in text


@pytest.mark.parametrize("arms, message", [
    ({"KD": ["tests"]}, "'tests' is a distractors stage"), ({"KD": ["eval_z"]}, "'eval_z' is not in `stages:`"),
    ({"KD": []}, "expected a list"), (["eval_a"], "expected a mapping"), ({"KD": ["eval_a", "eval_a"]}, "twice"),
])
def test_a_recipes_bad_arms_are_refused_before_anything_runs(tmp_path, arms, message):
    with pytest.raises(ConfigError, match=message):
        _recipe(tmp_path, arms)
