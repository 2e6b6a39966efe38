"""Bad options and hostile environments through the real command line: exit 2, one line naming the option or file.

Each probe runs ``leaf.cli.main`` as a user would (no model is loaded: every refusal comes first) and checks the
status, that stderr is one line starting ``leaf <command>: error:``, that it names what is wrong, and that no
output was written. docs/reliability.md counts these probes.
"""

from __future__ import annotations

import json

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
    "max-memory not pairs": ([*DETECT, "--max-memory", "70GiB"], "option 'max_memory': '70GiB': '70GiB' is not device=size"),
}


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
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps(GOOD) + "\n")
    out = tmp_path / "out" / "o.jsonl"
    code, lines = run_cli([a.format(IN=inp, OUT=out) for a in argv], capsys)
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith(f"leaf {argv[0]}: error: "), lines
    assert expected in lines[0], lines
    assert not out.parent.exists()


def test_a_device_this_machine_has_is_taken():
    """The check refuses only what is missing: cpu, auto and (where present) cuda:0 pass."""
    import torch

    from leaf.models import check_device

    for name in ["auto", "cpu", *(["cuda", "cuda:0"] if torch.cuda.is_available() else [])]:
        check_device(name)
