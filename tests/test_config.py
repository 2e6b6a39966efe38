"""leaf.config: one contract for flags, YAML and keyword arguments (names, types, choices, bounds, aliases)."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import pytest

from leaf.config import ConfigError, add_config_arguments, build, load_yaml, make, option, options_markdown, resolve


@dataclass
class Toy:
    """A config with one field of each kind."""

    data: Path = option(help="input file")
    out: Path = option(help="output file", aliases=["output_dir"])
    tau: float = option(0.1, low=0.0, high=1.0, help="threshold")
    mode: str = option("a", choices=("a", "b"), help="mode")
    steps: int = option(3, low=1, help="steps")
    names: list[str] = option(default_factory=list, help="names")

    def validate(self) -> None:
        if self.mode == "b" and self.steps > 5:
            raise ValueError("mode b takes at most 5 steps")


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Toy, require="--config" not in argv)
    return parser.parse_args(argv)


def test_config_or_keywords_never_both_and_both_checked():
    cfg = make(Toy, kwargs={"data": "d", "out": "o"})
    assert cfg == Toy(data=Path("d"), out=Path("o"))
    assert make(Toy, Toy(data=Path("d"), out=Path("o"))) == cfg
    with pytest.raises(ConfigError, match="not both"):
        make(Toy, cfg, {"tau": 0.2})
    # a config built in Python is checked like one from flags: bounds, choices, validate()
    with pytest.raises(ConfigError, match="outside"):
        make(Toy, Toy(data=Path("d"), out=Path("o"), tau=1.5))
    with pytest.raises(ConfigError, match="not one of a, b"):
        make(Toy, Toy(data=Path("d"), out=Path("o"), mode="c"))
    with pytest.raises(ConfigError, match="at most 5 steps"):
        make(Toy, Toy(data=Path("d"), out=Path("o"), mode="b", steps=9))
    with pytest.raises(ConfigError, match="expected a Toy"):
        make(Toy, object())  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [-0.5, 1.5, math.nan, math.inf, "nan"])
def test_bad_numbers_are_refused_from_every_source(tmp_path, value):
    with pytest.raises(ConfigError, match="'tau'"):
        build(Toy, {"data": "d", "out": "o", "tau": value})
    path = tmp_path / "c.yaml"
    path.write_text(f"data: d\nout: o\ntau: {value}\n")
    with pytest.raises(ConfigError, match="'tau'"):
        build(Toy, load_yaml(path, Toy), str(path))
    with pytest.raises(ConfigError, match="'tau'"):
        resolve(Toy, _parse(["--data", "d", "--out", "o", "--tau", str(value)]))


def test_unknown_names_are_refused_and_aliases_accepted(tmp_path):
    with pytest.raises(ConfigError, match="unknown option 'ouput'"):
        build(Toy, {"data": "d", "ouput": "o"})
    assert build(Toy, {"data": "d", "output_dir": "o"}).out == Path("o")
    assert build(Toy, {"data": "d", "output-dir": "o"}).out == Path("o")
    with pytest.raises(ConfigError, match="given twice"):
        build(Toy, {"data": "d", "out": "o", "output_dir": "p"})
    path = tmp_path / "c.yaml"
    path.write_text("data: d\noutput_dir: o\nmode: b\n")
    assert resolve(Toy, _parse(["--config", str(path), "--steps", "4"])) == Toy(Path("d"), Path("o"), mode="b", steps=4)
    assert resolve(Toy, _parse(["--data", "d", "--output-dir", "o"])).out == Path("o")


def test_required_flags_are_required_unless_a_config_file_is_given(capsys):
    with pytest.raises(SystemExit):
        _parse(["--out", "o"])
    assert "the following arguments are required: --data" in capsys.readouterr().err
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Toy)
    usage = parser.format_usage()
    assert "--data DATA" in usage and "[--data DATA]" not in usage  # shown as required
    assert "[--tau TAU]" in usage
    help_text = parser.format_help()
    assert "threshold (default: 0.1)" in help_text and "input file (required)" in help_text


def test_options_table_lists_every_option_with_default_and_choices():
    table = options_markdown(Toy).splitlines()
    assert len(table) == 2 + 6
    assert "| `out` | `--out`, `--output-dir` | required | output file |" in table
    assert "| `mode` | `--mode` | `a` | mode (one of: a, b) |" in table
    assert "| `tau` | `--tau` | `0.1` | threshold (>= 0.0, <= 1.0) |" in table


@pytest.mark.parametrize(
    ("argv", "flags"),
    [
        (["detect", "--teacher", "t", "--student", "s", "--data", "{f}", "--out", "{f}"], "--out {f} is the input --data"),
        (["prune", "--data", "{d}", "--detections", "{f}", "--out", "{f}"], "--out {f} is the input --detections"),
        (["label", "--teacher", "t", "--student", "s", "--data", "{f}", "--task", "exact", "--out", "{link}"],
         "is the input --data"),
        (["evaluate", "--predictions", "{f}", "--task", "exact", "--out", "{f}"], "is the input --predictions"),
        (["data", "convert", "--dataset", "x={f}", "--out", "{rel}"], "is the input --dataset"),
        (["report", "--run", "{d}", "--out", "{f}"], "is a file of the run folder"),
    ],
)
def test_an_output_that_is_an_input_is_refused_whatever_overwrite_says(tmp_path, monkeypatch, capsys, argv, flags):
    from leaf.cli import main

    f = tmp_path / "in.jsonl"
    f.write_text('{"id": 1, "instruction": "q", "response": "a"}\n')
    (tmp_path / "link.jsonl").symlink_to(f)
    monkeypatch.chdir(tmp_path)
    names = {"f": str(f), "d": str(tmp_path), "link": str(tmp_path / "link.jsonl"), "rel": "./in.jsonl"}
    before = f.read_bytes()
    assert main([a.format(**names) for a in argv] + (["--overwrite"] if argv[0] in ("detect", "label") else [])) == 2
    assert flags.format(**names) in capsys.readouterr().err
    assert f.read_bytes() == before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["distill", "--student", "{m}", "--data", "{f}", "--out", "{m}"], "inside the model folder --student"),
        (["detect", "--teacher", "{m}", "--student", "s", "--data", "{f}", "--out", "{m}/tokenizer.json",
          "--overwrite"], "inside the model folder --teacher"),
        (["detect", "--teacher", "t", "--student", "s", "--data", "{f}.new", "--out", "{f}", "--overwrite"],
         "(which writes in.jsonl.new) is the input --data"),
        (["detect", "--teacher", "t", "--student", "s", "--data", "{f}.meta.json", "--out", "{f}"],
         "(which writes in.jsonl.meta.json) is the input --data"),
        (["detect", "--teacher", "t", "--student", "s", "--data", "{f}", "--out", "/dev/full", "--overwrite"],
         "--out /dev/full exists and is not a regular file"),
        (["detect", "--teacher", "t", "--student", "s", "--data", "/dev/zero", "--out", "{f}.out"],
         "--data /dev/zero is not a regular file"),
        (["distill", "--student", "s", "--data", "{m}/in.jsonl", "--out", "{m}"], "is a folder holding the input --data"),
    ],
)
def test_no_written_path_touches_an_input(tmp_path, monkeypatch, capsys, argv, message):
    from leaf.cli import main

    m = tmp_path / "model"
    m.mkdir()
    (m / "tokenizer.json").write_text("{}")
    (m / "in.jsonl").write_text('{"id": 1, "instruction": "q", "response": "a"}\n')
    f = tmp_path / "in.jsonl"
    for path in (f, tmp_path / "in.jsonl.new", tmp_path / "in.jsonl.meta.json"):
        path.write_text('{"id": 1, "instruction": "q", "response": "a"}\n')
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert main([a.format(m=m, f=f) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_a_second_writer_on_one_output_is_refused_by_name(tmp_path, capsys):
    import fcntl
    import os

    from leaf.cli import main

    f = tmp_path / "in.jsonl"
    f.write_text('{"id": 1, "instruction": "q", "response": "a"}\n')
    out = tmp_path / "out.jsonl"
    with open(tmp_path / "out.jsonl.lock", "w") as held:  # another run holds the output
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("4242")
        held.flush()
        assert main(["detect", "--teacher", "t", "--student", "s", "--data", str(f), "--out", str(out)]) == 2
        fcntl.flock(held, fcntl.LOCK_UN)
    err = capsys.readouterr().err
    assert f"--out {out} is being written by pid 4242" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and os.path.exists(tmp_path / "out.jsonl.lock")
