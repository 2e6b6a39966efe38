# The judge (trusted side of the sandbox). Not imported by leaf: leaf.checkers.sandbox writes
# _plain.py + this file into a temporary directory and runs it with ``python -I -B``.
#
# argv: req_fd resp_fd verdict_fd cpu_s; stdin: JSON {"prompt", "tests", "entry", "entry_name"}.
#
# The judge runs the benchmark's prompt and tests -- and nothing written by the candidate. The
# entry point (and each other top-level function of the candidate) is a proxy: calling it sends
# the arguments to the candidate's process and gets back a plain value (exact built-in types, or
# an instance of a class the prompt defines, rebuilt here with the prompt's own class). So every
# comparison, ``abs``, ``math.isclose``... of the tests runs here, on values that carry no code of
# the candidate. The verdict goes to verdict_fd, a pipe the candidate's process never holds.

import ast, builtins, json, os, resource, sys, traceback


class CandidateBroken(BaseException):
    """The candidate's process ended, or broke the protocol: the run fails whatever the tests do."""


class Remote:
    def __init__(self, req_fd, resp_fd, classes):
        self.req_fd, self.resp_fd, self.classes = req_fd, resp_fd, classes
        self.broken = None
        self.calls = 0

    def fail(self, why):
        if self.broken is None:
            self.broken = why
        raise CandidateBroken(self.broken)

    def recv(self):
        try:
            msg = recv_msg(os.read, self.resp_fd, 256 << 20)
        except PlainError as exc:
            self.fail("the candidate's process sent %s" % exc)
        except OSError as exc:
            self.fail("the candidate's process could not be read (%s)" % exc)
        if msg is None:
            self.fail("the candidate's process ended (exited, was killed, or ran out of memory)")
        if type(msg) is not list or not msg or type(msg[0]) is not str:
            self.fail("the candidate's process sent a malformed message")
        return msg

    def call(self, target, args, kwargs):
        if self.broken is not None:
            raise CandidateBroken(self.broken)
        self.calls += 1
        obj_name = self.obj_name
        try:
            send_msg(os.write, self.req_fd, ["call", target, plain_encode(args, obj_name), plain_encode(kwargs, obj_name)])
        except PlainError as exc:
            raise TypeError("the tests passed the candidate %s" % exc) from None
        except OSError:
            self.fail("the candidate's process ended (exited, was killed, or ran out of memory)")
        msg = self.recv()
        kind = msg[0]
        if kind == "ok" and len(msg) == 4:
            try:
                result = plain_decode(msg[1], self.classes.get)
                new_args = plain_decode(msg[2], self.classes.get)
                new_kwargs = plain_decode(msg[3], self.classes.get)
            except Exception as exc:  # PlainError, or a malformed tree
                self.fail("the candidate returned %s" % exc)
            _sync(args, new_args)
            _sync(kwargs, new_kwargs)
            return result
        if kind == "err" and len(msg) == 3 and type(msg[1]) is str and type(msg[2]) is str:
            raise _exception(msg[1], msg[2])
        if kind == "bad" and len(msg) == 2 and type(msg[1]) is str:
            self.fail(msg[1][:2000])
        self.fail("the candidate's process sent a malformed message")

    def obj_name(self, v):
        t = type(v)
        name = getattr(t, "__name__", None)
        return name if self.classes.get(name) is t else None

    def proxy(self, target, name):
        call = self.call

        def candidate(*args, **kwargs):
            return call(target, args, kwargs)

        candidate.__name__ = candidate.__qualname__ = name
        return candidate


def _sync(old, new):
    """In-place changes the candidate made to its arguments, made to the tests' own arguments."""
    if type(old) is tuple and type(new) is tuple and len(old) == len(new):
        pairs = zip(old, new)
    elif type(old) is dict and type(new) is dict:
        pairs = ((old[k], new[k]) for k in old if k in new)
    else:
        return
    for a, b in pairs:
        if type(a) is not type(b) or a is b:
            continue
        if type(a) is list:
            a[:] = b
        elif type(a) in (dict, set):
            a.clear()
            a.update(b)
        elif hasattr(a, "__dict__") and type(a) not in (tuple, frozenset):
            a.__dict__.clear()
            a.__dict__.update(b.__dict__)


def _exception(name, text):
    cls = getattr(builtins, name, None)
    message = "%s (raised by the candidate)" % text
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except Exception:
            pass
    return RuntimeError("%s: %s" % (name[:100], message))


def _report(fd, status, reason):
    send_msg(os.write, fd, {"status": status, "reason": reason[-8000:]})


def _where(exc):
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    lines = [ln for ln in lines if "leaf-judge.py" not in ln]
    return "".join(lines[-6:]).strip()


def main():
    req_fd, resp_fd, verdict_fd, cpu_s = (int(x) for x in sys.argv[1:5])
    for res, val in ((resource.RLIMIT_CPU, cpu_s), (resource.RLIMIT_CORE, 0)):
        try:
            resource.setrlimit(res, (val, val))
        except (ValueError, OSError):
            pass
    job = json.loads(sys.stdin.read())
    sys.stdin.close()
    import linecache
    for name in ("tests.py", "prompt.py"):
        text = job["tests" if name == "tests.py" else "prompt"]
        linecache.cache[name] = (len(text), None, text.splitlines(True), name)
    tests_code = compile(job["tests"], "tests.py", "exec")
    has_check = any(isinstance(n, ast.FunctionDef) and n.name == "check" for n in ast.parse(job["tests"]).body)
    T = {"__name__": "leaf_tests", "__builtins__": builtins}
    note = ""
    if job["prompt"].strip():
        try:
            exec(compile(job["prompt"], "prompt.py", "exec"), T)
        except BaseException as exc:
            note = "(the prompt alone did not run: %s: %s; the tests run without its definitions)\n" % (
                type(exc).__name__, exc)
            T = {"__name__": "leaf_tests", "__builtins__": builtins}
    classes = {k: v for k, v in T.items() if isinstance(v, type) and v.__module__ == "leaf_tests"}
    remote = Remote(req_fd, resp_fd, classes)
    try:
        ready = remote.recv()
        if ready[0] != "ready" or len(ready) != 2 or type(ready[1]) is not list:
            remote.fail("the candidate's process sent a malformed message")
    except CandidateBroken:
        _report(verdict_fd, "failed", note + "the program did not load (see its errors below)")
        os._exit(0)
    for name in ready[1]:
        if type(name) is str and name.isidentifier() and name not in T and not hasattr(builtins, name):
            T[name] = remote.proxy(name, name)
    entry = remote.proxy("", job["entry_name"])
    T[job["entry_name"]] = entry
    try:
        exec(tests_code, T)
        if has_check:
            T["check"](entry)
    except CandidateBroken:
        pass
    except BaseException as exc:
        if remote.broken is None:
            _report(verdict_fd, "failed", note + "a test failed:\n" + _where(exc))
            os._exit(0)
    if remote.broken is None:
        # the reply to this must come next: a stray reply the candidate wrote itself is caught here
        try:
            send_msg(os.write, req_fd, ["end"])
            if remote.recv() != ["end"]:
                remote.fail("the candidate's process sent replies that were not asked for")
        except CandidateBroken:
            pass
        except OSError:
            remote.broken = "the candidate's process ended before the end of the tests"
    if remote.broken is not None:
        _report(verdict_fd, "failed", note + remote.broken)
    elif remote.calls == 0:
        _report(verdict_fd, "failed", note + "the tests never called the candidate")
    else:
        _report(verdict_fd, "passed", note + "all tests passed (%d calls of the candidate)" % remote.calls)
    os._exit(0)


main()
