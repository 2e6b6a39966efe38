"""The OS sandbox the candidate's process runs in: bubblewrap (``bwrap``), an empty world.

:func:`command` wraps the candidate's command line so that it runs in new mount, PID, network,
IPC and UTS namespaces in which the file system holds only, read-only, ``/usr``, ``/lib*``,
``/bin``/``/sbin`` and the interpreter's own prefix -- with every ``site-packages`` and
``dist-packages`` folder in them covered by an empty tmpfs, so only the standard library can be
imported -- plus a private, empty ``/tmp`` (its working folder) and ``/dev/shm``, a minimal
``/dev``, its own ``/proc`` and the few files the caller binds under ``/leaf``. Not there: the
project, the virtual environment, ``/etc``, ``/home``, ``/root``, the data, the predictions,
the benchmark packages, other processes, the network. The environment is cleared. As root it
runs as ``nobody`` (65534) for real: bwrap keeps CAP_SETUID/CAP_SETGID only for ``setpriv``,
which drops to 65534 with no capabilities before the interpreter starts; as another user a user
namespace maps that user to 65534.

No seccomp filter and no cgroup limits: memory, CPU time and file sizes are the resource limits
the runner sets (``_child.py``).
"""

from __future__ import annotations

import functools
import glob
import logging
import os
import shutil
import subprocess
import sys

from leaf.checkers import CODE_SANDBOXES as MODES
from leaf.config import ConfigError

NOBODY = 65534
MISSING = (
    "code evaluation needs bubblewrap (apt-get install bubblewrap), or --code-sandbox none where the container "
    "is the boundary"
)
BOX = "/tmp"  # the candidate's working folder inside the sandbox
FILES = "/leaf"  # where the caller's read-only files appear inside the sandbox
log = logging.getLogger(__name__)


class SandboxUnavailable(ConfigError):
    """bubblewrap is missing or cannot create namespaces here; the one-line message says what to do
    (a ``ConfigError``: the command line prints it without a traceback and exits with status 2)."""


def which() -> str | None:
    """The ``bwrap`` executable, or None."""
    return shutil.which("bwrap")


def interpreter(python: str) -> str:
    """The base interpreter behind ``python`` (a virtual environment's own ``bin`` is not bound)."""
    exe = os.path.realpath(python)
    if exe == os.path.realpath(sys.executable) and sys.prefix != sys.base_prefix:
        base = os.path.join(sys.base_prefix, "bin", "python%d.%d" % sys.version_info[:2])
        if os.path.isfile(base):
            return os.path.realpath(base)
    return exe


@functools.lru_cache(maxsize=2)
def _has_option(bwrap: str, option: str) -> bool:
    try:
        res = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return option in res.stdout + res.stderr


def _prefix(python: str) -> str:
    exe = os.path.realpath(python)
    if os.path.realpath(sys.executable) == exe:
        return os.path.realpath(sys.base_prefix)
    return os.path.dirname(os.path.dirname(exe))


@functools.lru_cache(maxsize=4)
def _system_binds(python: str) -> tuple[str, ...]:
    """What the sandbox sees of this machine: system folders and the interpreter's prefix, read-only,
    with every package folder in them covered by an empty tmpfs."""
    args: list[str] = []
    bound: list[str] = []
    for top in ("/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
            bound.append(top)
    prefix = _prefix(python)
    exe_dir = os.path.dirname(interpreter(python))
    for root in (prefix, exe_dir):
        if not any(root == b or root.startswith(b + "/") for b in bound):
            parts = root.strip("/").split("/")[:-1]
            for k in range(1, len(parts) + 1):  # bwrap would make the folders above it 0700
                args += ["--perms", "0755", "--dir", "/" + "/".join(parts[:k])]
            args += ["--ro-bind", root, root]
            bound.append(root)
    masks = set()
    for base in (prefix, "/usr", "/usr/local"):
        for pattern in ("lib*/python*/site-packages", "lib*/python*/dist-packages", "lib*/python3/dist-packages",
                        "local/lib*/python*/*-packages", "share/python*"):  # fmt: skip
            masks.update(p for p in glob.glob(os.path.join(base, pattern)) if os.path.isdir(p) and not os.path.islink(p))
    for mask in sorted(masks):
        args += ["--tmpfs", mask]
    return tuple(args)


def command(
    inner: list[str], python: str, files: dict[str, str], *, tmp_mb: int, bwrap: str | None = None,
    drop: str | None = None,
) -> list[str]:  # fmt: skip
    """``inner`` (starting with ``python``) wrapped in bwrap; ``files`` maps a name under ``/leaf`` to a host file."""
    drop = drop or _drop_mode(python)
    exe = bwrap or which() or "bwrap"
    cmd = [exe, "--die-with-parent", "--new-session", "--unshare-ipc", "--unshare-pid", "--unshare-net",
           "--unshare-uts", "--unshare-cgroup-try"]  # fmt: skip
    if drop == "setpriv":
        cmd += ["--cap-add", "CAP_SETUID,CAP_SETGID"]
    else:
        cmd += ["--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY)]
    cmd += ["--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8",
            "--setenv", "HOME", BOX, "--setenv", "TMPDIR", BOX]  # fmt: skip
    cmd += _system_binds(os.path.realpath(python))
    cmd += ["--proc", "/proc", "--dev", "/dev"]
    size = ["--size", str(max(1, tmp_mb) << 20)] if _has_option(exe, "--size") else []  # bubblewrap >= 0.8
    cmd += ["--perms", "1777", *size, "--tmpfs", BOX, "--perms", "1777", *size, "--tmpfs", "/dev/shm"]
    cmd += ["--perms", "0755", "--dir", FILES]
    for name, src in files.items():
        cmd += ["--ro-bind", src, f"{FILES}/{name}"]
    cmd += ["--chdir", BOX, "--"]
    if drop == "setpriv":
        setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
        cmd += [setpriv, "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups", "--inh-caps=-all",
                "--bounding-set=-all", "--"]  # fmt: skip
    return cmd + inner


def _probe(python: str, drop: str) -> tuple[bool, str]:
    inner = [interpreter(python), "-I", "-S", "-c", "import os, sys; sys.stdout.write('%d %d' % (os.getuid(), os.getpid()))"]
    try:
        res = subprocess.run(command(inner, python, {}, tmp_mb=1, drop=drop), stdin=subprocess.DEVNULL,
                             capture_output=True, timeout=30, env={"PATH": "/usr/bin:/bin"})  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        return False, str(exc)
    if res.returncode == 0 and res.stdout.split()[:1] == [str(NOBODY).encode()]:
        return True, ""
    return False, res.stderr.decode(errors="replace").strip()[:200]


@functools.lru_cache(maxsize=4)
def _drop_mode(python: str) -> str:
    """How the sandbox becomes ``nobody``: "setpriv" (root, for real) or "userns" (a user namespace)."""
    if os.geteuid() == 0 and shutil.which("setpriv") and _probe(python, "setpriv")[0]:
        return "setpriv"
    return "userns"


@functools.lru_cache(maxsize=4)
def _check(python: str) -> str:
    if not sys.platform.startswith("linux") or which() is None:
        return MISSING
    ok, why = _probe(python, _drop_mode(python))
    if not ok:
        log.info("sandbox: bubblewrap cannot create its namespaces here: %s", why)
        return f"{MISSING} (bubblewrap could not start here: {why})" if why else MISSING
    return ""


def unavailable(python: str | None = None) -> str:
    """Why bwrap cannot run ``python`` here (one line), or "" where it can (probed once per interpreter)."""
    return _check(os.path.realpath(python or sys.executable))


def require(python: str | None = None) -> None:
    """Raise :class:`SandboxUnavailable` (one line: what to install) unless bwrap works here (probed once)."""
    why = unavailable(python)
    if why:
        raise SandboxUnavailable(why)


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ConfigError(f"--code-sandbox {mode!r}: use one of {', '.join(MODES)}")
    return mode
