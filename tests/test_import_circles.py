"""No two modules of a package import each other (docs/architecture.md), lazy imports inside functions included."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_layers import ROOT, imports, module_name

#: Packages checked (the others follow as their circles are taken apart).
PACKAGES = ("distill", "recipe")


def arrows(package: str, root: Path = ROOT) -> set[tuple[str, str]]:
    """``(importer, imported)`` between the modules of ``leaf.<package>`` (a ``from pkg import mod`` counts as mod)."""
    found = set()
    for path in sorted((root / package).rglob("*.py")):
        src = module_name(path, root)
        for _, module, names in imports(path, root):
            targets = [f"{module}.{n}" for n in names if (root / package / f"{n}.py").exists()] or [module]
            found |= {(src, t) for t in targets if t.startswith(f"leaf.{package}.") and t != src}
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_no_two_modules_import_each_other(package):
    edges = arrows(package)
    circles = sorted(f"{a} <-> {b}" for a, b in edges if (b, a) in edges and a < b)
    assert not circles, f"import circles in leaf.{package}: {', '.join(circles)}"


def test_the_check_sees_a_lazy_circle(tmp_path):
    pkg = tmp_path / "leaf" / "pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from leaf.pkg.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from leaf.pkg import a\n")
    assert arrows("pkg", tmp_path / "leaf") == {("leaf.pkg.a", "leaf.pkg.b"), ("leaf.pkg.b", "leaf.pkg.a")}
