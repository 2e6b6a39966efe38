# Plain-value codec shared by the sandbox's two runner scripts (``_child.py``, ``_judge.py``).
#
# This file is not imported by leaf: its text is prepended to each runner script, which runs in a
# separate interpreter started with ``-I``. It must therefore use only the standard library and no
# ``from __future__`` import.
#
# A value crosses between the candidate's process and the judge's process as JSON of tagged nodes:
#
#   ["n"] None | ["b", bool] | ["i", hex] | ["f", float.hex()] | ["c", re.hex(), im.hex()]
#   ["s", str] | ["y", bytes.hex()] | ["t", [node...]] tuple | ["F", [node...]] frozenset
#   ["r", k]  entry k of the table (lists, dicts, sets and objects; shared and cyclic ones allowed)
#
# table entries: ["l", [node...]] | ["d", [[key, value]...]] | ["S", [node...]]
#                ["o", class name, [[attribute, node]...]]
#
# Only exact built-in types are encoded (a subclass of int or list is refused), so a value can
# carry no code of its own: no ``__eq__`` that is always true, no ``__str__`` that lies. An object
# ("o") names its class; the receiver rebuilds it with *its own* class of that name (the judge only
# with classes the trusted prompt defined), copying the instance attributes.

import json as _json

_MAX_NODES = 20_000_000
_MAX_INLINE_DEPTH = 100


class PlainError(Exception):
    """A value that cannot cross (its type), or a message that is not well formed."""


def plain_encode(value, obj_name=None):
    """``value`` as a JSON-able tree; ``obj_name(obj)`` names an object's class or returns None."""
    table = []
    memo = {}
    keep = []  # keeps encoded objects alive so that their ids stay unique
    work = []

    def node(v, depth):
        t = type(v)
        if v is None:
            return ["n"]
        if t is bool:
            return ["b", v]
        if t is int:
            return ["i", hex(v)]
        if t is float:
            return ["f", v.hex()]
        if t is complex:
            return ["c", v.real.hex(), v.imag.hex()]
        if t is str:
            return ["s", v]
        if t is bytes:
            return ["y", v.hex()]
        if t is tuple or t is frozenset:
            if depth > _MAX_INLINE_DEPTH:
                raise PlainError("a tuple or frozenset nested too deeply")
            return ["t" if t is tuple else "F", [node(x, depth + 1) for x in v]]
        key = id(v)
        if key in memo:
            return ["r", memo[key]]
        if t is list or t is dict or t is set:
            pass
        else:
            name = obj_name(v) if obj_name is not None else None
            if name is None:
                raise PlainError("a value of type %s (only None, bool, int, float, complex, str, bytes, "
                                 "tuple, list, dict, set, frozenset and the prompt's classes)" % t.__name__)
        if len(table) > _MAX_NODES:
            raise PlainError("a value too large to send")
        memo[key] = len(table)
        keep.append(v)
        table.append(None)
        work.append((len(table) - 1, v))
        return ["r", memo[key]]

    root = node(value, 0)
    while work:
        k, v = work.pop()
        t = type(v)
        if t is list:
            table[k] = ["l", [node(x, 0) for x in v]]
        elif t is dict:
            table[k] = ["d", [[node(a, 0), node(b, 0)] for a, b in v.items()]]
        elif t is set:
            table[k] = ["S", [node(x, 0) for x in v]]
        else:
            attrs = getattr(v, "__dict__", None)
            if type(attrs) is not dict:
                raise PlainError("an object of class %s without attributes" % t.__name__)
            table[k] = ["o", obj_name(v), [[a, node(b, 0)] for a, b in attrs.items() if type(a) is str]]
    return [root, table]


def plain_decode(tree, get_class):
    """The value a :func:`plain_encode` tree describes; ``get_class(name)`` gives the class for "o"."""
    if type(tree) is not list or len(tree) != 2 or type(tree[1]) is not list:
        raise PlainError("malformed value")
    root, table = tree
    shells = []
    for e in table:
        if type(e) is not list or not e or type(e[0]) is not str:
            raise PlainError("malformed table entry")
        tag = e[0]
        if tag == "l" and len(e) == 2 and type(e[1]) is list:
            shells.append([])
        elif tag == "d" and len(e) == 2 and type(e[1]) is list:
            shells.append({})
        elif tag == "S" and len(e) == 2 and type(e[1]) is list:
            shells.append(set())
        elif tag == "o" and len(e) == 3 and type(e[1]) is str and type(e[2]) is list:
            cls = get_class(e[1])
            if cls is None:
                raise PlainError("an object of class %r, which the prompt does not define" % e[1][:100])
            shells.append(object.__new__(cls))
        else:
            raise PlainError("malformed table entry")

    def val(n, depth):
        if type(n) is not list or not n or type(n[0]) is not str:
            raise PlainError("malformed value")
        tag, m = n[0], len(n)
        if tag == "n" and m == 1:
            return None
        if tag == "b" and m == 2 and type(n[1]) is bool:
            return n[1]
        if tag == "i" and m == 2 and type(n[1]) is str:
            return int(n[1], 16)
        if tag == "f" and m == 2 and type(n[1]) is str:
            return float.fromhex(n[1])
        if tag == "c" and m == 3 and type(n[1]) is str and type(n[2]) is str:
            return complex(float.fromhex(n[1]), float.fromhex(n[2]))
        if tag == "s" and m == 2 and type(n[1]) is str:
            return n[1]
        if tag == "y" and m == 2 and type(n[1]) is str:
            return bytes.fromhex(n[1])
        if tag in ("t", "F") and m == 2 and type(n[1]) is list:
            if depth > _MAX_INLINE_DEPTH:
                raise PlainError("a tuple nested too deeply")
            items = [val(x, depth + 1) for x in n[1]]
            return tuple(items) if tag == "t" else frozenset(items)
        if tag == "r" and m == 2 and type(n[1]) is int and 0 <= n[1] < len(shells):
            return shells[n[1]]
        raise PlainError("malformed value")

    # objects first (their attributes may feed hashes), then lists, then dicts and sets
    for order in ("o", "l", "dS"):
        for e, shell in zip(table, shells):
            tag = e[0]
            if tag not in order:
                continue
            if tag == "o":
                for pair in e[2]:
                    if type(pair) is not list or len(pair) != 2 or type(pair[0]) is not str:
                        raise PlainError("malformed object")
                    shell.__dict__[pair[0]] = val(pair[1], 0)
            elif tag == "l":
                shell.extend(val(x, 0) for x in e[1])
            elif tag == "S":
                for x in e[1]:
                    shell.add(val(x, 0))
            else:
                for pair in e[1]:
                    if type(pair) is not list or len(pair) != 2:
                        raise PlainError("malformed dict")
                    shell[val(pair[0], 0)] = val(pair[1], 0)
    return val(root, 0)


def send_msg(write, fd, obj):
    data = _json.dumps(obj, separators=(",", ":")).encode("utf-8")
    data = len(data).to_bytes(8, "big") + data
    view = memoryview(data)
    while view:
        n = write(fd, view)
        view = view[n:]


def recv_msg(read, fd, limit):
    """The next message, or None at end of file; PlainError when malformed or over ``limit`` bytes."""
    head = _read_exact(read, fd, 8)
    if head is None:
        return None
    size = int.from_bytes(head, "big")
    if size > limit:
        raise PlainError("a message of %d bytes (limit %d)" % (size, limit))
    body = _read_exact(read, fd, size)
    if body is None:
        raise PlainError("a message cut short")
    try:
        return _json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise PlainError("a message that is not JSON (%s)" % exc) from None


def _read_exact(read, fd, n):
    parts = []
    while n:
        chunk = read(fd, min(n, 1 << 20))
        if not chunk:
            if parts:
                raise PlainError("a message cut short")
            return None
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)
