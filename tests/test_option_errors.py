"""Bad options and hostile environments through the real command line: exit 2, one line naming the option or file.

Each probe runs ``leaf.cli.main`` as a user would (no model is loaded: every refusal comes first) and checks the
status, that stderr is one line starting ``leaf <command>: error:``, that it names what is wrong, and that no
output was written. docs/reliability.md counts these probes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leaf.cli import main

GOOD = {"id": 1, "instruction": "Tom has 3 apples. How many?", "response": "The answer is 3.", "answer": "3"}
EVAL = ["evaluate", "--model", "m", "--benchmark", "{IN}", "--task", "exact", "--out", "{OUT}"]
DETECT = ["detect", "--teacher", "t", "--student", "s", "--data", "{IN}", "--out", "{OUT}"]

# name -> (argv with {IN} {OUT} placeholders, text the error must contain)
PROBES: dict[str, tuple[list[str], str]] = {
    "device beyond the GPUs": ([*EVAL, "--device", "cuda:7"], "option 'device': 'cuda:7': this machine has"),
    "device meta": ([*EVAL, "--device", "meta"], "option 'device': 'meta': leaf runs on"),
    "device not a device": ([*EVAL, "--device", "gpu0"], "option 'device': 'gpu0' is not a device"),
    "teacher device meta": ([*DETECT, "--teacher-device", "meta"], "option 'teacher_device': 'meta'"),
    "negative max-new-tokens": ([*EVAL, "--max-new-tokens", "-5"], "option 'max_new_tokens': -5 is outside [1, inf]"),
    "negative limit": ([*EVAL, "--limit", "-2"], "option 'limit': -2 is outside [1, inf]"),
    "zero limit": ([*EVAL, "--limit", "0"], "option 'limit': 0 is outside [1, inf]"),
    "sampling at temperature 0": ([*EVAL, "--do-sample", "--temperature", "0"], "option 'temperature': 0.0 with --do-sample"),
    "max-memory size not a size": ([*DETECT, "--max-memory", "0=abc"], "option 'max_memory': '0=abc': memory size 'abc'"),
    "data is a symlink loop": ([*DETECT[:-4], "--data", "{LOOP}", "--out", "{OUT}"], "--data {LOOP}: cannot follow the path (a symlink loop)"),
    "output is a symlink loop": ([*DETECT[:-2], "--out", "{LOOP}"], "--out {LOOP}: cannot follow the path (a symlink loop)"),
    "JSON nested 200,000 deep": ([*DETECT[:-4], "--data", "{DEEP}", "--out", "{OUT}"], "{DEEP}:1: JSON nested too deeply"),
    "JSONL key given twice": ([*DETECT[:-4], "--data", "{DUP}", "--out", "{OUT}"], "{DUP}:2: key 'response' given twice"),
    "YAML key given twice": ([*EVAL[:-2], "--config", "{YAML}", "--out", "{OUT}"], "{YAML}:3: key 'do_sample' given twice"),
    "output under a file": (["data", "convert", "--dataset", "{IN}", "--field", "instruction=instruction,response=response",
                             "--out", "{IN}/x/o.jsonl"], "--out {IN}/x/o.jsonl: Not a directory ({IN}/x)"),
    "max-memory not pairs": ([*DETECT, "--max-memory", "70GiB"], "option 'max_memory': '70GiB': '70GiB' is not device=size"),
    "distill from the student itself": (["distill", "--teacher", "org/m", "--student", "org/m/", "--data", "{IN}",
                                         "--out", "{OUT}"], "--teacher org/m is the student itself and --alpha is 0"),
    "distill from the student's folder by another path": (
        ["distill", "--teacher", "{MODEL}", "--student", "{MODEL}/../model/.", "--data", "{IN}", "--out", "{OUT}"],
        "is the student itself and --alpha is 0: every distillation term is zero"),
}


def files(root: Path) -> dict[str, Path]:
    """The inputs the probes name: a good sample file and one broken file of each kind."""
    paths = {name: root / file for name, file in (("IN", "in.jsonl"), ("OUT", "out/o.jsonl"), ("LOOP", "loop"),
             ("DEEP", "deep.jsonl"), ("DUP", "dup.jsonl"), ("YAML", "cfg.yaml"))}
    paths["IN"].write_text(json.dumps(GOOD) + "\n")
    paths["MODEL"] = root / "model"  # a local model folder (empty: every probe is refused before loading)
    paths["MODEL"].mkdir()
    paths["LOOP"].symlink_to(paths["LOOP"])
    deep = "[" * 200_000 + "]" * 200_000
    paths["DEEP"].write_text(json.dumps({**GOOD, "meta": "X"}).replace('"X"', deep) + "\n")
    paths["DUP"].write_text(json.dumps(GOOD) + "\n" + json.dumps({**GOOD, "id": 2})[:-1] + ', "response": "b"}\n')
    paths["YAML"].write_text(f"benchmark: {paths['IN']}\ndo_sample: true\ndo_sample: false\n")
    return paths


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    return code, [x for x in err.splitlines() if x.strip()]


@pytest.mark.parametrize("name", list(PROBES))
def test_bad_option_is_one_line(tmp_path, capsys, name):
    argv, expected = PROBES[name]
    paths = files(tmp_path)
    code, lines = run_cli([a.format(**paths) for a in argv], capsys)
    assert code == 2, lines
    command = " ".join(argv[:2]) if argv[0] == "data" else argv[0]
    assert len(lines) == 1 and lines[0].startswith(f"leaf {command}: error: "), lines
    assert expected.format(**paths) in lines[0], lines
    out = tmp_path / "out" / "o.jsonl"
    assert not out.parent.exists()


def test_a_device_this_machine_has_is_taken():
    """The check refuses only what is missing: cpu, auto and (where present) cuda:0 pass."""
    import torch

    from leaf.models import check_device

    for name in ["auto", "cpu", *(["cuda", "cuda:0"] if torch.cuda.is_available() else [])]:
        check_device(name)


def test_duplicate_keys_inside_meta_and_yaml_merges(tmp_path):
    """A nested object repeating a key is refused too; a YAML merge key overriding a value is not a repeat."""
    from leaf.config import read_yaml_mapping
    from leaf.data.jsonl import iter_jsonl

    (tmp_path / "a.jsonl").write_text('{"id": 1, "meta": {"k": 1, "k": 2}}\n{"id": 2, "meta": {"k": 1}}\n')
    assert [(n, e) for n, _, e in iter_jsonl(tmp_path / "a.jsonl")] == [
        (1, "key 'k' given twice in one object (which value is meant?)"), (2, None)]
    (tmp_path / "m.yaml").write_text("base: &b {x: 1, y: 2}\nrun:\n  <<: *b\n  x: 3\n")
    assert read_yaml_mapping(tmp_path / "m.yaml", "f", "m")["run"] == {"x": 3, "y": 2}


def test_ctrl_c_is_one_line_and_status_130(tmp_path, capsys, monkeypatch):
    """An interrupt inside a running command: no traceback, one line saying how to resume, status 130."""
    import leaf.data.convert

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(leaf.data.convert, "convert", interrupted)
    paths = files(tmp_path)
    code, lines = run_cli(["data", "convert", "--dataset", str(paths["IN"]), "--out", str(paths["OUT"])], capsys)
    assert (code, lines) == (130, ["leaf data convert: interrupted; rerun the same command to resume"])


def test_detect_that_skips_every_sample_writes_an_empty_file_and_warns(tmp_path, capsys, caplog):
    """docs/detect.md: a skipped sample is no abort; when all are skipped the run says so (and "none" is a file)."""
    from leaf.tiny import build_model, build_tokenizer

    tok = build_tokenizer(style="llama3")
    for name in ("teacher", "student"):
        build_model(tok, hidden_size=16, num_layers=1, seed=1).save_pretrained(tmp_path / name)
        tok.save_pretrained(tmp_path / name)
    paths = files(tmp_path)
    paths["IN"].write_text(json.dumps({**GOOD, "response": "The answer is three. " * 20}) + "\n")
    capsys.readouterr()
    argv = ["detect", "--teacher", str(tmp_path / "teacher"), "--student", str(tmp_path / "student"),
            "--data", str(paths["IN"]), "--out", str(paths["OUT"]), "--max-length", "8", "--truncation", "skip"]
    code, lines = run_cli(argv, capsys)
    assert code == 0, lines
    assert paths["OUT"].read_text() == ""
    assert "every sample was skipped (reasons in o.jsonl.skipped.jsonl)" in caplog.text, lines
    assert [json.loads(x)["id"] for x in (tmp_path / "out" / "o.jsonl.skipped.jsonl").read_text().splitlines()] == [1]


def test_distill_device_reaches_the_trainer(tmp_path, capsys):
    """``leaf distill --device``: cpu trains on the CPU; a GPU this machine lacks is refused before any loading."""
    import torch

    from leaf.distill.config import DistillConfig
    from leaf.distill.arguments import training_arguments

    kw = dict(student="s", teacher="t", data=tmp_path / "d.jsonl", out=tmp_path / "o")
    args = training_arguments(DistillConfig(device="cpu", **kw))
    assert args.use_cpu and args.device.type == "cpu"
    assert training_arguments(DistillConfig(**kw)).use_cpu == (not torch.cuda.is_available())
    missing = f"cuda:{torch.cuda.device_count() + 7}"
    code, lines = run_cli(["distill", "--student", "s", "--teacher", "t", "--data", str(tmp_path / "d.jsonl"),
                           "--out", str(tmp_path / "o"), "--device", missing], capsys)
    assert code == 2 and len(lines) == 1 and f"option 'device': '{missing}'" in lines[0], lines


def test_unwritable_output_names_the_option_and_path(tmp_path, capsys, monkeypatch):
    """A folder the user may not write to (simulated: the tests may run as root, whom modes do not stop)."""
    from pathlib import Path as P

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    paths = files(tmp_path)
    monkeypatch.setattr(P, "mkdir", refuse)
    code, lines = run_cli(["data", "convert", "--dataset", str(paths["IN"]), "--field",
                           "instruction=instruction,response=response", "--out", str(paths["OUT"])], capsys)
    assert code == 2, lines
    assert lines == [f"leaf data convert: error: --out {paths['OUT']}: Permission denied ({paths['OUT'].parent})"]
