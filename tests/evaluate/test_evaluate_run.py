"""``leaf evaluate`` end to end on a tiny local model, scoring given predictions, and comparison tables."""

from __future__ import annotations

import json

import pytest

from leaf.cli import main
from leaf.data.jsonl import read_jsonl
from leaf.data.records import DataError
from leaf.checkers import get_checker
from leaf.generation import generate
from leaf.evaluate.run import compare_table, evaluate, generations_path
from leaf.models import load_model, load_tokenizer
from leaf.tiny import build_model


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, llama_tok):
    d = tmp_path_factory.mktemp("tiny")
    model = build_model(llama_tok, hidden_size=32, num_layers=2, seed=5)
    model.save_pretrained(d)
    llama_tok.save_pretrained(d)
    return d


@pytest.fixture()
def samples_file(tmp_path):
    p = tmp_path / "demo.jsonl"
    rows = [
        {"id": i, "instruction": f"What is {i} plus {i}?", "response": f"The answer is {2 * i}.", "answer": str(2 * i)}
        for i in range(5)
    ]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_evaluate_generates_scores_and_resumes(tmp_path, tiny_dir, samples_file):
    out = tmp_path / "res.json"
    options = dict(model=str(tiny_dir), benchmark=[str(samples_file)], task="exact", out=out, max_new_tokens=8,
                   batch_size=2, dtype="float32", device="cpu")
    res = evaluate(**options).results
    b = res["benchmarks"]["demo"]
    assert b["total"] == 5 and b["task"] == "exact"
    # the generations are exactly what generate() gives, and the scores are what the checker says about them
    gens = {str(r["id"]): r["generation"] for r in read_jsonl(generations_path(out, "demo"))}
    model, tok = load_model(str(tiny_dir)), load_tokenizer(str(tiny_dir))
    instructions = [f"What is {i} plus {i}?" for i in range(5)]
    assert [gens[str(i)] for i in range(5)] == generate(model, tok, instructions, max_new_tokens=8)
    from leaf.data.records import load_samples

    checker = get_checker("exact")
    expected = [checker.check(gens[str(s.id)], s) for s in load_samples(samples_file)]
    assert [r["correct"] for r in res["records"]] == expected
    assert b["correct"] == sum(expected) and b["accuracy"] == pytest.approx(sum(expected) / 5)
    on_disk = json.loads(out.read_text())
    assert on_disk["model"] == str(tiny_dir) and on_disk["benchmarks"]["demo"] == b
    # resume: nothing new to generate, same results
    mtime = generations_path(out, "demo").stat().st_mtime_ns
    again = evaluate(**options).results
    assert again["benchmarks"]["demo"] == b
    assert generations_path(out, "demo").stat().st_mtime_ns == mtime


def test_score_predictions(tmp_path):
    preds = tmp_path / "preds.jsonl"
    rows = [
        {"id": "a", "prediction": "so \\boxed{\\frac{1}{2}}", "answer": "0.5"},
        {"id": "b", "prediction": "#### 72", "answer": "72"},
        {"id": "c", "prediction": "The answer is 7", "answer": "8"},
        {"id": "d", "generation": "The answer is $1,000.", "answer": "1000"},
    ]
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "scored.json"
    assert main(["evaluate", "--predictions", str(preds), "--task", "math", "--out", str(out), "--name", "mine"]) == 0
    res = json.loads(out.read_text())
    assert res["model"] == "mine"
    assert res["benchmarks"]["preds"] == {"accuracy": 0.75, "correct": 3, "total": 4, "task": "math"}
    assert [r["correct"] for r in res["records"]] == [True, True, False, True]


def test_score_predictions_against_a_benchmark(tmp_path):
    from pathlib import Path

    fix = Path(__file__).parent.parent / "data" / "fixtures" / "benchmarks" / "hotpot_dev_distractor_v1.json"
    preds = tmp_path / "p.jsonl"
    preds.write_text(
        json.dumps({"id": "5a8b57f25542995d1e6f1371", "prediction": "Both are American. The answer is yes."})
        + "\n"
        + json.dumps({"id": "5a8c7595554299585d9e36b6", "prediction": "The answer is Chief of Protocol of the US."})
        + "\n"
    )
    res = evaluate(predictions=preds, benchmark=[f"hotpotqa={fix}"], out=tmp_path / "r.json").results
    b = res["benchmarks"]["hotpotqa"]
    assert (b["correct"], b["total"]) == (1, 2)
    # second: pred "chief of protocol of us" (5 tokens) vs gold "chief of protocol" (3): P=3/5, R=1, F1=0.75
    assert b["f1"] == pytest.approx((1.0 + 0.75) / 2)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "nope", "prediction": "x"}) + "\n")
    from leaf.data.records import DataError

    with pytest.raises(DataError, match="not in hotpotqa"):
        evaluate(predictions=bad, benchmark=[f"hotpotqa={fix}"], out=tmp_path / "r2.json")


def _results(path, model, accs):
    benches = {n: {"accuracy": a, "correct": 0, "total": 1, "task": t} for n, (a, t) in accs.items()}
    path.write_text(json.dumps({"model": model, "benchmarks": benches, "records": []}))
    return path


def test_compare_table(tmp_path, capsys):
    a = _results(
        tmp_path / "a.json",
        "Pre-KD",
        {"gsm8k": (0.4488, "math"), "math500": (0.242, "math"), "humaneval-plus": (0.2927, "code")},
    )
    b = _results(
        tmp_path / "b.json",
        "LeaF",
        {"math500": (0.354, "math"), "gsm8k": (0.577, "math"), "humaneval-plus": (0.3902, "code")},
    )
    table = compare_table([a, b])
    lines = table.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["Model", "GSM8K", "MATH-500", "HumanEval+", "Avg math", "Avg code", "Avg"]
    row = [c.strip() for c in lines[2].strip("|").split("|")]
    assert row[:4] == ["Pre-KD", "44.88", "24.20", "29.27"]
    assert float(row[4]) == pytest.approx((44.88 + 24.20) / 2, abs=0.006)
    assert float(row[6]) == pytest.approx((44.88 + 24.20 + 29.27) / 3, abs=0.006)
    assert [c.strip() for c in lines[3].strip("|").split("|")][:2] == ["LeaF", "57.70"]
    assert main(["evaluate", "--compare", str(a), str(b)]) == 0
    assert capsys.readouterr().out.strip() == table


def test_compare_marks_missing_benchmarks(tmp_path):
    a = _results(tmp_path / "a.json", "m", {"gsm8k": (0.5, "math")})
    b = _results(tmp_path / "b.json", "m", {"math500": (0.25, "math")})
    rows = compare_table([a, b]).splitlines()[2:]
    cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
    assert cells[0] == ["m (a)", "50.00", "-", "50.00"]
    assert cells[1] == ["m (b)", "-", "25.00", "25.00"]


def test_cli_errors_are_clear(tmp_path, capsys):
    assert main(["evaluate", "--out", str(tmp_path / "x.json")]) == 2
    assert "--model" in capsys.readouterr().err


def test_yaml_config(tmp_path):
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"id": 1, "prediction": "The answer is 17.", "answer": "17"}) + "\n")
    cfg = tmp_path / "eval.yaml"
    out = tmp_path / "o.json"
    cfg.write_text(f"predictions: {preds}\ntask: exact\nout: {out}\nname: from-yaml\n")
    assert main(["evaluate", "--config", str(cfg)]) == 0
    res = json.loads(out.read_text())
    assert res["model"] == "from-yaml" and res["benchmarks"]["p"]["correct"] == 1


def test_predictions_without_gold_fail_clearly(tmp_path, capsys):
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"id": 3, "prediction": "def f(): pass"}) + "\n")
    assert main(["evaluate", "--predictions", str(preds), "--task", "code", "--out", str(tmp_path / "o.json")]) == 2
    assert "sample 3" in capsys.readouterr().err


def test_other_settings_on_the_same_output_are_refused(tmp_path, tiny_dir, samples_file, capsys):
    out = tmp_path / "res.json"
    base = ["evaluate", "--model", str(tiny_dir), "--benchmark", str(samples_file), "--task", "exact"]
    base += ["--out", str(out), "--dtype", "float32", "--device", "cpu"]
    assert main([*base, "--max-new-tokens", "4"]) == 0
    assert main([*base, "--max-new-tokens", "5"]) == 2
    assert "other settings" in capsys.readouterr().err
    assert main([*base, "--max-new-tokens", "5", "--overwrite"]) == 0


def test_predictions_with_duplicate_or_bad_ids_are_refused(tmp_path):
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"id": 1, "prediction": "The answer is 2.", "answer": "2"}\n'
                     '{"id": "1", "prediction": "The answer is 3.", "answer": "2"}\n'
                     '{"id": [1], "prediction": "x", "answer": "2"}\n')
    with pytest.raises(DataError) as err:
        evaluate(predictions=preds, task="exact", out=tmp_path / "r.json")
    assert "p.jsonl:2: field 'id': duplicate id '1' (first on line 1)" in str(err.value)
    assert "p.jsonl:3: field 'id': must be str or int, got list" in str(err.value)
    assert not (tmp_path / "r.json").exists()


def test_results_of_another_model_or_a_damaged_file_are_never_dropped(tmp_path):
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"id": 1, "prediction": "The answer is 2.", "answer": "2"}\n')
    out = tmp_path / "r.json"
    first = evaluate(predictions=preds, task="exact", out=out, name="A").results
    assert first["benchmarks"]["p"]["accuracy"] == 1.0
    before = out.read_bytes()
    with pytest.raises(DataError, match="holds the results of model 'A'"):
        evaluate(predictions=preds, task="exact", out=out, name="B")
    assert out.read_bytes() == before
    out.write_text("")  # as a kill during a non-atomic write would have left it
    with pytest.raises(DataError, match="exists but is not a results file"):
        evaluate(predictions=preds, task="exact", out=out, name="A")


def test_answer_pattern_scores_a_users_own_format(tmp_path, capsys):
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"id": 1, "prediction": "3 and 4 make answer 7", "response": "so answer 7"}\n'
                     '{"id": 2, "prediction": "answer 9", "response": "answer 8"}\n')
    out = tmp_path / "r.json"
    assert main(["evaluate", "--predictions", str(preds), "--task", "exact", "--out", str(out),
                 "--answer-pattern", r"answer (\d+)"]) == 0
    assert json.loads(out.read_text())["benchmarks"]["p"]["correct"] == 1
    assert main(["evaluate", "--predictions", str(preds), "--task", "exact", "--out", str(tmp_path / "x.json"),
                 "--answer-pattern", r"answer \d+"]) == 2
    assert "must have exactly one group" in capsys.readouterr().err
