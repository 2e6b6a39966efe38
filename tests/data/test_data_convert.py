"""``leaf data convert`` on local fixtures shaped like NuminaMath-CoT, AceCode-87K, HotpotQA and a custom file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leaf.cli import main
from leaf.data.convert import convert_dataset, parse_fields
from leaf.data.records import DataError, load_samples
from leaf.checkers import get_checker

FIX = Path(__file__).parent / "fixtures"
BENCH = FIX / "benchmarks"


def test_numinamath(tmp_path):
    out = tmp_path / "numina.jsonl"
    rep = convert_dataset(f"numinamath-cot={FIX / 'numinamath_cot.jsonl'}", out)
    assert rep == {"written": 3, "skipped": {}, "corpus": "numinamath-cot"}
    s = load_samples(out)  # valid sample format
    assert s[0].instruction.startswith("What is the sum") and s[0].answer == "55"
    assert s[1].answer == "\\frac{1}{2}" and s[0].meta == {"source": "synthetic_math"}
    assert s[2].answer is None  # a proof has no boxed answer
    # the math checker accepts the reference solution against the extracted answer
    assert get_checker("math").check(s[0].response, s[0]) and get_checker("math").check(s[1].response, s[1])


def test_corpus_recognised_from_columns(tmp_path):
    out = tmp_path / "n.jsonl"
    assert convert_dataset(str(FIX / "numinamath_cot.jsonl"), out)["corpus"] == "numinamath-cot"


def test_acecode(tmp_path):
    out = tmp_path / "ace.jsonl"
    rep = convert_dataset(f"acecode-87k={FIX / 'acecode_87k.jsonl'}", out)
    assert rep["written"] == 1 and rep["skipped"] == {"empty response": 1}  # oss_1 has no passing completion
    (s,) = load_samples(out)
    assert s.id == "oss_0" and s.response == "def add(a, b):\n    return a + b"  # the best-passing completion
    assert s.meta["tests"] == ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]
    code = get_checker("code", timeout=10)
    assert code.check(s.response, s)
    assert not code.check("def add(a, b):\n    return a - b", s)


def test_hotpotqa(tmp_path):
    out = tmp_path / "hp.jsonl"
    rep = convert_dataset(f"hotpotqa={BENCH / 'hotpot_dev_distractor_v1.json'}", out)
    assert rep["written"] == 2
    s = load_samples(out)
    assert s[0].answer == "yes" and s[0].response == "The answer is yes."
    assert "Scott Derrickson" in s[0].instruction and s[0].id == "5a8b57f25542995d1e6f1371"
    assert get_checker("qa").check(s[1].response, s[1])


def test_field_mapping(tmp_path, capsys):
    out = tmp_path / "c.jsonl"
    rc = main(
        [
            "data",
            "convert",
            "--dataset",
            str(FIX / "custom.jsonl"),
            "--to",
            str(out),
            "--field",
            "instruction=q,response=a_long,answer=short,id=uid",
        ]
    )
    assert rc == 0 and "wrote 2 samples" in capsys.readouterr().out
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert rows == [
        {
            "id": "x1",
            "instruction": "Capital of France?",
            "response": "Paris is the capital. The answer is Paris.",
            "answer": "Paris",
        },
        {"id": "x2", "instruction": "2+2?", "response": "The answer is 4.", "answer": 4},
    ]
    assert load_samples(out)[1].answer == "4"


def test_errors(tmp_path):
    with pytest.raises(DataError, match="--field instruction"):
        convert_dataset(str(FIX / "custom.jsonl"), tmp_path / "x.jsonl")
    with pytest.raises(DataError, match="column 'nope'"):
        convert_dataset(str(FIX / "custom.jsonl"), tmp_path / "x.jsonl", fields="instruction=nope,response=a_long")
    with pytest.raises(DataError, match="TARGET=COLUMN"):
        parse_fields("instruction")
    with pytest.raises(DataError, match="unknown target"):
        parse_fields("prompt=q")
    with pytest.raises(DataError, match="record 1: field 'problem': missing"):
        convert_dataset(f"numinamath-cot={FIX / 'custom.jsonl'}", tmp_path / "x.jsonl")


def test_limit(tmp_path):
    out = tmp_path / "l.jsonl"
    assert convert_dataset(f"numinamath-cot={FIX / 'numinamath_cot.jsonl'}", out, limit=2)["written"] == 2
    assert len(out.read_text().splitlines()) == 2
    assert not (tmp_path / "x.jsonl").exists()  # no half-written output after an error
