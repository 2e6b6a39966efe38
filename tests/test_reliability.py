"""Bad input, per command, as a careless or hostile user gives it: a one-line error, no traceback, nothing lost.

Each probe runs the real command line and checks that it

* exits with status 2 and prints exactly one line, starting ``leaf <command>: error:``,
  that names what is wrong (the file, line, field or setting);
* prints no traceback;
* leaves every input file byte for byte as it was, and writes no output where
  there was none.

docs/reliability.md counts these probes (with the sandbox payloads of
tests/checkers/test_sandbox_hostile.py and the interrupted-write tests).
"""

from __future__ import annotations

import json

import pytest

from leaf.cli import main
from leaf.tiny import build_model, build_tokenizer

GOOD = {"id": 1, "instruction": "Tom has 3 apples. How many?", "response": "The answer is 3.", "answer": "3"}
DET = {"id": 1, "level": "instruction", "method": "gradient",
       "tokens": [{"text": "Tom", "start": 0, "end": 3, "g_teacher": 0.1, "g_student": 0.9, "score": 0.0,
                   "flag": True}], "spans": [[0, 3]], "loss_teacher": 1.0, "loss_student": 2.0, "truncated": 0}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Tiny models and well-formed inputs; each probe breaks one thing."""
    root = tmp_path_factory.mktemp("probes")
    tok = build_tokenizer(style="llama3")
    for name, size in (("teacher", 32), ("student", 16)):
        build_model(tok, hidden_size=size, num_layers=1, seed=size).save_pretrained(root / name)
        tok.save_pretrained(root / name)
    (root / "tok-only").mkdir()
    tok.save_pretrained(root / "tok-only")
    (root / "empty-dir").mkdir()
    (root / "good.jsonl").write_text(json.dumps(GOOD) + "\n")
    (root / "det.jsonl").write_text(json.dumps(DET) + "\n")
    return root


def _lines(*records: object) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


# name -> (file contents to write as IN, argv with {IN} {OUT} {R} placeholders, text the error must contain)
PROBES: dict[str, tuple[str | bytes | None, list[str], str]] = {
    # -- data files, read by every stage -------------------------------------------------------------------
    "detect: invalid UTF-8": (b'{"id": 1, "instruction": "\xff", "response": "a"}\n', ["detect", "--teacher", "{R}/teacher", "--student", "{R}/student", "--data", "{IN}", "--out", "{OUT}"], "IN:1: not valid UTF-8"),
    "detect: lone surrogate": (_lines('{"id": 1, "instruction": "\\ud800", "response": "a"}'), ["detect", "--teacher", "{R}/teacher", "--student", "{R}/student", "--data", "{IN}", "--out", "{OUT}"], "IN:1: a string holds a lone surrogate"),
    "detect: missing data file": (None, ["detect", "--teacher", "{R}/teacher", "--student", "{R}/student", "--data", "{IN}", "--out", "{OUT}"], "IN: file not found"),
    "detect: empty data file": ("", ["detect", "--teacher", "{R}/teacher", "--student", "{R}/student", "--data", "{IN}", "--out", "{OUT}"], "IN: no samples (file is empty)"),
    "detect: data is a folder": ("DIR", ["detect", "--teacher", "{R}/teacher", "--student", "{R}/student", "--data", "{IN}", "--out", "{OUT}"], "Is a directory"),
    "detect: bad JSON line": (_lines(GOOD, "{oops"), ["detect", "--teacher", "{R}/teacher", "--student", "{R}/student", "--data", "{IN}", "--out", "{OUT}"], "IN:2: bad JSON"),
    "detect: missing field": (_lines({"id": 1, "instruction": "q"}), ["detect", "--teacher", "{R}/teacher", "--student", "{R}/student", "--data", "{IN}", "--out", "{OUT}"], "IN:1: field 'response': missing"),
    "detect: number as instruction": (_lines({**GOOD, "instruction": 5}), ["detect", "--teacher", "{R}/teacher", "--student", "{R}/student", "--data", "{IN}", "--out", "{OUT}"], "IN:1: field 'instruction': must be a string"),
    "detect: duplicate ids": (_lines(GOOD, GOOD), ["detect", "--teacher", "{R}/teacher", "--student", "{R}/student", "--data", "{IN}", "--out", "{OUT}"], "IN:2: field 'id': duplicate id"),
    "detect: unlabelled for student-wrong": (_lines(GOOD), ["detect", "--teacher", "{R}/teacher", "--student", "{R}/student", "--data", "{IN}", "--out", "{OUT}", "--select", "student-wrong"], "run `leaf label` first"),
    # -- settings ------------------------------------------------------------------------------------------
    "detect: tau below 0": (_lines(GOOD), ["detect", "--teacher", "{R}/teacher", "--student", "{R}/student", "--data", "{IN}", "--out", "{OUT}", "--tau", "-0.5"], "option 'tau': -0.5 is outside [0.0, 1.0]"),
    "detect: tau above 1": (_lines(GOOD), ["detect", "--teacher", "{R}/teacher", "--student", "{R}/student", "--data", "{IN}", "--out", "{OUT}", "--tau", "1.5"], "option 'tau': 1.5 is outside"),
    "detect: tau nan": (_lines(GOOD), ["detect", "--teacher", "{R}/teacher", "--student", "{R}/student", "--data", "{IN}", "--out", "{OUT}", "--tau", "nan"], "option 'tau': nan is not a finite number"),
    "detect: tau and percentile": (_lines(GOOD), ["detect", "--teacher", "{R}/teacher", "--student", "{R}/student", "--data", "{IN}", "--out", "{OUT}", "--tau", "0.1", "--percentile", "5"], "give either --tau or --percentile"),
    "detect: missing model folder": (_lines(GOOD), ["detect", "--teacher", "{R}/nope", "--student", "{R}/student", "--data", "{IN}", "--out", "{OUT}"], "nope: cannot load the tokenizer"),
    "detect: empty model folder": (_lines(GOOD), ["detect", "--teacher", "{R}/empty-dir", "--student", "{R}/student", "--data", "{IN}", "--out", "{OUT}"], "empty-dir: cannot load the tokenizer"),
    "detect: output is the input": (_lines(GOOD), ["detect", "--teacher", "{R}/teacher", "--student", "{R}/student", "--data", "{IN}", "--out", "{IN}", "--overwrite"], "is the input --data"),
    "detect: output under /proc": (_lines(GOOD), ["detect", "--teacher", "{R}/teacher", "--student", "{R}/student", "--data", "{IN}", "--out", "/proc/leaf-probe/d.jsonl"], "/proc/leaf-probe"),
    "detect: YAML unknown key": ("YAML:teacher: x\nstudent: y\ndata: z\nout: o\ntaau: 0.1\n", ["detect", "--config", "{IN}"], "unknown option 'taau'"),
    "detect: YAML bad choice": ("YAML:teacher: x\nstudent: y\ndata: z\nout: o\nmethod: magic\n", ["detect", "--config", "{IN}"], "'magic' is not one of gradient"),
    "detect: YAML not a mapping": ("YAML:- 1\n- 2\n", ["detect", "--config", "{IN}"], "expected a mapping"),
    # -- prune -----------------------------------------------------------------------------------------------
    "prune: missing detections": (_lines(GOOD), ["prune", "--data", "{IN}", "--detections", "{R}/none.jsonl", "--out", "{OUT}"], "none.jsonl: file not found"),
    "prune: negative span": (_lines({**DET, "spans": [[-1, 3]]}), ["prune", "--data", "{R}/good.jsonl", "--detections", "{IN}", "--out", "{OUT}"], "IN:1: field 'spans': span [-1, 3] is empty, inverted or negative"),
    "prune: inverted span": (_lines({**DET, "spans": [[3, 1]]}), ["prune", "--data", "{R}/good.jsonl", "--detections", "{IN}", "--out", "{OUT}"], "span [3, 1] is empty, inverted"),
    "prune: span past the text": (_lines({**DET, "spans": [[0, 999]]}), ["prune", "--data", "{R}/good.jsonl", "--detections", "{IN}", "--out", "{OUT}"], "IN:1: field 'spans': span [0, 999] is outside"),
    "prune: tokens of other text": (_lines({**DET, "tokens": [{**DET["tokens"][0], "text": "Ann"}]}), ["prune", "--data", "{R}/good.jsonl", "--detections", "{IN}", "--out", "{OUT}"], "IN:1: field 'tokens': token 0 'Ann' is not at [0, 3)"),
    "prune: duplicate detections": (_lines(DET, DET), ["prune", "--data", "{R}/good.jsonl", "--detections", "{IN}", "--out", "{OUT}"], "IN:2: field 'id': duplicate record"),
    "prune: unknown sample": (_lines({**DET, "id": 7}), ["prune", "--data", "{R}/good.jsonl", "--detections", "{IN}", "--out", "{OUT}"], "IN:1: field 'id': 7 is not in the samples file"),
    "prune: malformed tokens": (_lines({**DET, "tokens": "oops"}), ["prune", "--data", "{R}/good.jsonl", "--detections", "{IN}", "--out", "{OUT}"], "IN:1: field 'tokens': must be list"),
    "prune: output is the detections": (_lines(DET), ["prune", "--data", "{R}/good.jsonl", "--detections", "{IN}", "--out", "{IN}"], "is the input --detections"),
    "prune: verify without models": (_lines(DET), ["prune", "--data", "{R}/good.jsonl", "--detections", "{IN}", "--out", "{OUT}", "--verify"], "--verify needs --teacher and --student"),
    # -- distill / cache -------------------------------------------------------------------------------------
    "distill: lambda 1.5": (_lines(GOOD), ["distill", "--student", "{R}/student", "--teacher", "{R}/teacher", "--data", "{IN}", "--out", "{OUT}", "--lambda", "1.5"], "option 'lam': 1.5 is outside [0.0, 1.0]"),
    "distill: YAML precision fp64": ("YAML:student: s\nteacher: t\ndata: d\nout: o\nprecision: fp64\n", ["distill", "--config", "{IN}"], "'fp64' is not one of auto, bf16"),
    "distill: bad counterfactual loss_start": (_lines({**GOOD, "loss_start": 99}), ["distill", "--student", "{R}/student", "--teacher", "{R}/teacher", "--counterfactuals", "{IN}", "--out", "{OUT}"], "IN:1: field 'loss_start': 99 is outside the response"),
    "distill: weightless teacher": (_lines(GOOD), ["distill", "--student", "{R}/student", "--teacher", "{R}/tok-only", "--data", "{IN}", "--out", "{OUT}"], "tok-only: cannot load the model"),
    "cache-teacher: YAML store_dtype int8": ("YAML:teacher: t\nout: o\ndata: d\nstore_dtype: int8\n", ["cache-teacher", "--config", "{IN}"], "'int8' is not one of float32"),
    "cache-teacher: top-k beyond the vocabulary": (_lines(GOOD), ["cache-teacher", "--teacher", "{R}/teacher", "--data", "{IN}", "--out", "{OUT}", "--top-k", "100000"], "--top-k 100000 is more than the"),
    "cache-teacher: another tokenizer": (_lines(GOOD), ["cache-teacher", "--teacher", "{R}/teacher", "--tokenizer", "{R}/empty-dir", "--data", "{IN}", "--out", "{OUT}"], "empty-dir: cannot load the tokenizer"),
    # -- evaluate / label ------------------------------------------------------------------------------------
    "evaluate: duplicate prediction ids": (_lines({"id": 1, "prediction": "2", "answer": "2"}, {"id": 1, "prediction": "3", "answer": "2"}), ["evaluate", "--predictions", "{IN}", "--task", "exact", "--out", "{OUT}"], "IN:2: field 'id': duplicate id"),
    "evaluate: list as id": (_lines({"id": [1], "prediction": "2", "answer": "2"}), ["evaluate", "--predictions", "{IN}", "--task", "exact", "--out", "{OUT}"], "IN:1: field 'id': must be str or int, got list"),
    "evaluate: output is the predictions": (_lines({"id": 1, "prediction": "2", "answer": "2"}), ["evaluate", "--predictions", "{IN}", "--task", "exact", "--out", "{IN}"], "is the input --predictions"),
    "evaluate: results of another model": ('RESULTS', ["evaluate", "--predictions", "{R}/preds.jsonl", "--task", "exact", "--out", "{IN}", "--name", "B"], "holds the results of model 'A'"),
    "evaluate: damaged results file": ("{not json", ["evaluate", "--predictions", "{R}/preds.jsonl", "--task", "exact", "--out", "{IN}", "--name", "A"], "exists but is not a results file"),
    "label: bad task": (_lines(GOOD), ["label", "--teacher", "{R}/teacher", "--student", "{R}/student", "--data", "{IN}", "--task", "poetry", "--out", "{OUT}"], "invalid choice: 'poetry'"),
    "label: no gold answer": (_lines({"id": 1, "instruction": "q", "response": "a"}), ["label", "--teacher", "{R}/teacher", "--student", "{R}/student", "--data", "{IN}", "--task", "exact", "--out", "{OUT}"], "field 'answer': missing"),
    # -- analyze / report / data / tiny ----------------------------------------------------------------------
    "analyze: detections without samples": (_lines(DET), ["analyze", "--model", "{R}/student", "--data", "{IN}", "--out", "{OUT}"], "pass the samples it was made from with --samples"),
    "analyze: records of no known kind": (_lines({"x": 1}), ["analyze", "--model", "{R}/student", "--data", "{IN}", "--out", "{OUT}"], "IN:1: cannot tell the kind of record"),
    "report: missing run folder": (None, ["report", "--run", "{IN}"], "IN: run folder not found"),
    "report: output onto a run file": (_lines(DET), ["report", "--run", "{R}", "--out", "{IN}"], "is a file of the run folder"),
    "data convert: unknown columns": (_lines({"q": "x", "a": "y"}), ["data", "convert", "--dataset", "{IN}", "--out", "{OUT}"], "not a known corpus"),
    "data convert: output is the input": (_lines(GOOD), ["data", "convert", "--dataset", "{IN}", "--out", "{IN}"], "is the input --dataset"),
    "tiny: data is a folder": ("DIR", ["tiny", "--out", "{OUT}", "--data", "{IN}"], "Is a directory"),
    "demo: unknown arm": (None, ["demo", "--arms", "kd", "leaf_magic", "--out", "{OUT}"], "unknown arm(s) leaf_magic"),
    "demo-data: unknown setting": (None, ["demo-data", "--setting", "v3", "--out", "{OUT}"], "invalid choice: 'v3'"),
    "demo-data: output is a file": (_lines(GOOD), ["demo-data", "--out", "{IN}", "--cache-dir", "{OUT}"], "exists and is not a folder"),
}


@pytest.mark.parametrize("name", list(PROBES))
def test_bad_input_is_one_line_and_loses_nothing(world, tmp_path, capsys, name):
    content, argv, expected = PROBES[name]
    where = tmp_path / "run"  # probes that read a run folder get one with a detections file
    where.mkdir()
    inp = where / "in.jsonl"
    if content == "DIR":
        inp.mkdir()
    elif content == "RESULTS":
        (world / "preds.jsonl").write_text(_lines({"id": 1, "prediction": "The answer is 2.", "answer": "2"}))
        inp.write_text(json.dumps({"model": "A", "benchmarks": {"x": {"accuracy": 1.0}}, "records": []}))
    elif isinstance(content, bytes):
        inp.write_bytes(content)
    elif isinstance(content, str) and content.startswith("YAML:"):
        inp = where / "cfg.yaml"
        inp.write_text(content[5:])
    elif content is not None:
        inp.write_text(content)
    out = tmp_path / "out"
    names = {"IN": str(inp), "OUT": str(out / "o.jsonl") if argv[0] not in ("distill", "cache-teacher", "analyze", "tiny", "demo", "demo-data") else str(out),
             "R": str(where if name.startswith("report: output") else world)}
    before = {p: p.read_bytes() for p in [*world.rglob("*"), *where.rglob("*")] if p.is_file()}

    try:
        code = main([a.format(**names) for a in argv])
    except SystemExit as exc:  # argparse's own refusal (an unknown choice): usage line + one error line
        code = exc.code

    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [x for x in err.splitlines() if x.strip()]
    usage_error = lines[-1].startswith("leaf ") and ": error: argument" in lines[-1] or "invalid choice" in err
    assert len(lines) == 1 or usage_error, err  # argparse prints its usage line before its own one-line error
    assert lines[-1].startswith("leaf") and ": error: " in lines[-1], err
    assert expected.replace("IN", str(inp)) in err or expected in err, err
    for path, data in before.items():
        assert path.read_bytes() == data, f"{path} changed"
    assert not out.exists() or not any(out.rglob("*.jsonl")), "an output was written"
