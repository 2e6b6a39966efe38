"""Run untrusted Python in separate, fenced-in processes; judge tests where the candidate cannot reach.

Two entry points:

* :func:`run_tests` -- the code checker's verdict. The candidate's program (``prompt + candidate``)
  runs in one fenced process that only *defines* things and then answers calls; the benchmark's
  tests run in a second process, the judge, in which the entry point is a proxy: each call sends
  the arguments over a pipe and gets back a **plain value** (exact ``None``/``bool``/``int``/
  ``float``/``complex``/``str``/``bytes`` and ``tuple``/``list``/``dict``/``set``/``frozenset`` of
  them, or an instance of a class the prompt defines, rebuilt in the judge with the prompt's own
  class). Every comparison of the tests runs in the judge on such values, and the judge alone
  writes the verdict, to a pipe the candidate's process never holds. Nothing the candidate does --
  its exit status, its output, files it writes, ``atexit``/``sys.excepthook``/threads, objects
  whose ``__eq__`` is always true, patching ``builtins``/``math`` -- reaches the verdict; if its
  process ends or breaks the protocol, the run fails.
* :func:`run_python` -- run a program on its own (stdin/stdout tasks): ``passed`` only says that
  it ended with status 0 in time; the caller judges its output.

By default (``sandbox="bwrap"``) the candidate's process runs under bubblewrap in an empty world:
the standard library read-only, a private ``/tmp`` (its folder) and ``/dev/shm``, its own
``/proc``, no network, no project, venv, data or predictions, as ``nobody`` (see
:mod:`leaf.checkers._bwrap`); where bubblewrap cannot run, :class:`~leaf.checkers._bwrap.SandboxUnavailable`
says what to install. ``sandbox="none"`` (the container is the boundary) runs it on the host's
file system as below. The judge runs outside bubblewrap: it runs only the benchmark's prompt and
tests, and holds the expected values.

The candidate's process (``_child.py``) runs the interpreter with ``-I -B`` (``-I -S -B``, the
base interpreter, under bubblewrap) in a fresh temporary directory, with an environment that
carries nothing of ours, in its own session (process group) killed as a whole at the end, and
before the program starts it:

* sets resource limits: address space, CPU seconds, size of a written file, no core files,
  ``RLIMIT_NPROC`` = 0 (no new processes or threads for an unprivileged user);
* removes calls that raise no audit event but reach outside (``os.pidfd_open``,
  ``signal.pidfd_send_signal``, ``os.mkfifo``, ``os.mknod``) and refuses re-importing ``posix``;
* installs an audit hook (it cannot be removed) that refuses: writing, deleting, renaming,
  chmod/chown/utime, truncating, creating directories or ``chdir`` outside the box -- with a
  ``dir_fd`` or a descriptor resolved to the path it really names --, a relative path with
  ``..``, opening a directory outside the box (no descriptor to use as a ``dir_fd``), reading the
  runner's and the judge's files, other processes' ``/proc`` entries and its own ``environ``/
  ``mem``/``fd``..., processes (``fork``, ``exec``, ``posix_spawn``, ``system``, ``subprocess``),
  signals to any process but itself, ``ctypes``, sockets, building code objects, ``gc``
  introspection, tracing hooks.

With ``sandbox="none"``, on Linux, where an unprivileged user may create namespaces, it also runs under
``unshare --user --pid --net --mount --mount-proc`` (detected at run time; never required): it
then sees no other process (its ``/proc`` is its own), has no network, and every process it
might start dies with it. When this process runs as root and the interpreter is usable by
``nobody``, the candidate and the judge run as ``nobody``.

The audit hook alone is not a security boundary: it can be bypassed by code that corrupts the
interpreter's memory (e.g. crafted bytecode through ``marshal``); bubblewrap is the boundary then,
with no seccomp filter and no cgroup limits. Evaluate untrusted models inside a container or VM.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leaf.checkers import _bwrap

NOBODY = 65534
log = logging.getLogger(__name__)

_HERE = Path(__file__).resolve().parent
_NAMESPACES = ["unshare", "--user", "--pid", "--net", "--mount", "--mount-proc", "--fork", "--kill-child", "--"]


@functools.lru_cache(maxsize=1)
def _script(name: str) -> str:
    return (_HERE / "_plain.py").read_text(encoding="utf-8") + "\n\n" + (_HERE / name).read_text(encoding="utf-8")


@dataclass(frozen=True)
class RunResult:
    """How a sandboxed run ended."""

    status: str  # "passed" | "failed" | "timeout"
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def clean_env(home: str) -> dict[str, str]:
    """An environment that carries nothing from ours (no tokens, keys, proxies)."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": home, "TMPDIR": home}


def _user_kwargs(as_nobody: bool) -> dict[str, Any]:
    return {"user": NOBODY, "group": NOBODY, "extra_groups": []} if as_nobody else {}


@functools.lru_cache(maxsize=4)
def _nobody_can_run(python: str) -> bool:
    if os.geteuid() != 0:
        return False
    try:
        res = subprocess.run(
            [python, "-I", "-c", "pass"],
            **_user_kwargs(True),
            env=clean_env("/tmp"),
            cwd="/tmp",
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return res.returncode == 0


@functools.lru_cache(maxsize=8)
def namespaces_work(python: str, as_nobody: bool = False) -> bool:
    """Can this user run ``python`` under ``unshare --user --pid --net --mount --mount-proc``?"""
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return False
    try:
        res = subprocess.run(
            [*_NAMESPACES, python, "-I", "-c", "import os, sys; sys.stdout.write(str(os.getpid()))"],
            **_user_kwargs(as_nobody),
            env=clean_env("/tmp"),
            cwd="/",
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    ok = res.returncode == 0 and res.stdout.strip() == b"1"
    if not ok:
        log.info("sandbox: namespaces unavailable (%s); running without them", res.stderr.decode(errors="replace")[:200])
    return ok


def _use_namespaces(isolate: bool | None, python: str, as_nobody: bool) -> bool:
    if isolate is None:
        isolate = os.environ.get("LEAF_SANDBOX_NAMESPACES", "1").strip().lower() not in ("0", "no", "false", "off")
    return bool(isolate) and namespaces_work(python, as_nobody)


@functools.lru_cache(maxsize=4)
def _warn_root(python: str) -> None:
    log.warning(
        "checking code as root: user 'nobody' cannot run %s, so the audit hook, resource limits and "
        "namespaces (where available) fence the programs in; run as an ordinary user or in a container for more",
        python,
    )


def _tail(path: Path, limit: int = 20000) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _remove_tree(path: Path) -> None:
    """Remove ``path`` even when the program took permissions away from its own files."""

    def fix(func: Any, p: str, _exc: Any) -> None:
        try:
            os.chmod(os.path.dirname(p), stat.S_IRWXU)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, stat.S_IRWXU)
            func(p)
        except OSError:
            pass

    for _ in range(2):
        shutil.rmtree(path, onerror=fix)
        if not os.path.lexists(path):
            return
    log.warning("sandbox: could not remove %s", path)


class _Box:
    """A temporary directory with the candidate's folder (``box``) and the runners; removed on exit."""

    def __init__(self, python: str | None, drop_privileges: bool, isolate: bool | None, sandbox: str = "bwrap") -> None:
        self.python = python or sys.executable
        self.sandbox = _bwrap.check_mode(sandbox)
        if self.sandbox == "bwrap":
            _bwrap.require(self.python)
        self.as_nobody = drop_privileges and _nobody_can_run(self.python)
        if os.geteuid() == 0 and not self.as_nobody and self.sandbox == "none":
            _warn_root(self.python)
        use_ns = self.sandbox == "none" and _use_namespaces(isolate, self.python, self.as_nobody)
        self.prefix = _NAMESPACES if use_ns else []
        self.dir = Path(tempfile.mkdtemp(prefix="leaf-sandbox-"))
        self.box = self.dir / "box"
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> "_Box":
        try:
            self.box.mkdir()
            if self.as_nobody:
                os.chmod(self.dir, 0o755)
                os.chown(self.box, NOBODY, NOBODY)
        except BaseException:
            _remove_tree(self.dir)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        for proc in self.procs:
            _kill_group(proc)
        _remove_tree(self.dir)

    def write(self, name: str, text: str, *, in_box: bool = False) -> Path:
        path = (self.box if in_box else self.dir) / name
        path.write_text(text, encoding="utf-8")
        if self.as_nobody:
            os.chmod(path, 0o644)
            if in_box:
                os.chown(path, NOBODY, NOBODY)
        return path

    def output(self, name: str) -> Any:
        fh = open(self.dir / name, "wb")  # noqa: SIM115 -- closed by the caller
        os.chmod(self.dir / name, 0o600)
        return fh

    def candidate(self, mode: str, *, memory_mb: int, timeout: float, file_size_mb: int, stdin: Any, out: Any,
                  err: Any, fds: tuple[int, int] = (-1, -1), entry: str = "") -> subprocess.Popen:
        runner = self.write("leaf-child.py", _script("_child.py"))
        limits = [str(memory_mb), str(int(timeout) + 1), str(file_size_mb), mode, str(fds[0]), str(fds[1]), entry]
        user = _user_kwargs(self.as_nobody)
        if self.sandbox == "bwrap":
            os.chmod(runner, 0o644)
            os.chmod(self.box / "program.py", 0o644)
            files = {"child.py": str(runner), "program.py": str(self.box / "program.py")}
            inner = [_bwrap.interpreter(self.python), "-I", "-S", "-B", f"{_bwrap.FILES}/child.py", _bwrap.BOX, _bwrap.FILES,
                     f"{_bwrap.FILES}/program.py", *limits]  # fmt: skip
            cmd = _bwrap.command(inner, self.python, files, tmp_mb=max(file_size_mb, 64))
            user = {}
        else:
            cmd = [*self.prefix, self.python, "-I", "-B", str(runner), str(self.box), str(self.dir),
                   str(self.box / "program.py"), *limits]  # fmt: skip
        proc = subprocess.Popen(cmd, stdin=stdin, stdout=out, stderr=err, cwd=self.box, env=clean_env(str(self.box)),
                                start_new_session=True, close_fds=True, pass_fds=[f for f in fds if f >= 0],
                                **user)  # fmt: skip
        self.procs.append(proc)
        return proc


def run_python(
    program: str,
    *,
    stdin: str | None = None,
    timeout: float = 10.0,
    memory_mb: int = 1024,
    file_size_mb: int = 16,
    python: str | None = None,
    drop_privileges: bool = True,
    script: bool = False,
    isolate: bool | None = None,
    sandbox: str = "bwrap",
) -> RunResult:
    """Run ``program`` (Python source) fenced in; ``passed`` means it ended with status 0 in time.

    This says nothing about correctness: the caller judges the output (stdin/stdout tasks), and
    tests are judged by :func:`run_tests`. ``script=True`` runs it as ``__main__`` (a
    ``sys.exit(0)`` is a normal end); otherwise leaving through ``sys.exit`` is a failure.
    """
    with _Box(python, drop_privileges, isolate, sandbox) as box:
        box.write("program.py", program, in_box=True)
        if stdin is not None:
            box.write("stdin.txt", stdin)
        start = time.monotonic()
        with (
            box.output("stdout.txt") as out,
            box.output("stderr.txt") as err,
            open(box.dir / "stdin.txt", "rb") if stdin is not None else open(os.devnull, "rb") as inp,
        ):
            proc = box.candidate("script" if script else "module", memory_mb=memory_mb, timeout=timeout,
                                 file_size_mb=file_size_mb, stdin=inp, out=out, err=err)  # fmt: skip
            try:
                rc: int | None = proc.wait(timeout=timeout)
                status = "passed" if rc == 0 else "failed"
            except subprocess.TimeoutExpired:
                rc, status = None, "timeout"
            finally:
                _kill_group(proc)
        seconds = time.monotonic() - start
        return RunResult(status, rc, _tail(box.dir / "stdout.txt"), _tail(box.dir / "stderr.txt"), seconds)


def run_tests(
    source: str,
    tests: str,
    entry: str,
    *,
    prompt: str = "",
    timeout: float = 10.0,
    memory_mb: int = 1024,
    file_size_mb: int = 16,
    python: str | None = None,
    drop_privileges: bool = True,
    isolate: bool | None = None,
    sandbox: str = "bwrap",
) -> RunResult:
    """Judge ``source`` (the candidate's program) by ``tests`` (see the module doc).

    ``entry`` is the entry point expression (``has_close_elements``, ``Solution().twoSum``); the
    tests see the candidate under its last name, and ``check(<entry>)`` is called when they
    define a top-level ``check``. ``prompt`` (trusted: HumanEval's signature and helpers,
    LeetCode's imports and ``ListNode``) also runs in the judge, so the tests get its helpers.
    ``passed`` only when the judge reports that every test ran and passed.
    """
    import re

    entry_name = re.split(r"[().]", entry.replace("()", "."))[-1] or entry
    job = json.dumps({"prompt": prompt, "tests": tests, "entry": entry, "entry_name": entry_name})
    with _Box(python, drop_privileges, isolate, sandbox) as box:
        box.write("program.py", source, in_box=True)
        judge_script = box.write("leaf-judge.py", _script("_judge.py"))
        judge_dir = box.dir / "judge"
        judge_dir.mkdir(mode=0o700)
        if box.as_nobody:
            os.chown(judge_dir, NOBODY, NOBODY)
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        verdict_r, verdict_w = os.pipe()
        start = time.monotonic()
        try:
            with (
                box.output("stdout.txt") as out,
                box.output("stderr.txt") as err,
                box.output("judge-stdout.txt") as jout,
                box.output("judge-stderr.txt") as jerr,
                open(os.devnull, "rb") as inp,
            ):
                box.candidate("serve", memory_mb=memory_mb, timeout=timeout, file_size_mb=file_size_mb, stdin=inp,
                              out=out, err=err, fds=(req_r, resp_w), entry=entry)  # fmt: skip
                judge = subprocess.Popen(
                    [box.python, "-I", "-B", str(judge_script), str(req_w), str(resp_r), str(verdict_w),
                     str(int(timeout) + 1)],  # fmt: skip
                    stdin=subprocess.PIPE, stdout=jout, stderr=jerr, cwd=judge_dir, env=clean_env(str(judge_dir)),
                    start_new_session=True, close_fds=True, pass_fds=[req_w, resp_r, verdict_w],
                    **_user_kwargs(box.as_nobody),
                )  # fmt: skip
                box.procs.append(judge)
                for fd in (req_r, req_w, resp_r, resp_w, verdict_w):
                    os.close(fd)
                req_r = req_w = resp_r = resp_w = verdict_w = -1
                try:
                    assert judge.stdin is not None
                    judge.stdin.write(job.encode("utf-8"))
                    judge.stdin.close()
                except OSError:
                    pass
                try:
                    rc: int | None = judge.wait(timeout=max(0.1, timeout - (time.monotonic() - start)))
                    timed_out = False
                except subprocess.TimeoutExpired:
                    rc, timed_out = None, True
                for proc in box.procs:
                    _kill_group(proc)
            verdict = _read_verdict(verdict_r)
        finally:
            for fd in (req_r, req_w, resp_r, resp_w, verdict_w, verdict_r):
                if fd >= 0:
                    os.close(fd)
        seconds = time.monotonic() - start
        stdout, cand_err = _tail(box.dir / "stdout.txt"), _tail(box.dir / "stderr.txt")
        judge_err = _tail(box.dir / "judge-stderr.txt")
        if timed_out:
            status, reason = "timeout", f"sandbox: no verdict within {timeout:g} s"
        elif rc == 0 and verdict is not None:
            status, reason = verdict
        else:
            status, reason = "failed", f"sandbox: the judge ended without a verdict (status {rc})"
        stderr = "\n".join(x for x in (reason, cand_err, judge_err) if x)
        return RunResult(status, rc, stdout, stderr, seconds)


def _read_verdict(fd: int) -> tuple[str, str] | None:
    os.set_blocking(fd, False)
    data = b""
    try:
        while len(data) < 1 << 20:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
    except BlockingIOError:
        pass
    if len(data) < 8 or int.from_bytes(data[:8], "big") != len(data) - 8:
        return None
    try:
        msg = json.loads(data[8:].decode("utf-8"))
    except ValueError:
        return None
    if not isinstance(msg, dict) or msg.get("status") not in ("passed", "failed") or not isinstance(msg.get("reason"), str):
        return None
    return msg["status"], msg["reason"]


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the program and anything it started (its own session and process group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
