"""stages/lib as packages by concern, with imports that flow one way.

Each package's ``__init__.py`` docstring names the other lib packages it may import
(``May import: core, data.``); the imports read from the code (tests/import_graph.py, lazy
ones included) must stay inside that list, and the package graph must have no cycle.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.import_graph import ROOT, direct_imports, module_name

LIB = ROOT / "stages" / "lib"
PACKAGES = sorted(p.parent.name for p in LIB.glob("*/__init__.py"))
_MAY = re.compile(r"^May import:\s*(.+?)\.?\s*$", re.MULTILINE)


def _allowed(package: str) -> set[str]:
    doc = ast.get_docstring(ast.parse((LIB / package / "__init__.py").read_text(encoding="utf-8"))) or ""
    found = _MAY.search(doc)
    assert found, f"stages/lib/{package}/__init__.py: its docstring needs a 'May import: ...' line"
    words = found.group(1)
    if words.startswith("nothing"):
        return set()
    return {w.strip() for w in words.split(",")}


def _package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) >= 4 and parts[:2] == ["stages", "lib"] else None


def _package_imports(package: str) -> dict[str, set[str]]:
    """{other lib package: {'module -> module', ...}} for every import out of ``package``."""
    out: dict[str, set[str]] = {}
    for path in sorted((LIB / package).rglob("*.py")):
        mod = module_name(path)
        for target in direct_imports(mod):
            other = _package_of(target)
            if other and other != package:
                out.setdefault(other, set()).add(f"{mod} -> {target}")
    return out


def test_no_module_sits_loose_in_lib() -> None:
    loose = sorted(p.name for p in LIB.glob("*.py") if p.name != "__init__.py")
    assert loose == [], f"modules directly under stages/lib/ belong in a package: {loose}"


def test_the_expected_packages_exist() -> None:
    expected = {"core", "data", "model", "quant", "report", "sweep", "trt", "runners", "serving"}
    assert expected <= set(PACKAGES)


def test_lib_imports_no_stage_module() -> None:
    for path in sorted(LIB.rglob("*.py")):
        mod = module_name(path)
        stages = [t for t in direct_imports(mod) if t.count(".") == 1 and not t.startswith("stages.lib")]
        assert stages == [], f"{mod} imports stage modules {stages}: stages sit on top of lib"


def test_core_imports_no_other_package() -> None:
    assert _allowed("core") == set()
    assert _package_imports("core") == {}


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_stay_inside_what_the_docstring_allows(package: str) -> None:
    allowed = _allowed(package)
    assert allowed <= set(PACKAGES), f"{package}: its docstring names unknown packages {allowed - set(PACKAGES)}"
    bad = {other: sorted(why) for other, why in _package_imports(package).items() if other not in allowed}
    assert bad == {}, f"stages/lib/{package} imports packages its docstring does not allow: {bad}"


def test_the_allowed_package_graph_has_no_cycle() -> None:
    graph = {p: _allowed(p) for p in PACKAGES}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            assert state.get(nxt) != 1, f"package import cycle: {' -> '.join([*path, nxt])}"
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for p in PACKAGES:
        if p not in state:
            visit(p, [p])


def test_no_module_import_cycle() -> None:
    modules = [module_name(p) for p in sorted((ROOT / "stages").rglob("*.py"))]
    # imports proper (a module named in a string runs in a child process); a module's own
    # packages (their __init__ runs first) are not cycles of code
    graph = {m: {t for t in direct_imports(m, strings=False) if not m.startswith(t + ".")} for m in modules}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            assert state.get(nxt) != 1, f"import cycle: {' -> '.join([*path, nxt])}"
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for m in modules:
        if m not in state:
            visit(m, [m])


def test_a_forbidden_import_is_caught(tmp_path: Path) -> None:
    """The rule bites: core importing report is reported (on a copy of the tree)."""
    import shutil

    shutil.copytree(ROOT / "stages", tmp_path / "stages")
    (tmp_path / "stages/lib/core/bad.py").write_text("from ..report import metrics\n", encoding="utf-8")
    direct_imports.cache_clear()
    try:
        found = direct_imports("stages.lib.core.bad", tmp_path)
    finally:
        direct_imports.cache_clear()
    assert "stages.lib.report.metrics" in found
    assert _package_of("stages.lib.report.metrics") not in _allowed("core")
