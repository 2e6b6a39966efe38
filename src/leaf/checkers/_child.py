# The candidate's runner (untrusted side of the sandbox). Not imported by leaf: leaf.checkers.sandbox
# writes _plain.py + this file into a temporary directory and runs it with ``python -I -B``.
#
# argv: box workdir program mem_mb cpu_s fsize_mb mode req_fd resp_fd entry
#   mode  "script" (stdin/stdout program: __name__ == "__main__", sys.exit(0) is a normal end),
#         "module" (a program on its own) or "serve" (define the candidate, then answer the judge's
#         calls over the two pipe descriptors req_fd/resp_fd; entry is the entry point expression).
#
# Nothing this process does can make a run pass: in "serve" mode the verdict is the judge's, which
# only ever receives plain values from here (see sandbox.py); in the other modes the caller judges
# the output.

import os, sys, resource


def _limits(mem_bytes, cpu_s, fsize):
    for res, val in ((resource.RLIMIT_AS, mem_bytes), (resource.RLIMIT_CPU, cpu_s),
                     (resource.RLIMIT_FSIZE, fsize), (resource.RLIMIT_CORE, 0),
                     (resource.RLIMIT_NPROC, 0)):
        try:
            resource.setrlimit(res, (val, val))
        except (ValueError, OSError):
            pass


def _neutralise():
    """Remove calls that raise no audit event but reach outside: pidfds (signals to any process by
    descriptor) and mkfifo/mknod (create files anywhere). ``posix`` cannot be imported again (the
    hook refuses it), so the functions are gone for good."""
    import signal
    mods = [os, signal]
    for name in ("posix", "_signal"):
        if name in sys.modules:
            mods.append(sys.modules[name])
    for mod in mods:
        for name in ("pidfd_open", "pidfd_send_signal", "mkfifo", "mknod", "setns", "unshare"):
            try:
                delattr(mod, name)
            except AttributeError:
                pass


def _install(root, workdir, pid):
    import types
    WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    DENY = frozenset((
        "os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "os.system",
        "subprocess.Popen", "os.killpg", "pty.spawn",
        "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
        "gc.get_objects", "gc.get_referrers", "gc.get_referents",
        "sys._current_frames", "sys._current_exceptions", "os.setuid", "os.chroot", "os.symlink",
        "os.link", "os.startfile", "sys.setprofile", "sys.settrace", "sys.remote_exec",
        "code.__new__", "sys.monitoring.register_callback", "os.chflags", "os.lchflags",
    ))
    BAD_IMPORTS = frozenset(("ctypes", "_ctypes", "_posixsubprocess", "cffi", "posix", "_signal", "nt",
                             "_xxsubinterpreters", "_testcapi", "_testinternalcapi"))
    # event -> positions of (path, dir_fd) pairs in its arguments
    PATHS = {
        "os.remove": ((0, 1),), "os.rmdir": ((0, 1),), "os.mkdir": ((0, 2),),
        "os.rename": ((0, 2), (1, 3)), "os.chmod": ((0, 2),), "os.chown": ((0, 3),),
        "os.utime": ((0, 3),), "os.truncate": ((0, None),), "os.setxattr": ((0, None),),
        "os.removexattr": ((0, None),), "os.chdir": ((0, None),),
        "shutil.rmtree": ((0, 1),), "shutil.move": ((0, None), (1, None)),
        "shutil.copyfile": ((1, None),), "shutil.copymode": ((1, None),),
        "shutil.copystat": ((1, None),), "shutil.copytree": ((1, None),),
    }
    own_proc = "/proc/%d" % pid
    proc_private = ("environ", "mem", "map_files", "pagemap", "task", "root", "cwd", "fd", "fdinfo")

    def where(p, dir_fd=None, realpath=os.path.realpath, readlink=os.readlink, fsdecode=os.fsdecode):
        """The absolute path ``p`` (relative to ``dir_fd`` when given) names, or None when unknown."""
        try:
            if isinstance(p, int):
                return realpath(readlink("/proc/self/fd/%d" % p))
            p = fsdecode(p)
            if not p.startswith("/") and isinstance(dir_fd, int) and dir_fd >= 0:
                p = readlink("/proc/self/fd/%d" % dir_fd) + "/" + p
            return realpath(p)
        except Exception:
            return None

    def inside(path):
        return path is not None and (path == root or path.startswith(root + "/") or path == "/dev/null")

    def unreadable(path):
        """Why ``path`` may not be read, or None."""
        if path is None:
            return "an unknown path"
        if path == workdir or (path.startswith(workdir + "/") and not inside(path)):
            return "the runner's or the judge's files"
        if path.startswith("/proc/"):
            parts = path.split("/")
            if parts[2].isdigit() and "/proc/" + parts[2] != own_proc:
                return "another process"
            if (parts[2] in ("self", "thread-self") or "/proc/" + parts[2] == own_proc) and len(parts) > 3 \
                    and parts[3] in proc_private:
                return "this process's private entries"
        return None

    def hook(event, args, DENY=DENY, BAD_IMPORTS=BAD_IMPORTS, PATHS=PATHS, WRITE=WRITE,
             where=where, inside=inside, unreadable=unreadable, isdir=os.path.isdir, pid=pid,
             FunctionType=types.FunctionType, PermissionError=PermissionError, isinstance=isinstance):
        if event in DENY or event.startswith("ctypes."):
            raise PermissionError("sandbox: %s is not allowed" % event)
        if event == "import":
            if args[0].split(".")[0] in BAD_IMPORTS:
                raise PermissionError("sandbox: importing %s is not allowed" % args[0])
        elif event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            if isinstance(path, int):
                return  # wrapping a descriptor that is already open
            text = os.fsdecode(path) if isinstance(path, (str, bytes)) else ""
            if not text.startswith("/") and ".." in text.replace("\\", "/").split("/"):
                raise PermissionError("sandbox: a relative path with '..' is not allowed")
            full = where(path)
            writing = bool((flags or 0) & WRITE) or any(c in (mode or "") for c in "wax+")
            if writing and not inside(full):
                raise PermissionError("sandbox: writing %r is not allowed" % (path,))
            why = unreadable(full)
            if why is not None:
                raise PermissionError("sandbox: reading %s is not allowed (%r)" % (why, path))
            if not inside(full) and full is not None and isdir(full):
                raise PermissionError("sandbox: opening a directory outside the box is not allowed")
        elif event in PATHS:
            for k, d in PATHS[event]:
                if k < len(args):
                    p = args[k]
                    fd = args[d] if d is not None and d < len(args) else None
                    if isinstance(p, (str, bytes, int)) or hasattr(p, "__fspath__"):
                        if not inside(where(p, fd)):
                            raise PermissionError("sandbox: %s on %r is not allowed" % (event, p))
        elif event == "os.kill":
            if args[0] != pid:
                raise PermissionError("sandbox: signalling another process is not allowed")
        elif (event == "object.__setattr__" and isinstance(args[0], FunctionType)
              and args[1] in ("__code__", "__defaults__", "__kwdefaults__", "__globals__")):
            raise PermissionError("sandbox: rewriting a function's code or defaults is not allowed")

    sys.addaudithook(hook)


def _serve(g, entry, req_fd, resp_fd, read, write, exit_):
    """Answer the judge: ["call", target, args, kwargs] -> ["ok", result, args, kwargs] | ["err", type,
    message] | ["bad", why]; ["end"] -> ["end"]. Only plain values go back (see _plain.py)."""
    classes = {}

    def obj_name(v):
        t = type(v)
        name = getattr(t, "__name__", None)
        if isinstance(name, str) and getattr(t, "__module__", None) == "solution":
            classes.setdefault(name, t)
            return name
        return None

    def get_class(name):
        c = g.get(name)
        return c if isinstance(c, type) and c.__module__ == "solution" else classes.get(name)

    names = sorted(k for k, v in g.items() if isinstance(k, str) and not k.startswith("__") and callable(v)
                   and not isinstance(v, (type, type(sys))))
    send_msg(write, resp_fd, ["ready", names[:10000]])
    resolved = {}
    while True:
        try:
            msg = recv_msg(read, req_fd, 1 << 30)
        except PlainError:
            exit_(3)
        if msg is None:
            break
        if msg == ["end"]:
            send_msg(write, resp_fd, ["end"])
            continue
        try:
            _, target, args_t, kwargs_t = msg
            args = plain_decode(args_t, get_class)
            kwargs = plain_decode(kwargs_t, get_class)
        except Exception as exc:
            send_msg(write, resp_fd, ["bad", "the judge's arguments did not decode: %s" % exc])
            continue
        try:
            if target not in resolved:
                resolved[target] = eval(entry, g) if target == "" else g[target]
            result = resolved[target](*args, **kwargs)
        except BaseException as exc:
            try:
                text = str(exc)[:4000]
            except BaseException:
                text = "(unprintable)"
            send_msg(write, resp_fd, ["err", type(exc).__name__, text])
            continue
        try:
            reply = ["ok", plain_encode(result, obj_name), plain_encode(args, obj_name), plain_encode(kwargs, obj_name)]
        except PlainError as exc:
            reply = ["bad", "the candidate returned %s" % exc]
        except RecursionError:
            reply = ["bad", "the candidate returned a value nested too deeply"]
        send_msg(write, resp_fd, reply)


def _flush():
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except Exception:
            pass


def main():
    box, workdir, program, mem_mb, cpu_s, fsize_mb, mode, req_fd, resp_fd, entry = sys.argv[1:11]
    req_fd, resp_fd = int(req_fd), int(resp_fd)
    _limits(int(mem_mb) * 2**20, int(cpu_s), int(fsize_mb) * 2**20)
    with open(program, encoding="utf-8") as fh:
        source = fh.read()
    sys.argv = [program]
    g = {"__name__": "__main__" if mode == "script" else "solution", "__file__": program,
         "__builtins__": __builtins__}
    exit_, read, write = os._exit, os.read, os.write  # before the program can replace them
    try:
        code = compile(source, program, "exec")
    except SyntaxError:
        import traceback
        traceback.print_exc(limit=0)
        _flush()
        exit_(1)
    import json, traceback  # noqa: F401  (loaded before the hook, for _serve and error reports)
    _neutralise()
    _install(os.path.realpath(box), os.path.realpath(workdir), os.getpid())
    del fh
    try:
        exec(code, g)
    except SystemExit as exc:
        if mode != "script":
            sys.stderr.write("sandbox: the program exited (%r) before its tests ran\n" % (exc.code,))
            _flush()
            exit_(1)
        if exc.code not in (None, 0):
            _flush()
            exit_(exc.code if isinstance(exc.code, int) else 1)
    except BaseException:
        try:
            traceback.print_exc()
        except BaseException:
            sys.stderr.write("sandbox: the program raised an exception\n")
        _flush()
        exit_(1)
    if mode == "serve":
        _flush()
        _serve(g, entry, req_fd, resp_fd, read, write, exit_)
    _flush()
    exit_(0)


main()
