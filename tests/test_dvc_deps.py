"""Every stage's deps in dvc.yaml are the code it runs: its module and every project module it
imports, transitively (lazy imports, the runner registry's modules, the per-backend children
and what runs in $TRT_PYTHON included), derived from the import graph (tests/import_graph.py).

So changing any module a stage runs makes DVC rerun that stage (and what its new outputs
feed), and nothing else.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.import_graph import ROOT, closure, direct_imports, files_of
from tests.test_dvc_yaml import STAGE_IDS, STAGES, _modules, _paths

# Plumbing that cannot change a result, left out of every stage's deps (so a change to it
# reruns nothing):
PLUMBING = {
    "stages/lib/core/cli.py",  # main() wrapper: an exception -> one line on stderr and an exit code
    "stages/lib/core/errors.py",  # exception classes and their messages
    "stages/lib/core/gpus.py",  # which GPU a stage holds, never what runs on it
    "stages/lib/core/progress.py",  # progress bars on stderr
}
# ... and package __init__.py files that hold nothing but a docstring (checked below).


def _docstring_only(path: Path) -> bool:
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def _exempt(rel: str) -> bool:
    return rel in PLUMBING or (rel.endswith("__init__.py") and _docstring_only(ROOT / rel))


def _needed(name: str) -> set[str]:
    """Files the stage's command runs, minus plumbing."""
    mods: set[str] = set()
    for module in _modules(STAGES[name]["cmd"]):
        mods |= closure(module)
    return {f for f in files_of(mods) if not _exempt(f)}


def _code_deps(name: str) -> list[str]:
    return [d.rstrip("/") for d in _paths(STAGES[name].get("deps")) if d.startswith("stages")]


def _covered(dep: str) -> set[str]:
    """The .py files a declared code dep stands for (a folder: every module in it)."""
    path = ROOT / dep
    if path.is_dir():
        return {str(p.relative_to(ROOT)) for p in path.rglob("*.py")}
    return {dep}


@pytest.mark.parametrize("name", STAGE_IDS)
def test_every_module_a_stage_runs_is_a_dep(name: str) -> None:
    declared = set().union(*(_covered(d) for d in _code_deps(name)))
    missing = sorted(_needed(name) - declared)
    assert not missing, f"{name}: add to its deps in dvc.yaml (the stage imports them): {missing}"


@pytest.mark.parametrize("name", STAGE_IDS)
def test_every_code_dep_is_run_by_the_stage(name: str) -> None:
    needed = _needed(name)
    for dep in _code_deps(name):
        unused = sorted(f for f in _covered(dep) - needed if not _exempt(f))
        assert not unused, f"{name}: dep {dep} covers modules the stage does not import: {unused}"
        assert not _exempt(dep), f"{name}: {dep} is plumbing (tests/test_dvc_deps.py PLUMBING); leave it out"


def test_plumbing_exists_and_init_files_left_out_hold_no_code() -> None:
    for rel in PLUMBING:
        assert (ROOT / rel).is_file(), rel
    for init in (ROOT / "stages").rglob("__init__.py"):
        rel = str(init.relative_to(ROOT))
        if not _docstring_only(init):  # code in a package __init__ runs with every import of the package
            assert any(rel in _needed(n) for n in STAGE_IDS) or not any(
                rel in files_of(closure(m)) for n in STAGE_IDS for m in _modules(STAGES[n]["cmd"])
            )


# -- the import graph itself -----------------------------------------------------------------


def test_graph_sees_lazy_imports_registry_strings_and_child_processes() -> None:
    registry = direct_imports("stages.lib.runners.registry")
    assert {"stages.lib.runners.torch_runner", "stages.lib.runners.trt_runner"} <= registry  # by name
    assert "stages.lib.runners.trt_modes" in direct_imports("stages.lib.runners.trt_runner")  # inside a method
    assert "stages.evaluate" in closure("stages.evaluate")  # per-backend children run the stage itself
    assert "stages.lib.trt.calibrator" in direct_imports("stages.build")  # imported inside run()
    assert "stages.lib" in direct_imports("stages.lib.data.prepared")  # a module's package runs first


def test_report_helpers_do_not_reach_training() -> None:
    """The cost of a change stays where it belongs: report code never retrains a model."""
    report_only = {
        "stages/lib/report/summary.py",
        "stages/lib/report/tables.py",
        "stages/lib/report/plot.py",
        "stages/lib/report/results.py",
    }
    assert report_only <= _needed("report")
    for name in ("prepare", "train", "export", "calibrate"):
        assert not report_only & _needed(name), name
