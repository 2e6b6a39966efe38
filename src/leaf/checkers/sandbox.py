"""Run untrusted Python in a separate, fenced-in process.

:func:`run_python` writes the program into a fresh temporary directory and runs
it there with this interpreter (``-I``: no user site, no ``PYTHON*`` variables)
under a small trusted runner that, before the program starts,

* sets resource limits: address space (``memory_mb``), CPU seconds, size of
  any file written, no core files, and ``RLIMIT_NPROC`` = 0 (refuses new
  processes for an unprivileged user);
* installs a Python audit hook (it cannot be removed once installed) that
  refuses: opening a file for writing, deleting, renaming, truncating,
  chmod/chown or linking anything outside the temporary directory; starting
  processes (``fork``, ``exec``, ``posix_spawn``, ``system``, ``subprocess``);
  sending signals; loading native code through ``ctypes``; network
  connections; reading another process's ``/proc`` entries (where a parent's
  environment could be read); and introspection that could reach the hook
  (``gc.get_objects``/``get_referrers``, rewriting a function's code or defaults).

The process gets an environment with no inherited variables (only ``PATH``,
``LANG``, ``HOME`` and ``TMPDIR``, the last two pointing at the temporary
directory), stdin closed (or the given input), and its own process group,
which is killed as a whole at the wall-clock limit. When this process runs as
root and the interpreter is usable by ``nobody``, the program also runs as
``nobody`` (then the kernel itself protects files and ``RLIMIT_NPROC`` holds).

This is containment for benchmark code written by a model, not a security
boundary against a determined attacker: run evaluations of untrusted models in
a container or VM.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NOBODY = 65534
#: Exit status the runner reports when the program ran to its end; a program that exits by itself
#: (``sys.exit(0)`` or ``os._exit(0)`` before its tests ran) cannot pass by accident.
DONE = 86
log = logging.getLogger(__name__)

RUNNER = r"""
import os, sys, resource

def _limits(mem_bytes, cpu_s, fsize):
    for res, val in ((resource.RLIMIT_AS, mem_bytes), (resource.RLIMIT_CPU, cpu_s),
                     (resource.RLIMIT_FSIZE, fsize), (resource.RLIMIT_CORE, 0),
                     (resource.RLIMIT_NPROC, 0)):
        try:
            resource.setrlimit(res, (val, val))
        except (ValueError, OSError):
            pass

def _install(root, pid):
    import types
    WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    DENY = frozenset((
        "os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "os.system",
        "subprocess.Popen", "os.kill", "os.killpg", "signal.pthread_kill", "pty.spawn",
        "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
        "gc.get_objects", "gc.get_referrers", "gc.get_referents",
        "sys._current_frames", "os.setuid", "os.chroot", "os.symlink", "os.link",
        "os.startfile", "sys.setprofile", "sys.settrace", "sys.remote_exec",
    ))
    BAD_IMPORTS = frozenset(("ctypes", "_ctypes", "_posixsubprocess", "cffi"))
    PATH_EVENTS = frozenset(("os.remove", "os.rmdir", "os.rename", "os.truncate", "os.chmod",
                             "os.chown", "os.mkdir", "os.utime", "shutil.rmtree", "shutil.move",
                             "shutil.copyfile", "shutil.copymode", "shutil.copystat",
                             "shutil.copytree", "os.setxattr", "os.removexattr"))
    own_proc = ("/proc/%d" % pid, "/proc/self", "/proc/thread-self")

    def inside(p, root=root):
        if isinstance(p, int):
            return True  # an already open descriptor
        try:
            p = os.fsdecode(p)
            p = os.path.realpath(p)
        except Exception:
            return False
        return p == root or p.startswith(root + os.sep) or p == "/dev/null"

    def hook(event, args, DENY=DENY, BAD_IMPORTS=BAD_IMPORTS, PATH_EVENTS=PATH_EVENTS,
             WRITE=WRITE, inside=inside, own_proc=own_proc):
        if event in DENY or event.startswith("ctypes."):
            raise PermissionError("sandbox: %s is not allowed" % event)
        if event == "import" and args[0].split(".")[0] in BAD_IMPORTS:
            raise PermissionError("sandbox: importing %s is not allowed" % args[0])
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            writing = bool((flags or 0) & WRITE) or any(c in (mode or "") for c in "wax+")
            if writing and not inside(path):
                raise PermissionError("sandbox: writing %r is not allowed" % (path,))
            if isinstance(path, (str, bytes)):
                text = os.path.realpath(os.fsdecode(path))
                if text.startswith("/proc/") and text.split("/")[2].isdigit() and not text.startswith(own_proc):
                    raise PermissionError("sandbox: reading another process is not allowed")
        elif event in PATH_EVENTS:
            paths = [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
            if event in ("os.mkdir", "os.remove", "os.rmdir", "os.truncate", "os.chmod", "os.chown",
                         "os.utime", "shutil.rmtree", "os.setxattr", "os.removexattr"):
                paths = paths[:1]
            for p in paths:
                if not inside(p):
                    raise PermissionError("sandbox: %s on %r is not allowed" % (event, p))
        elif (event == "object.__setattr__" and isinstance(args[0], types.FunctionType)
              and args[1] in ("__code__", "__defaults__", "__kwdefaults__")):
            raise PermissionError("sandbox: rewriting a function's code or defaults is not allowed")

    sys.addaudithook(hook)

def main():
    root, program, mem_mb, cpu_s, fsize_mb, mode, done = sys.argv[1:8]
    _limits(int(mem_mb) * 2**20, int(cpu_s), int(fsize_mb) * 2**20)
    with open(program, encoding="utf-8") as fh:
        source = fh.read()
    code = compile(source, program, "exec")
    sys.argv = [program]
    _install(os.path.realpath(root), os.getpid())
    # A solution's own "if __name__ == '__main__':" demo must not run before the tests; a script's must.
    g = {"__name__": "__main__" if mode == "script" else "solution", "__file__": program,
         "__builtins__": __builtins__}
    del fh
    try:
        exec(code, g)
    except SystemExit as exc:
        if mode == "tests":
            sys.stderr.write("sandbox: the program exited (%r) before its tests finished\n" % (exc.code,))
            sys.stderr.flush()
            os._exit(1)
        if exc.code not in (None, 0):
            raise
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(int(done))  # only a program that ran to its end reports this status

main()
"""


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


@functools.lru_cache(maxsize=4)
def _nobody_can_run(python: str) -> bool:
    if os.geteuid() != 0:
        return False
    try:
        res = subprocess.run(
            [python, "-I", "-c", "pass"],
            user=NOBODY,
            group=NOBODY,
            extra_groups=[],
            env=clean_env("/tmp"),
            cwd="/tmp",
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return res.returncode == 0


@functools.lru_cache(maxsize=4)
def _warn_root(python: str) -> None:
    log.warning(
        "checking code as root: user 'nobody' cannot run %s, so only the audit hook and resource limits "
        "fence the programs in; run as an ordinary user or inside a container for more",
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
) -> RunResult:
    """Run ``program`` (Python source) fenced in; ``passed`` means it ran to its end in time.

    With ``script=False`` (tests appended to the program) leaving early through
    ``sys.exit``/``os._exit`` is a failure; with ``script=True`` (a stdin/stdout
    program) ``sys.exit(0)`` is a normal end.
    """
    python = python or sys.executable
    as_nobody = drop_privileges and _nobody_can_run(python)
    if os.geteuid() == 0 and not as_nobody:
        _warn_root(python)
    workdir = Path(tempfile.mkdtemp(prefix="leaf-sandbox-"))
    try:
        box = workdir / "box"  # the program's own folder; output files live beside it
        box.mkdir()
        (workdir / "runner.py").write_text(RUNNER, encoding="utf-8")
        (box / "program.py").write_text(program, encoding="utf-8")
        if stdin is not None:
            (workdir / "stdin.txt").write_text(stdin, encoding="utf-8")
        kwargs: dict[str, Any] = {}
        if as_nobody:
            os.chmod(workdir, 0o755)
            os.chown(box, NOBODY, NOBODY)
            os.chown(box / "program.py", NOBODY, NOBODY)
            kwargs = {"user": NOBODY, "group": NOBODY, "extra_groups": []}
        cmd = [
            python,
            "-I",
            "-B",
            str(workdir / "runner.py"),
            str(box),
            str(box / "program.py"),
            str(memory_mb),
            str(int(timeout) + 1),
            str(file_size_mb),
            "script" if script else "tests",
            str(DONE),
        ]
        start = time.monotonic()
        with (
            open(workdir / "stdout.txt", "wb") as out,
            open(workdir / "stderr.txt", "wb") as err,
            open(workdir / "stdin.txt", "rb") if stdin is not None else open(os.devnull, "rb") as inp,
        ):
            proc = subprocess.Popen(
                cmd,
                stdin=inp,
                stdout=out,
                stderr=err,
                cwd=box,
                env=clean_env(str(box)),
                start_new_session=True,
                close_fds=True,
                **kwargs,
            )
            try:
                rc: int | None = proc.wait(timeout=timeout)
                status = "passed" if rc == DONE else "failed"
            except subprocess.TimeoutExpired:
                rc, status = None, "timeout"
            finally:
                _kill_group(proc)
        seconds = time.monotonic() - start
        return RunResult(status, rc, _tail(workdir / "stdout.txt"), _tail(workdir / "stderr.txt"), seconds)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the program and anything it started (same process group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
