"""A static check of TensorRT-side code against the API surfaces of the supported TensorRT versions.

The surfaces (tests/data/trt_api/, made by tools/trt-api/make_surface.py) list every name of
the ``tensorrt`` module and every attribute of its classes. The checker walks a module's AST and
resolves what each attribute access is made on:

- ``trt`` (or ``<x>.trt``) is the module: ``trt.X`` must be a module name, ``trt.X.Y`` an
  attribute of class ``X``;
- a receiver named in RECEIVERS (``engine``, ``self.engine``, ``slot.context``, ...) holds an
  instance of that TensorRT class; RETURNS gives the class (or a plain value) that a method
  call or attribute read on one yields, so chains like ``network.get_input(0).name`` resolve.

A receiver name that the module annotates with a type other than ``Any`` (``self.engine:
Engine``) holds one of the project's own objects there and is not checked.

A name that a supported version lacks is a violation unless the module is
stages/lib/trt/common.py and that name appears there in ``hasattr(x, "NAME")`` or
``getattr(x, "NAME", default)`` (feature detection lives in one place). Elsewhere ``hasattr`` or
``getattr`` of such a name is a violation too, as is ``getattr`` with a name the checker cannot
read. Methods that a subclass of a TensorRT class defines must exist in that class.

So that the receiver map cannot rot, every assignment of a TensorRT object (a value whose type
the checker resolves) must go to a name the map gives that same class, and every method whose
result is assigned must be in RETURNS. A TensorRT object reached only through a function
parameter of another name is not seen: name such parameters as the map does.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SURFACE_DIR = ROOT / "tests" / "data" / "trt_api"
FEATURE_MODULE = "stages/lib/trt/common.py"

# Receiver name (a variable, or the last attribute: self.engine, slot.context) -> TensorRT class.
RECEIVERS = {
    "builder": "Builder",
    "network": "INetworkDefinition",
    "tensor": "ITensor",
    "parser": "OnnxParser",
    "config": "IBuilderConfig",
    "profile": "IOptimizationProfile",
    "calib": "IOptimizationProfile",
    "cache": "ITimingCache",
    "serialized": "IHostMemory",
    "runtime": "Runtime",
    "engine": "ICudaEngine",
    "context": "IExecutionContext",
    "ctx": "IExecutionContext",
    "inspector": "EngineInspector",
    "logger": "ILogger",
}
MODULE_NAMES = {"trt"}  # names that hold the tensorrt module itself

# (class, method or attribute) -> the TensorRT class it yields, or None for a plain value.
RETURNS: dict[tuple[str, str], str | None] = {
    ("Builder", "create_network"): "INetworkDefinition",
    ("Builder", "create_builder_config"): "IBuilderConfig",
    ("Builder", "create_optimization_profile"): "IOptimizationProfile",
    ("Builder", "build_serialized_network"): "IHostMemory",
    ("IBuilderConfig", "create_timing_cache"): "ITimingCache",
    ("IBuilderConfig", "get_timing_cache"): "ITimingCache",
    ("INetworkDefinition", "get_input"): "ITensor",
    ("INetworkDefinition", "get_output"): "ITensor",
    ("ITensor", "name"): None,
    ("Runtime", "deserialize_cuda_engine"): "ICudaEngine",
    ("ICudaEngine", "create_execution_context"): "IExecutionContext",
    ("ICudaEngine", "create_engine_inspector"): "EngineInspector",
    ("ICudaEngine", "get_tensor_name"): None,
    ("EngineInspector", "get_engine_information"): None,
}

Surfaces = dict[str, dict[str, object]]


def load_surfaces(folder: Path = SURFACE_DIR) -> Surfaces:
    """version -> surface, from tensorrt-<version>.json files."""
    return {p.stem.removeprefix("tensorrt-"): json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


@dataclass(frozen=True)
class T:
    """What an expression holds: the module, a TensorRT class object, or an instance of one."""

    kind: str  # "module" | "class" | "instance" | "plain"
    name: str = ""


PLAIN = T("plain")


def _attrs(surface: dict[str, object], t: T) -> set[str] | None:
    """Names reachable on ``t`` in one version; None when ``t``'s class is absent there."""
    if t.kind == "module":
        return set(surface)
    entry = surface.get(t.name)
    return set(entry) if isinstance(entry, list) else None


class Checker(ast.NodeVisitor):
    def __init__(self, surfaces: Surfaces, path: str, feature_module: bool) -> None:
        self.surfaces, self.path, self.feature_module = surfaces, path, feature_module
        self.detected: set[str] = set()
        self.declared_vars: set[str] = set()  # the module types these as its own classes
        self.declared_attrs: set[str] = set()
        self.problems: list[str] = []

    # -- types -----------------------------------------------------------------------------

    def type_of(self, node: ast.AST) -> T | None:
        """What ``node`` holds if it is a TensorRT thing; None when unknown or not TensorRT."""
        if isinstance(node, ast.Name):
            return None if node.id in self.declared_vars else self._named(node.id)
        if isinstance(node, ast.IfExp):
            return self.type_of(node.body) or self.type_of(node.orelse)
        if isinstance(node, ast.Attribute):
            base = self.type_of(node.value)
            if base is None:
                return None if node.attr in self.declared_attrs else self._named(node.attr)
            return self._member(base, node.attr)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            base = self.type_of(node.func.value)
            if base is None:
                return None
            if base.kind == "module" and self._is_class(node.func.attr):
                return T("instance", node.func.attr)  # trt.Runtime(logger)
            if base.kind == "instance":
                return self._returns(base.name, node.func.attr)
            return PLAIN
        return None

    def _named(self, name: str) -> T | None:
        if name in MODULE_NAMES:
            return T("module")
        return T("instance", RECEIVERS[name]) if name in RECEIVERS else None

    def _member(self, base: T, attr: str) -> T:
        if base.kind == "module":
            return T("class", attr) if self._is_class(attr) else PLAIN
        if base.kind == "instance":
            return self._returns(base.name, attr)
        return PLAIN

    def _returns(self, cls: str, attr: str) -> T:
        if (cls, attr) not in RETURNS:
            return T("unknown", f"{cls}.{attr}")
        result = RETURNS[(cls, attr)]
        return T("instance", result) if result else PLAIN

    def _is_class(self, name: str) -> bool:
        return any(isinstance(s.get(name), list) for s in self.surfaces.values())

    # -- checks ----------------------------------------------------------------------------

    def missing(self, t: T, name: str) -> list[str]:
        """Versions whose ``t`` lacks ``name``."""
        if t.kind not in ("module", "class", "instance"):
            return []
        return [v for v, s in self.surfaces.items() if (a := _attrs(s, t)) is not None and name not in a]

    def report(self, node: ast.AST, text: str) -> None:
        self.problems.append(f"{self.path}:{getattr(node, 'lineno', 0)}: {text}")

    def _use(self, node: ast.AST, t: T, name: str) -> None:
        versions = self.missing(t, name)
        if not versions or (self.feature_module and name in self.detected):
            return
        owner = "tensorrt" if t.kind == "module" else t.name
        self.report(
            node,
            f"{owner}.{name} is missing in TensorRT {', '.join(versions)}: feature-detect it in {FEATURE_MODULE}",
        )

    def visit_Attribute(self, node: ast.Attribute) -> None:
        t = self.type_of(node.value)
        if t is not None:
            self._use(node, t, node.attr)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Name) and node.func.id in ("hasattr", "getattr") and len(node.args) >= 2:
            self._feature_check(node, node.func.id)
        self.generic_visit(node)

    def _feature_check(self, node: ast.Call, fn: str) -> None:
        t = self.type_of(node.args[0])
        if t is None or t.kind == "plain":
            return
        name = node.args[1]
        if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
            self.report(node, f"{fn}() on a TensorRT object with a computed name: use a constant name")
            return
        detects = fn == "hasattr" or len(node.args) == 3
        if self.feature_module and detects:
            return
        if detects and self.missing(t, name.value):
            self.report(node, f"{fn}(..., {name.value!r}) belongs in {FEATURE_MODULE}")
        elif not detects:
            self._use(node, t, name.value)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for base in node.bases:
            t = self.type_of(base)
            if t is None or t.kind != "class":
                continue
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and not item.name.startswith("__"):
                    self._use(item, T("instance", t.name), item.name)
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        if len(node.targets) == 1:
            self._assigned(node, node.targets[0], node.value)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None and _is_any(node.annotation):
            self._assigned(node, node.target, node.value)
        self.generic_visit(node)

    def _assigned(self, node: ast.AST, target: ast.AST, value: ast.AST) -> None:
        """A TensorRT object must land in a name the receiver map gives the same class."""
        if isinstance(target, ast.Name):
            name = target.id
        elif isinstance(target, ast.Attribute) and self.type_of(target.value) is None:
            name = target.attr  # self.engine = ..., not a TensorRT object's own property
        else:
            return
        t = self.type_of(value)
        if t is None:
            return
        if t.kind == "unknown":
            self.report(node, f"{t.name}() is assigned to {name!r}: add what it returns to RETURNS in {__name__}")
        elif t.kind == "module" and name not in MODULE_NAMES:
            self.report(node, f"the tensorrt module is assigned to {name!r}: add it to MODULE_NAMES")
        elif t.kind == "instance" and RECEIVERS.get(name) != t.name:
            self.report(node, f"{name!r} holds a tensorrt.{t.name}: map it to {t.name!r} in RECEIVERS")
        elif t.kind == "plain" and name in RECEIVERS:
            self.report(node, f"{name!r} is a TensorRT receiver name but gets a plain value here: rename it")


def detected_names(tree: ast.AST) -> set[str]:
    """Names a module feature-detects: hasattr(x, "N") and getattr(x, "N", default)."""
    names = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        fn, args = node.func.id, node.args
        detects = (fn == "hasattr" and len(args) == 2) or (fn == "getattr" and len(args) == 3)
        if detects and isinstance(args[1], ast.Constant) and isinstance(args[1].value, str):
            names.add(args[1].value)
    return names


def _is_any(annotation: ast.AST) -> bool:
    return (isinstance(annotation, ast.Name) and annotation.id == "Any") or (
        isinstance(annotation, ast.Attribute) and annotation.attr == "Any"
    )


def declared_names(tree: ast.AST) -> tuple[set[str], set[str]]:
    """Variables and attributes the module annotates with a type other than Any (``def
    f(engine: Engine)``, ``self.engine: Engine | None``): its own objects, not TensorRT's,
    whatever the receiver map says. TensorRT objects are annotated Any (tensorrt ships no types)."""
    variables, attributes = set(), set()
    fields = {id(item) for node in ast.walk(tree) if isinstance(node, ast.ClassDef) for item in node.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign) and not _is_any(node.annotation):
            if isinstance(node.target, ast.Attribute):
                attributes.add(node.target.attr)
            elif isinstance(node.target, ast.Name):  # a class-body one is a (dataclass) field
                (attributes if id(node) in fields else variables).add(node.target.id)
        elif isinstance(node, ast.arg) and node.annotation is not None and not _is_any(node.annotation):
            variables.add(node.arg)
    return variables, attributes


def check_source(source: str, path: str, surfaces: Surfaces, feature_module: bool = False) -> list[str]:
    """Every contract violation in ``source``, as 'path:line: what and how to fix it'."""
    tree = ast.parse(source)
    checker = Checker(surfaces, path, feature_module)
    checker.declared_vars, checker.declared_attrs = declared_names(tree)
    if feature_module:
        checker.detected = detected_names(tree)
    checker.visit(tree)
    return checker.problems


def _imports_tensorrt(path: Path) -> bool:
    """Whether ``path`` imports tensorrt or anything from stages.lib.trt (relative imports too)."""
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "tensorrt" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join(base + (node.module.split(".") if node.module else []))
            names = [f"{module}.{a.name}" for a in node.names]
            if any(n == "stages.lib.trt" or n.startswith(("stages.lib.trt.", "tensorrt")) for n in [module, *names]):
                return True
    return False


def tensorrt_side_modules() -> list[Path]:
    """stages/lib/trt/* and every stages module that imports TensorRT or stages.lib.trt."""
    files = sorted((ROOT / "stages").rglob("*.py"))
    return [p for p in files if "lib/trt/" in p.as_posix() or _imports_tensorrt(p)]


def check_project(surfaces: Surfaces) -> list[str]:
    problems = []
    for path in tensorrt_side_modules():
        rel = path.relative_to(ROOT).as_posix()
        problems += check_source(path.read_text(), rel, surfaces, feature_module=rel == FEATURE_MODULE)
    return problems
