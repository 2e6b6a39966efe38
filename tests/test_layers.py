"""The layer rule of docs/architecture.md, checked on the source: no import points up or sideways.

Every module of ``leaf`` belongs to one layer; a module may import only from
its own package or from lower layers, and never a private name (``_x``) of
another package. The test parses every import (top level and inside
functions) with ``ast``, so a lazy import cannot hide an arrow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import leaf

ROOT = Path(leaf.__file__).parent

#: Layer of each top-level part of the package, from the bottom up (docs/architecture.md).
LAYERS: dict[str, int] = {
    "config": 0,
    "data": 1,
    "models": 2, "generation": 2, "checkers": 2, "batching": 2, "heads": 2, "figures": 2, "tiny": 2,
    "estimate": 2, "distributed": 2, "sharding": 2, "gguf": 2, "stats": 2,
    "detect": 3, "prune": 3, "distill": 3, "evaluate": 3, "analyze": 3,
    "report": 4,
    "demo": 5, "recipe": 5,
    "cli": 6, "__main__": 6, "__init__": 6,
}
STAGES = {name for name, layer in LAYERS.items() if layer == 3}


def part_of(module: str) -> str:
    """``leaf.detect.run`` -> ``detect``; ``leaf`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path, root: Path = ROOT) -> list[tuple[int, str, list[str]]]:
    """``(line, module, names)`` of every ``leaf`` import in a file (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = module_name(path, root).split(".")
    if path.name != "__init__.py":
        here = here[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names if a.name.split(".")[0] == "leaf"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] == "leaf":
                out.append((node.lineno, mod, [a.name for a in node.names]))
    return out


def violations(root: Path = ROOT) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        src = module_name(path, root)
        src_part = part_of(src)
        assert src_part in LAYERS, f"{path}: {src_part!r} has no layer; add it to LAYERS and docs/architecture.md"
        for line, module, names in imports(path, root):
            # `from leaf import figures` imports the module leaf.figures
            for target in ([f"leaf.{n}" for n in names] if module == "leaf" else [module]):
                found += _check(path, root, line, src, src_part, target, names)
    return found


def _check(path: Path, root: Path, line: int, src: str, src_part: str, target: str, names: list[str]) -> list[str]:
    """The rule for one import of ``target`` by module ``src``."""
    dst_part = part_of(target)
    where = f"{path.relative_to(root.parent)}:{line}: {src} imports {target}"
    if dst_part == src_part or target == "leaf.__version__":  # within a package; the version string
        return []
    found = []
    if LAYERS[dst_part] > LAYERS[src_part]:
        found.append(f"{where} (layer {LAYERS[dst_part]} above {LAYERS[src_part]})")
    elif LAYERS[dst_part] == LAYERS[src_part] and dst_part in STAGES:
        found.append(f"{where} (one stage importing another)")
    private = [n for n in names if n.startswith("_")]
    if private:
        found.append(f"{where}: private name(s) {', '.join(private)} of another package")
    return found


def test_no_import_points_up_or_across_stages():
    assert violations() == []


def test_the_checker_sees_violations(tmp_path):
    """The rule is not vacuous: upward, sideways and private imports in a package tree are all reported."""
    pkg = tmp_path / "leaf"
    for folder in ("data", "prune"):
        (pkg / folder).mkdir(parents=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "probe.py").write_text(
        "def f():\n    from leaf.detect.run import detect\n    from leaf.checkers.math import _judge\n")
    (pkg / "prune" / "probe.py").write_text("from ..detect import prepare\nfrom . import text\n")
    found = violations(pkg)
    assert any("leaf.data.probe imports leaf.detect.run (layer 3 above 1)" in v for v in found), found
    assert any("private name(s) _judge" in v for v in found), found
    assert any("leaf.prune.probe imports leaf.detect (one stage importing another)" in v for v in found), found
    assert not any("imports leaf.prune" in v for v in found), found  # within a package is fine


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_every_layer_entry_exists(name):
    assert (ROOT / name).is_dir() or (ROOT / f"{name}.py").exists() or name in ("__init__",), name



def module_targets(module: str, names: list[str], known: set[str]) -> list[str]:
    """The modules one import statement loads: ``from leaf.data import records`` loads leaf.data.records."""
    subs = [f"{module}.{n}" for n in names if f"{module}.{n}" in known]
    return subs or ([module] if module in known else [])


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the package modules it imports (at top level or inside a function).

    A module naming its own package (``from leaf.checkers import MissingExtra`` in leaf.checkers.math) is
    left out: Python has run the package's ``__init__`` before any of its modules, so that is no circle.
    """
    paths = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {m: set() for m in paths}
    for mod, path in paths.items():
        for _, target, names in imports(path, root):
            graph[mod] |= {t for t in module_targets(target, names, set(paths)) if not (mod + ".").startswith(t + ".")}
    return graph


def circles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """Every strongly connected group of two or more modules (Tarjan), each as a sorted tuple."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: set[tuple[str, ...]] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.add(tuple(sorted(group)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_two_modules_import_each_other():
    """No import circle between modules of the package, direct or through others (lazy imports count)."""
    assert circles(import_graph()) == set()


def test_the_circle_finder_sees_circles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"f"}, "f": {"e"}, "g": set()}
    assert circles(graph) == {("a", "b", "c"), ("e", "f")}
    assert module_targets("leaf.data", ["records", "DataError"], {"leaf.data", "leaf.data.records"}) == [
        "leaf.data.records"]
