"""The ``leaf`` command: every subcommand is built from its config the same way, errors are one line."""

from __future__ import annotations

import json

import pytest

from leaf.cli import _commands, build_parser, main


def test_every_command_is_built_from_a_config_and_an_api_function():
    names = set()
    for command in _commands():
        for c in command.children or (command,):
            names.add(c.name)
            module, _, cls = c.config.partition(":")
            assert module.endswith(".config") or module == "leaf.tiny", c.config  # configs live beside their stage
            assert c.run.count(":") == 1
    assert {"detect", "prune", "distill", "cache-teacher", "evaluate", "label", "analyze", "report", "demo", "tiny",
            "convert"} <= names


@pytest.mark.parametrize("command", ["detect", "prune", "distill", "cache-teacher", "label", "analyze", "report", "tiny"])
def test_help_shows_required_options_and_defaults(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "required options:" in text
    assert "--out" in text  # one name for the output of every command


def test_user_error_is_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps({"id": 1, "instruction": "x"}) + "\n")
    argv = ["prune", "--data", str(data), "--detections", str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("leaf prune: error: ") and "in.jsonl:1: field 'response': missing" in err
    assert "Traceback" not in err
    from leaf.data.records import DataError

    with pytest.raises(DataError):
        main(["--debug", *argv])


def test_bad_values_are_refused_before_anything_runs(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["detect", "--teacher", "t", "--student", "s", "--data", "d", "--out", str(out), "--tau", "1.5"]) == 2
    assert "option 'tau': 1.5 is outside [0.0, 1.0]" in capsys.readouterr().err
    assert not out.exists()


def test_data_convert_is_a_sub_action(capsys):
    with pytest.raises(SystemExit):
        build_parser(["data"]).parse_args(["data"])
    assert "ACTION" in capsys.readouterr().err


def test_missing_model_and_output_folder_problems_are_one_line(tmp_path, capsys):
    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps({"id": 1, "instruction": "q", "response": "a"}) + "\n")
    assert main(["detect", "--teacher", str(tmp_path / "nope"), "--student", str(tmp_path / "nope"),
                 "--data", str(data), "--out", str(tmp_path / "d.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope: cannot load the tokenizer" in err
    (tmp_path / "dir.jsonl").mkdir()
    assert main(["tiny", "--out", str(tmp_path / "t"), "--data", str(tmp_path / "dir.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Is a directory" in err and "Traceback" not in err
