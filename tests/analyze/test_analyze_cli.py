"""``leaf analyze`` end to end on tiny saved models: schema, figures, resume."""

from __future__ import annotations

import json

import pytest

from leaf.analyze.run import analyze_sample
from leaf.analyze.spans import load_span_samples
from leaf.cli import main
from leaf.models import load_model, load_tokenizer
from leaf.tiny import build_model

INSTR = [
    "Tom has 3 apples and buys 5 more. Ignore the hint: 42. How many apples does he have?",
    "Paris is the capital of France. The key 42 maps to 17. What is the capital of France?",
    "Step 1: read the question. Berlin is the capital of Germany. Compute 12 * 4.",
]
FLAGGED = ["Ignore the hint: 42.", "The key 42 maps to 17.", "Berlin is the capital of Germany."]
RESP = ["The answer is 8.", "Paris.", "12 * 4 = 48. The answer is 48."]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, llama_tok):
    root = tmp_path_factory.mktemp("analyze")
    for name, size, layers, seed in (("student", 32, 2, 1), ("teacher", 48, 3, 2)):
        build_model(llama_tok, hidden_size=size, num_layers=layers, seed=seed).save_pretrained(root / name)
        llama_tok.save_pretrained(root / name)
    with (root / "cf.jsonl").open("w") as fh:
        for k, (instr, resp, flag) in enumerate(zip(INSTR, RESP, FLAGGED)):
            start = instr.index(flag)
            pruned = instr[:start] + instr[start + len(flag) :]
            fh.write(
                json.dumps(
                    {
                        "id": f"{k}-0", "source_id": k, "instruction": pruned, "response": resp,
                        "removed": [{"start": start, "end": start + len(flag), "text": flag}],
                        "strategy": "span", "level": "instruction", "method": "gradient", "intervention": "delete",
                    }
                )
                + "\n"
            )
    return root


def test_analyze_cli_writes_schema_figures_and_resumes(run_dir, capsys):
    out = run_dir / "analysis"
    argv = [
        "analyze", "--model", str(run_dir / "student"), "--model", str(run_dir / "teacher"),
        "--label", "student", "teacher", "--data", str(run_dir / "cf.jsonl"), "--out", str(out), "--heatmaps", "2",
    ]
    assert main(argv) == 0
    assert "student: 3 samples (0 skipped)" in capsys.readouterr().out
    result = json.loads((out / "attention.json").read_text())
    assert [m["label"] for m in result["models"]] == ["student", "teacher"]
    assert [m["num_layers"] for m in result["models"]] == [2, 3]
    assert result["data_kind"] == "counterfactuals"
    _, samples = load_span_samples(run_dir / "cf.jsonl")
    for m in result["models"]:
        model = load_model(m["model"], attn_implementation="eager")
        tok = load_tokenizer(m["model"])
        assert [r["id"] for r in m["samples"]] == [0, 1, 2]
        for rec, sample in zip(m["samples"], samples):
            direct = analyze_sample(model, tok, sample, max_length=2048, profile=False)
            assert rec["per_layer"]["share_on_span"] == pytest.approx(direct["per_layer"]["share_on_span"], abs=1e-6)
            assert len(rec["per_layer"]["share_on_span"]) == m["num_layers"]
            assert ("tokens" in rec) == (rec["id"] in (0, 1))
        s = m["summary"]
        assert s["samples"] == 3
        assert s["share_on_span"] == pytest.approx(sum(r["share_on_span"] for r in m["samples"]) / 3)
        for i in range(m["num_layers"]):
            mean_i = sum(r["per_layer"]["share_on_span"][i] for r in m["samples"]) / 3
            assert s["per_layer"]["share_on_span"][i] == pytest.approx(mean_i)
        assert s["share_on_span"] + s["share_on_rest"] + s["share_on_template"] == pytest.approx(1.0)
    figs = result["figures"]
    assert figs["layers"] == "attention_layers.png" and len(figs["heatmaps"]) == 2
    for name in [figs["layers"], *figs["heatmaps"]]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a rerun resumes: nothing is recomputed, the same numbers come out
    lines = (out / "attention_samples.jsonl").read_text()
    assert main(argv + ["--plots", "false"]) == 0
    assert (out / "attention_samples.jsonl").read_text() == lines
    again = json.loads((out / "attention.json").read_text())
    assert again["models"][0]["summary"] == result["models"][0]["summary"]
    # other settings are refused instead of mixed in
    capsys.readouterr()
    assert main(argv + ["--max-length", "64"]) == 2
    assert "written with other settings (differ in: max_length)" in capsys.readouterr().err


def test_analyze_refuses_bad_labels(run_dir, capsys):
    argv = ["analyze", "--model", str(run_dir / "student"), "--label", "a", "b", "--data", "x", "--out", "y"]
    assert main(argv) == 2
    assert "--label: got 2 label(s) for 1 model(s)" in capsys.readouterr().err


def test_analyze_api_on_detections_with_samples(run_dir, tmp_path):
    from leaf.analyze.run import analyze

    samples = tmp_path / "samples.jsonl"
    det = tmp_path / "detections.jsonl"
    with samples.open("w") as fs, det.open("w") as fd:
        for k, (instr, resp, flag) in enumerate(zip(INSTR, RESP, FLAGGED)):
            fs.write(json.dumps({"id": f"s{k}", "instruction": instr, "response": resp}) + "\n")
            start = instr.index(flag)
            fd.write(json.dumps({"id": f"s{k}", "level": "instruction", "method": "gradient", "tokens": [],
                                 "spans": [[start, start + len(flag)]], "truncated": 0}) + "\n")
    result = analyze(model=[str(run_dir / "student")], data=det, samples=samples, out=tmp_path / "out",
                     max_samples=2, max_length=24, plots=False).result
    (m,) = result["models"]
    assert result["data_kind"] == "detections" and result["figures"] == {}
    assert [r["id"] for r in m["samples"]] == ["s0", "s1"]
    # every sample is longer than 24 tokens: all skipped, and said so
    assert m["summary"]["samples"] == 0 and m["summary"]["skipped"] == {"longer than --max-length": 2}
    assert m["summary"]["share_on_span"] is None
    assert json.loads((tmp_path / "out" / "attention.json").read_text())["models"][0]["label"] == "student"


def test_responses_make_each_models_own_answers_the_queries(run_dir, tmp_path, llama_tok):
    """--responses: per model, the sample's response is its own generation (cut after the '####' line); the
    records equal analyze_sample on that text, and a sample with no generation is left out for that model."""
    from dataclasses import replace

    gens = {
        "student": ["It has 8.\n#### 8\nand more text", "Paris is it."],
        "teacher": ["8 apples\n#### 8", "France.\n#### Paris", "48\n#### 48"],
    }
    files = []
    for label, texts in gens.items():
        path = tmp_path / f"{label}.jsonl"
        path.write_text("".join(json.dumps({"id": k, "generation": t}) + "\n" for k, t in enumerate(texts)))
        files.append(str(path))
    out = tmp_path / "own"
    argv = ["analyze", "--model", str(run_dir / "student"), str(run_dir / "teacher"), "--label", "student", "teacher",
            "--data", str(run_dir / "cf.jsonl"), "--out", str(out), "--heatmaps", "0", "--plots", "false",
            "--responses", *files]
    assert main(argv) == 0
    result = json.loads((out / "attention.json").read_text())
    by_label = {m["label"]: m for m in result["models"]}
    assert [r["id"] for r in by_label["student"]["samples"]] == [0, 1]  # no generation for sample 2
    assert len(by_label["teacher"]["samples"]) == 3
    _, samples = load_span_samples(run_dir / "cf.jsonl")
    model = load_model(str(run_dir / "student"), attn_implementation="eager")
    tok = load_tokenizer(str(run_dir / "student"))
    want = analyze_sample(model, tok, replace(samples[0], response="It has 8.\n#### 8"), max_length=2048, profile=False)
    got = by_label["student"]["samples"][0]
    assert got["n_response_tokens"] == want["n_response_tokens"]
    assert got["share_on_span"] == pytest.approx(want["share_on_span"], rel=1e-6)
    reference = analyze_sample(model, tok, samples[0], max_length=2048, profile=False)
    assert got["n_response_tokens"] != reference["n_response_tokens"]  # really another response
    assert main(argv[:-1]) == 2  # one file for two models: one line, exit status 2
