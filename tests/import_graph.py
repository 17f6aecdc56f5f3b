"""The project's import graph, read from the source (ast): which `stages` modules a stage runs.

An edge A -> B exists when module A
- imports B (``import``/``from`` statements anywhere in the file, lazy ones inside functions
  included; relative imports resolved; ``from pkg import name`` is an edge to ``pkg.name``
  when that is a module, else to ``pkg``), or
- names B in a string literal (``"stages.lib.runners.torch_runner"`` in the runner registry,
  ``run_module("stages.build", ...)`` for a child process in ``$TRT_PYTHON``,
  ``per_backend("stages.evaluate", ...)`` for the per-backend children).

Importing a module runs its packages' ``__init__.py`` too, so those are edges as well.
Run as ``python -m tests.import_graph`` to print each stage's module set.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "stages"
_DOTTED = re.compile(rf"^{PACKAGE}(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def module_file(module: str, root: Path = ROOT) -> Path | None:
    """The file of a project module (package -> its __init__.py), or None."""
    base = root / module.replace(".", "/")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _packages_of(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _resolve_from(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


@cache
def direct_imports(module: str, root: Path = ROOT, strings: bool = True) -> frozenset[str]:
    """Project modules ``module`` imports or names, plus the packages they live in.

    ``strings=False`` leaves out modules only named in strings (a child process's module):
    the imports proper, what an import cycle is made of.
    """
    path = module_file(module, root)
    if path is None:
        raise ValueError(f"{module}: no such module under {root}")
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve_from(module, is_package, node)
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names if module_file(f"{target}.{a.name}", root))
        elif strings and isinstance(node, ast.Constant) and isinstance(node.value, str) and _DOTTED.match(node.value):
            found.add(node.value)
    mods = {m for m in found if (m == PACKAGE or m.startswith(PACKAGE + ".")) and module_file(m, root)}
    mods.update(pkg for m in set(mods) for pkg in _packages_of(m))
    mods.discard(module)
    return frozenset(mods)


def closure(module: str, root: Path = ROOT) -> set[str]:
    """``module`` and every project module it reaches, its packages included."""
    seen = {module, *_packages_of(module)}
    todo = list(seen)
    while todo:
        for dep in direct_imports(todo.pop(), root):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def files_of(modules: set[str], root: Path = ROOT) -> set[str]:
    """Repository-relative paths of ``modules``."""
    return {str(module_file(m, root).relative_to(root)) for m in modules}  # type: ignore[union-attr]


if __name__ == "__main__":
    import sys

    for name in sys.argv[1:] or sorted(p.stem for p in (ROOT / PACKAGE).glob("*.py") if p.stem != "__init__"):
        print(f"{name}:")
        for f in sorted(files_of(closure(f"{PACKAGE}.{name}"))):
            print(f"  - {f}")


def import_blocking(modules: list[str], blocked: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    """Import ``modules`` in a fresh interpreter where importing any top-level package in
    ``blocked`` raises ImportError; prints 'ok' when every import succeeded."""
    code = textwrap.dedent(f"""
        import importlib, sys
        class Block:
            def find_spec(self, name, path, target=None):
                if name.split('.')[0] in {blocked!r}:
                    raise ImportError('blocked ' + name)
        sys.meta_path.insert(0, Block())
        for m in {modules!r}:
            importlib.import_module(m)
        print('ok')
    """)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
