"""Benchmark loaders on small local fixtures shaped like each dataset (no downloads)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leaf.data.records import DataError, Sample
from leaf.data.benchmarks import BENCHMARKS, decode_test_cases, load_benchmark, read_records
from leaf.checkers import get_checker

FIX = Path(__file__).parent / "fixtures" / "benchmarks"


def test_gsm8k():
    name, task, samples = load_benchmark(f"gsm8k={FIX / 'gsm8k_test.jsonl'}")
    assert (name, task, len(samples)) == ("gsm8k", "math", 2)
    assert [s.answer for s in samples] == ["72", "3750"]  # thousands separator removed
    assert "Natalia sold clips" in samples[0].instruction and "\\boxed{}" in samples[0].instruction
    math = get_checker("math")
    assert math.check("So 48 + 24 = 72.\n#### 72", samples[0])
    assert math.check("The answer is \\boxed{3,750}", samples[1])
    assert not math.check("The answer is \\boxed{3,705}", samples[1])


def test_math500_and_olympiadbench():
    _, task, m = load_benchmark(f"math500={FIX / 'math500_test.jsonl'}")
    assert task == "math" and m[0].id == "test/precalculus/807.json" and m[0].meta["level"] == 2
    math = get_checker("math")
    assert math.check(m[0].response, m[0])  # the reference solution is judged right
    assert math.check("$\\frac{5}{6}$ so the answer is \\boxed{\\frac{10}{12}}", m[1])
    _, _, o = load_benchmark(f"olympiadbench={FIX / 'olympiadbench.jsonl'}")
    assert [s.answer for s in o] == ["14", "2, -2"]
    assert math.check("\\boxed{-2, 2}", o[1]) and not math.check("\\boxed{2}", o[1])


@pytest.mark.parametrize("bench", ["humaneval-plus", "leetcode"])
def test_code_benchmarks_reference_solutions_pass(bench):
    fname = {"humaneval-plus": "humanevalplus_test.jsonl", "leetcode": "leetcode_test.jsonl"}[bench]
    _, task, samples = load_benchmark(f"{bench}={FIX / fname}")
    assert task == "code"
    checker = get_checker("code", timeout=10)
    for s in samples:
        answer = f"```python\n{s.response}\n```"
        assert checker.check(answer, s), (s.id, checker.last)
        broken = answer.replace("return", "return None and", 1)
        assert not checker.check(broken, s)


def test_leetcode_prompt_has_starter_code():
    _, _, (s,) = load_benchmark(f"leetcode={FIX / 'leetcode_test.jsonl'}")
    assert "def twoSum" in s.instruction and "Given an array" in s.instruction
    assert s.meta["entry_point"] == "Solution().twoSum" and "from typing import" in s.meta["prompt"]


def test_livecodebench_stdin_and_functional():
    _, task, (stdin_s, func_s) = load_benchmark(f"livecodebench={FIX / 'livecodebench_test.jsonl'}")
    assert task == "code"
    assert len(stdin_s.meta["tests"]) == 3  # 1 public + 2 private (compressed blob)
    assert "standard input" in stdin_s.instruction
    checker = get_checker("code", timeout=10)
    assert checker.check("```python\na, b = map(int, input().split())\nprint(a + b)\n```", stdin_s)
    assert not checker.check(
        "```python\na, b = map(int, input().split())\nprint(a + b + 0 * (a < 0) - (a < 0))\n```", stdin_s
    )
    good = (
        "```python\nclass Solution:\n    def maxGap(self, nums: List[int]) -> int:\n        s = sorted(nums)\n"
        "        return max((b - a for a, b in zip(s, s[1:])), default=0)\n```"
    )
    assert func_s.meta["func_name"] == "maxGap"
    assert checker.check(good, func_s), checker.last
    assert not checker.check(good.replace("default=0", "default=-1"), func_s)


def test_livecodebench_blob_refuses_code():
    import base64
    import pickle
    import zlib

    evil = base64.b64encode(zlib.compress(pickle.dumps(Path("x")))).decode()  # needs a global to load
    with pytest.raises(pickle.UnpicklingError):
        decode_test_cases(evil)


@pytest.mark.parametrize(
    ("spec", "n", "gold"),
    [
        (f"hotpotqa={FIX / 'hotpot_dev_distractor_v1.json'}", 2, "yes"),
        (f"hotpotqa={FIX / 'hotpotqa_hub_validation.jsonl'}", 2, "yes"),
        (f"2wikimultihopqa={FIX / '2wiki_dev.json'}", 1, "Małgorzata Braunek"),
        (f"musique={FIX / 'musique_ans_v1.0_dev.jsonl'}", 1, "Miquette Giraudy"),
    ],
)
def test_qa_benchmarks(spec, n, gold):
    _, task, samples = load_benchmark(spec)
    assert task == "qa" and len(samples) == n and samples[0].answer == gold
    s = samples[0]
    assert "Question:" in s.instruction and "[1]" in s.instruction and "[2]" in s.instruction
    qa = get_checker("qa")
    assert qa.check(f"Reasoning. The answer is {gold}.", s)
    assert not qa.check("The answer is nobody.", s)


def test_hotpot_layouts_give_the_same_prompts():
    _, _, a = load_benchmark(f"hotpotqa={FIX / 'hotpot_dev_distractor_v1.json'}")
    _, _, b = load_benchmark(f"hotpotqa={FIX / 'hotpotqa_hub_validation.jsonl'}")
    assert [s.instruction for s in a] == [s.instruction for s in b]
    assert [str(s.id) for s in a] == [str(s.id) for s in b]
    assert (
        "Scott Derrickson (born July 16, 1966) is an American director, screenwriter and producer. He lives"
        in a[0].instruction
    )


def test_musique_aliases_count():
    _, _, (s,) = load_benchmark(f"musique={FIX / 'musique_ans_v1.0_dev.jsonl'}")
    assert get_checker("qa").check("The answer is M. Giraudy", s)


def test_parquet_and_save_to_disk(tmp_path):
    import datasets

    rows = read_records(FIX / "math500_test.jsonl")
    ds = datasets.Dataset.from_list(rows)
    ds.to_parquet(str(tmp_path / "test-00000.parquet"))
    _, _, a = load_benchmark(f"math500={tmp_path / 'test-00000.parquet'}")
    datasets.DatasetDict({"test": ds}).save_to_disk(str(tmp_path / "saved"))
    _, _, b = load_benchmark(f"math500={tmp_path / 'saved'}")
    _, _, c = load_benchmark(f"math500={tmp_path}")  # a folder holding a test-* file
    assert (
        [s.answer for s in a]
        == [s.answer for s in b]
        == [s.answer for s in c]
        == ["\\left( 3, \\frac{\\pi}{2} \\right)", "\\frac{5}{6}"]
    )


def test_humaneval_comes_offline_from_the_package():
    name, task, samples = load_benchmark("humaneval", limit=3)
    assert (name, task, len(samples)) == ("humaneval", "code", 3)
    assert samples[0].id == "HumanEval/0" and samples[0].meta["entry_point"] == "has_close_elements"


def test_sample_file_needs_a_task_and_answers(tmp_path):
    p = tmp_path / "mine.jsonl"
    p.write_text(json.dumps({"id": 1, "instruction": "2+2?", "response": "4", "answer": "4"}) + "\n")
    with pytest.raises(DataError, match="--task"):
        load_benchmark(str(p))
    name, task, samples = load_benchmark(str(p), task="exact")
    assert (name, task, samples[0].answer) == ("mine", "exact", "4")
    p.write_text(json.dumps({"id": 1, "instruction": "2+2?", "response": "4"}) + "\n")
    with pytest.raises(DataError, match="answer"):
        load_benchmark(str(p), task="math")


def test_errors_name_the_record_and_field(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps({"question": "q"}) + "\n" + json.dumps({"question": "q", "answer": "no hashes"}) + "\n")
    with pytest.raises(DataError) as err:
        load_benchmark(f"gsm8k={p}")
    msg = str(err.value)
    assert "record 1: field 'answer': missing" in msg and "record 2" in msg and "####" in msg
    with pytest.raises(DataError, match="unknown benchmark"):
        load_benchmark(f"gsm9k={p}")
    with pytest.raises(DataError, match="math benchmark"):
        load_benchmark(f"gsm8k={FIX / 'gsm8k_test.jsonl'}", task="qa")


def test_registry_is_complete():
    want = {
        "gsm8k",
        "math500",
        "olympiadbench",
        "humaneval",
        "humaneval-plus",
        "leetcode",
        "livecodebench",
        "hotpotqa",
        "2wikimultihopqa",
        "musique",
    }
    assert set(BENCHMARKS) == want
    assert isinstance(load_benchmark(f"gsm8k={FIX / 'gsm8k_test.jsonl'}", limit=1)[2][0], Sample)
