"""Code answers: run the candidate against the problem's tests, fenced in.

A sample for the code task carries (in ``sample.meta``):

* ``tests`` -- one of
  - a string of Python test code: asserts, or a ``def check(candidate)`` that
    is then called on ``entry_point`` (HumanEval, HumanEval+, LeetCode);
  - a list of assert strings (MBPP style);
  - a list of ``{"input": str, "output": str}`` cases run on stdin/stdout
    (LiveCodeBench ``stdin`` tests); a case with ``"testtype": "functional"``
    instead calls ``Solution().<meta.func_name>(*args)`` with one JSON value per
    input line and compares with the JSON output (LiveCodeBench LeetCode tests);
* ``entry_point`` -- the function under test, e.g. ``has_close_elements`` or
  ``Solution().twoSum``;
* ``prompt`` (optional) -- code placed before the candidate: HumanEval's
  signature + docstring (so a bare body continuation works) or LeetCode's imports.

The candidate is taken from the generation (:func:`extract_code`): the fenced
code block that defines the entry point (else the longest block; an unclosed
final block counts), or the raw text when there is no fence. The program is
``prompt + candidate + tests`` and passes when it exits with status 0 within the
time limit (see :mod:`leaf.checkers.sandbox` for the containment).
"""

from __future__ import annotations

import json
import re
from typing import Any

from leaf.checkers.sandbox import RunResult, run_python

_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def _entry_name(entry_point: str | None) -> str | None:
    if not entry_point:
        return None
    return re.split(r"[().]", entry_point.replace("()", "."))[-1] or None


def extract_code(text: str, entry_point: str | None = None) -> str:
    """The code of a generation (see the module doc)."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    blocks = [(lang, body) for lang, body in blocks if lang in ("", "python", "py", "python3")] or blocks
    if not blocks:
        return text
    name = _entry_name(entry_point)
    if name:
        for _, body in reversed(blocks):
            if re.search(rf"\bdef\s+{re.escape(name)}\s*\(", body):
                return body
    return max((body for _, body in blocks), key=len)


def build_program(candidate: str, sample: Any) -> str:
    """``prompt + code + tests`` for tests given as Python code (see the module doc)."""
    meta = sample.meta or {}
    tests = meta.get("tests")
    entry = meta.get("entry_point")
    code = extract_code(candidate, entry)
    prompt = meta.get("prompt") or ""
    name = _entry_name(entry)
    if prompt and name and re.search(rf"\bdef\s+{re.escape(name)}\s*\(", code):
        program = prompt.rstrip() + "\n    pass\n\n" + code if _is_bare_signature(prompt) else prompt + "\n" + code
    else:
        program = prompt + code
    if isinstance(tests, list):
        tests = "\n".join(str(t) for t in tests)
    program += "\n\n" + str(tests) + "\n"
    if entry and re.search(r"^def\s+check\s*\(", str(tests), re.MULTILINE):
        program += f"\ncheck({entry})\n"
    return program


def _is_bare_signature(prompt: str) -> bool:
    """A prompt ending in ``def f(...):`` with no body yet (then ``pass`` keeps it valid)."""
    return bool(re.search(r"def\s+\w+\s*\([^)]*\)[^:]*:\s*$", prompt))


def _functional_program(code: str, prompt: str, cases: list[dict[str, Any]], func_name: str) -> str:
    lines = [prompt, code, "", "import json as _json"]
    for k, case in enumerate(cases):
        args = [json.loads(x) for x in str(case["input"]).splitlines() if x.strip()]
        expected = json.loads(str(case["output"]))
        lines.append(f"_got = Solution().{func_name}(*_json.loads({json.dumps(json.dumps(args))}))")
        lines.append(f"assert _got == _json.loads({json.dumps(json.dumps(expected))}), 'case {k}'")
    return "\n".join(lines) + "\n"


def outputs_match(got: str, expected: str, tol: float = 1e-6) -> bool:
    """Stdout equals the expected output, token by token (numbers within ``tol``)."""
    a, b = got.split(), expected.split()
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x == y:
            continue
        try:
            if abs(float(x) - float(y)) > tol * max(1.0, abs(float(y))):
                return False
        except ValueError:
            return False
    return True


class CodeChecker:
    """``check(prediction, sample)``: the program passes all of the sample's tests (pass@1)."""

    name = "code"

    def __init__(self, timeout: float = 10.0, memory_mb: int = 1024) -> None:
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.last: RunResult | None = None

    def run(self, prediction: str, sample: Any) -> RunResult:
        meta = sample.meta or {}
        tests = meta.get("tests")
        if not tests:
            raise ValueError(f"sample {sample.id!r}: the code task needs meta.tests (and usually meta.entry_point)")
        if isinstance(tests, list) and tests and isinstance(tests[0], dict):
            return self._run_cases(prediction, sample, tests)
        return run_python(build_program(prediction, sample), timeout=self.timeout, memory_mb=self.memory_mb)

    def _run_cases(self, prediction: str, sample: Any, cases: list[dict[str, Any]]) -> RunResult:
        meta = sample.meta or {}
        code = extract_code(prediction, meta.get("entry_point") or meta.get("func_name"))
        prompt = meta.get("prompt") or ""
        functional = [c for c in cases if c.get("testtype") == "functional"]
        last: RunResult | None = None
        if functional:
            func = meta.get("func_name") or _entry_name(meta.get("entry_point"))
            if not func:
                raise ValueError(f"sample {sample.id!r}: functional tests need meta.func_name")
            last = run_python(
                _functional_program(code, prompt, functional, func), timeout=self.timeout, memory_mb=self.memory_mb
            )
            if not last.passed:
                return last
        for case in cases:
            if case.get("testtype") == "functional":
                continue
            last = run_python(
                prompt + code, stdin=str(case["input"]), timeout=self.timeout, memory_mb=self.memory_mb, script=True
            )
            if not last.passed:
                return last
            if not outputs_match(last.stdout, str(case["output"])):
                return RunResult("failed", last.returncode, last.stdout, "wrong output", last.seconds)
        assert last is not None  # cases is non-empty
        return last

    def check(self, prediction: str, sample: Any) -> bool:
        self.last = self.run(prediction, sample)
        return self.last.passed
