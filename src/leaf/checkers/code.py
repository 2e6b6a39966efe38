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
final block counts), or the raw text when there is no fence. ``prompt + candidate``
runs in a fenced process that only answers calls; the tests run in a separate
judge process where the entry point is a proxy returning plain values, and the
judge alone gives the verdict (see :mod:`leaf.checkers.sandbox`); by default
(``sandbox="bwrap"``) the candidate's process runs under bubblewrap in an empty
world -- the standard library, a private ``/tmp``, nothing else (see
:mod:`leaf.checkers._bwrap`) -- and the checker refuses to start where bubblewrap
cannot run; ``sandbox="none"`` is for a container that is itself the boundary. Malformed tests
(no entry point, not code, blank, no assert, an indented ``def check``) raise
``ValueError`` naming the field: a data error, never a pass. stdin/stdout cases
pass when the program ends with status 0 in time and its output matches.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from leaf.checkers import _bwrap
from leaf.checkers.sandbox import RunResult, run_python, run_tests

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


def candidate_source(candidate: str, sample: Any) -> str:
    """``prompt + code``: the program the candidate's process runs (see the module doc)."""
    meta = sample.meta or {}
    entry = meta.get("entry_point") or meta.get("func_name")
    code = extract_code(candidate, entry)
    prompt = meta.get("prompt") or ""
    name = _entry_name(entry)
    if prompt and name and re.search(rf"\bdef\s+{re.escape(name)}\s*\(", code):
        return prompt.rstrip() + "\n    pass\n\n" + code if _is_bare_signature(prompt) else prompt + "\n" + code
    return prompt + code


def build_program(candidate: str, sample: Any) -> str:
    """``prompt + code + tests`` in one text (for reading; the checker runs the tests apart, see :meth:`CodeChecker.run`)."""
    tests = program_tests(sample)
    program = candidate_source(candidate, sample) + "\n\n" + tests + "\n"
    if _defines_check(tests):
        program += f"\ncheck({entry_point(sample)})\n"
    return program


_ENTRY = re.compile(r"^[A-Za-z_]\w*(\(\))?(\.[A-Za-z_]\w*(\(\))?)*$")


def _where(sample: Any) -> str:
    return f"sample {sample.id!r}"


def _defines_check(tests: str) -> bool:
    return any(isinstance(n, ast.FunctionDef) and n.name == "check" for n in ast.parse(tests).body)


def _called_in_asserts(tree: ast.Module) -> str | None:
    """The one function the top-level asserts call (MBPP/AceCode style), or None."""
    import builtins

    defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    names = {
        c.func.id
        for a in tree.body if isinstance(a, ast.Assert)
        for c in ast.walk(a)
        if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)
        and c.func.id not in defined and not hasattr(builtins, c.func.id)
    }  # fmt: skip
    return names.pop() if len(names) == 1 else None


def entry_point(sample: Any) -> str:
    """``meta.entry_point``, or the one function the asserts call when it is absent (see :func:`program_tests`)."""
    meta = sample.meta or {}
    entry = meta.get("entry_point")
    if isinstance(entry, str) and entry.strip():
        return entry.strip()
    name = _called_in_asserts(ast.parse(program_tests(sample)))
    assert name is not None  # program_tests refuses tests without one
    return name


def program_tests(sample: Any) -> str:
    """The sample's tests as Python code, checked; ``ValueError`` naming the field when malformed.

    ``meta.tests`` must be a non-blank string of Python or a list of non-blank strings (joined), and
    must contain an ``assert`` (or a call of an ``assert*`` helper); when it defines ``check`` that
    must be at the top level (it is then called on the entry point), otherwise some assert must run
    at the top level. ``meta.entry_point`` must name the function (``f`` or ``Solution().f``); it may
    be absent only for plain asserts that call exactly one function (AceCode/MBPP), which is then it.
    """
    meta = sample.meta or {}
    tests = meta.get("tests")
    entry = meta.get("entry_point")
    if entry is not None and (not isinstance(entry, str) or not _ENTRY.match(entry.strip())):
        raise ValueError(f"{_where(sample)}: field 'meta.entry_point': {entry!r} is not a name like f or Solution().f")
    if isinstance(tests, list):
        bad = [k for k, t in enumerate(tests) if not isinstance(t, str) or not t.strip()]
        if bad:
            raise ValueError(f"{_where(sample)}: field 'meta.tests': item {bad[0]} is not a non-blank string of Python")
        tests = "\n".join(tests)
    if not isinstance(tests, str):
        raise ValueError(
            f"{_where(sample)}: field 'meta.tests': expected Python code (a string or a list of strings), "
            f"got {type(tests).__name__}"
        )
    if not tests.strip():
        raise ValueError(f"{_where(sample)}: field 'meta.tests': blank")
    try:
        tree = ast.parse(tests)
    except SyntaxError as exc:
        raise ValueError(f"{_where(sample)}: field 'meta.tests': not valid Python (line {exc.lineno}: {exc.msg})") from None
    asserts = [n for n in ast.walk(tree) if isinstance(n, ast.Assert)] + [
        n for n in ast.walk(tree)
        if isinstance(n, ast.Call) and (getattr(n.func, "id", "") or getattr(n.func, "attr", "")).lower().startswith("assert")
    ]  # fmt: skip
    if not asserts:
        raise ValueError(f"{_where(sample)}: field 'meta.tests': contains no assert, so it would pass any code")
    top_check = _defines_check(tests)
    if entry is None and (top_check or not _called_in_asserts(tree)):
        raise ValueError(
            f"{_where(sample)}: field 'meta.entry_point': missing (the function the tests call; it can be "
            "left out only when the asserts call exactly one function)"
        )
    nested_check = any(isinstance(n, ast.FunctionDef) and n.name == "check" for n in ast.walk(tree)) and not top_check
    if nested_check:
        raise ValueError(f"{_where(sample)}: field 'meta.tests': defines check() below the top level (indented?); it would never run")
    if not top_check:
        top = [n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        if not any(isinstance(m, (ast.Assert, ast.Call)) for n in top for m in ast.walk(n)):
            raise ValueError(
                f"{_where(sample)}: field 'meta.tests': no assert or call runs at the top level and no def check(candidate)"
            )
    return tests


def _is_bare_signature(prompt: str) -> bool:
    """A prompt ending in ``def f(...):`` with no body yet (then ``pass`` keeps it valid)."""
    return bool(re.search(r"def\s+\w+\s*\([^)]*\)[^:]*:\s*$", prompt))


def _functional_tests(cases: list[dict[str, Any]]) -> str:
    """``def check(candidate)`` asserting each JSON case (LiveCodeBench functional tests)."""
    lines = ["import json as _json", "", "def check(candidate):"]
    for k, case in enumerate(cases):
        args = [json.loads(x) for x in str(case["input"]).splitlines() if x.strip()]
        expected = json.loads(str(case["output"]))
        lines.append(f"    _got = candidate(*_json.loads({json.dumps(json.dumps(args))}))")
        lines.append(f"    assert _got == _json.loads({json.dumps(json.dumps(expected))}), 'case {k}'")
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
    """``check(prediction, sample)``: the program passes all of the sample's tests (pass@1).

    ``run`` returns a :class:`~leaf.checkers.sandbox.RunResult` (``.passed``, ``.status``); a
    sample whose tests are malformed raises ``ValueError`` naming the field (a data error, never a pass).
    """

    name = "code"

    def __init__(self, timeout: float = 10.0, memory_mb: int = 1024, sandbox: str = "bwrap") -> None:
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.sandbox = _bwrap.check_mode(sandbox)
        if sandbox == "bwrap":
            _bwrap.require()  # refuse now, in one line, rather than at the first sample
        self.last: RunResult | None = None

    def run(self, prediction: str, sample: Any) -> RunResult:
        meta = sample.meta or {}
        tests = meta.get("tests")
        if tests is None or (isinstance(tests, (str, list, dict)) and not tests):
            raise ValueError(f"sample {sample.id!r}: the code task needs meta.tests (and usually meta.entry_point)")
        if isinstance(tests, list) and any(isinstance(t, dict) for t in tests):
            return self._run_cases(prediction, sample, tests)
        code_tests = program_tests(sample)
        return run_tests(
            candidate_source(prediction, sample),
            code_tests,
            entry_point(sample),
            prompt=meta.get("prompt") or "",
            timeout=self.timeout,
            memory_mb=self.memory_mb,
            sandbox=self.sandbox,
        )

    def _run_cases(self, prediction: str, sample: Any, cases: list[Any]) -> RunResult:
        meta = sample.meta or {}
        for k, case in enumerate(cases):
            if not isinstance(case, dict) or not isinstance(case.get("input"), str) or "output" not in case:
                raise ValueError(f"sample {sample.id!r}: field 'meta.tests': case {k} is not {{\"input\": str, \"output\": str}}")
        code = extract_code(prediction, meta.get("entry_point") or meta.get("func_name"))
        prompt = meta.get("prompt") or ""
        functional = [c for c in cases if c.get("testtype") == "functional"]
        last: RunResult | None = None
        if functional:
            func = meta.get("func_name") or _entry_name(meta.get("entry_point"))
            if not func or not str(func).isidentifier():
                raise ValueError(f"sample {sample.id!r}: field 'meta.func_name': functional tests need the method name")
            try:
                tests = _functional_tests(functional)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"sample {sample.id!r}: field 'meta.tests': a functional case is not JSON ({exc})") from None
            last = run_tests(
                prompt + "\n" + code, tests, f"Solution().{func}", prompt=prompt, timeout=self.timeout, memory_mb=self.memory_mb,
                sandbox=self.sandbox,
            )
            if not last.passed:
                return last
        for case in cases:
            if case.get("testtype") == "functional":
                continue
            last = run_python(
                prompt + code, stdin=str(case["input"]), timeout=self.timeout, memory_mb=self.memory_mb, script=True,
                sandbox=self.sandbox,
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
