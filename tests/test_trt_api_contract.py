"""The TensorRT API contract: TensorRT-side code uses only names that TensorRT 8.6, 10.x and 11.x
all have, unless stages/lib/trt/common.py feature-detects them. The surfaces are committed
(tests/data/trt_api/, made by tools/trt-api/make_surface.py); nothing is downloaded here."""

from __future__ import annotations

import textwrap

import pytest

from tests import trt_contract as contract

SUPPORTED = {"8.6.0", "10.16.1.11", "11.4.0.106"}


@pytest.fixture(scope="module")
def surfaces() -> contract.Surfaces:
    return contract.load_surfaces()


def _check(surfaces: contract.Surfaces, code: str, feature_module: bool = False) -> list[str]:
    return contract.check_source(textwrap.dedent(code), "snippet.py", surfaces, feature_module)


def test_the_committed_surfaces_are_the_supported_versions(surfaces: contract.Surfaces) -> None:
    assert set(surfaces) == SUPPORTED
    for version, surface in surfaces.items():
        assert surface["__version__"] == "str"
        assert "ICudaEngine" in surface and "ICudaEngine.__members__" not in surface, version
        assert surface["DataType.__members__"], version  # enums carry their members
    assert "device_memory_size" in surfaces["10.16.1.11"]["ICudaEngine"]  # type: ignore[operator]
    assert "device_memory_size" not in surfaces["11.4.0.106"]["ICudaEngine"]  # type: ignore[operator]
    assert "IInt8EntropyCalibrator2" in surfaces["8.6.0"] and "IInt8EntropyCalibrator2" not in surfaces["11.4.0.106"]


def test_tensorrt_side_code_keeps_the_contract(surfaces: contract.Surfaces) -> None:
    modules = {p.relative_to(contract.ROOT).as_posix() for p in contract.tensorrt_side_modules()}
    assert {
        "stages/build.py",
        "stages/probe.py",
        "stages/lib/runners/trt_runner.py",
        contract.FEATURE_MODULE,
    } <= modules
    assert contract.check_project(surfaces) == []


def test_checker_flags_device_memory_size_on_an_engine_for_11x(surfaces: contract.Surfaces) -> None:
    """What describe() did: an ICudaEngine attribute that 11.x removed, reached through
    ``self.engine`` and through a plain ``engine`` variable."""
    code = """
        class R:
            def describe(self):
                return int(self.engine.device_memory_size)

        def size(runtime, plan):
            engine = runtime.deserialize_cuda_engine(plan)
            return engine.device_memory_size
    """
    problems = _check(surfaces, code)
    assert len(problems) == 2
    assert all("ICudaEngine.device_memory_size is missing in TensorRT 11.4.0.106" in p for p in problems)
    assert "10.16" not in problems[0] and "8.6" not in problems[0]


def test_checker_accepts_it_behind_a_feature_check_in_common_only(surfaces: contract.Surfaces) -> None:
    guarded = """
        def device_memory_size(engine):
            if hasattr(engine, "device_memory_size_v2"):
                return engine.device_memory_size_v2
            return getattr(engine, "device_memory_size", 0)
    """
    assert _check(surfaces, guarded, feature_module=True) == []
    elsewhere = _check(surfaces, guarded, feature_module=False)
    assert len(elsewhere) == 3  # the hasattr, the 8.6-only v2-less read and the getattr
    assert any("belongs in stages/lib/trt/common.py" in p for p in elsewhere)
    unguarded = "def f(engine):\n    return engine.device_memory_size\n"
    assert len(_check(surfaces, unguarded, feature_module=True)) == 1  # common.py must detect it too


def test_checker_resolves_module_chains_subclasses_and_returned_objects(surfaces: contract.Surfaces) -> None:
    code = """
        import tensorrt as trt

        class Calib(trt.IInt8EntropyCalibrator2):
            def get_batch(self, names):
                return None

        class Prof(trt.IProfiler):
            def report_layer_times(self, name, ms):
                pass

        def build(builder, config):
            config.set_flag(trt.BuilderFlag.INT8)
            network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
            return network.get_input(0).name, trt.float16, getattr(trt.TacticSource, "CUDNN", None)
    """
    problems = "\n".join(_check(surfaces, code))
    assert "tensorrt.IInt8EntropyCalibrator2 is missing in TensorRT 11.4.0.106" in problems
    assert "IProfiler.report_layer_times is missing in TensorRT 10.16.1.11, 11.4.0.106, 8.6.0" in problems
    assert "BuilderFlag.INT8 is missing in TensorRT 11.4.0.106" in problems
    assert "NetworkDefinitionCreationFlag.EXPLICIT_BATCH is missing in TensorRT 11.4.0.106" in problems
    assert "getattr(..., 'CUDNN') belongs in stages/lib/trt/common.py" in problems
    assert "ITensor.name" not in problems and "float16" not in problems and "get_batch" not in problems


def test_checker_rejects_receiver_names_the_map_does_not_know(surfaces: contract.Surfaces) -> None:
    """A TensorRT object in a variable the map does not name would escape the check."""
    code = """
        def f(runtime, plan, ctx, name, cfg, builder):
            eng = runtime.deserialize_cuda_engine(plan)
            cfgx: Any = builder.create_builder_config()
            calib: Any = builder.create_optimization_profile()
            context = eng.create_execution_context()
            engine = runtime.get_plugin_registry()
            config = ctx.get_tensor_shape(name)
            return getattr(cfg, name, None), getattr(ctx, name, None)
    """
    problems = "\n".join(_check(surfaces, code))
    assert "'eng' holds a tensorrt.ICudaEngine: map it to 'ICudaEngine' in RECEIVERS" in problems
    assert "'cfgx' holds a tensorrt.IBuilderConfig: map it to 'IBuilderConfig'" in problems
    assert "'calib'" not in problems  # annotated Any and mapped to IOptimizationProfile
    assert "Runtime.get_plugin_registry() is assigned to 'engine': add what it returns to RETURNS" in problems
    assert "IExecutionContext.get_tensor_shape() is assigned to 'config'" in problems
    assert "getattr() on a TensorRT object with a computed name" in problems
    assert "'context'" not in problems  # eng is unknown, so what it returns is not resolved


def test_receiver_map_names_classes_every_supported_version_has(surfaces: contract.Surfaces) -> None:
    for cls in set(contract.RECEIVERS.values()) | {c for c in contract.RETURNS.values() if c}:
        assert all(isinstance(s.get(cls), list) for s in surfaces.values()), cls
    for (cls, attr), _ in contract.RETURNS.items():
        assert all(attr in s[cls] for s in surfaces.values()), f"{cls}.{attr}"  # type: ignore[operator]


def test_a_receiver_name_the_module_types_as_its_own_class_is_not_tensorrts(surfaces: contract.Surfaces) -> None:
    """The engine wrapper (stages/lib/trt/engine.py) is held as ``self.engine: Engine``; an
    unannotated ``engine`` stays an ICudaEngine."""
    code = """
        class Runner:
            def __init__(self, path) -> None:
                self.engine: Engine | None = Engine.load(path)

            def run(self, batch):
                return self.engine.execute(batch)

        def size(engine):
            return engine.execute(1)
    """
    problems = _check(surfaces, code)
    assert problems == [problems[0]] and "snippet.py:10: ICudaEngine.execute is missing" in problems[0]
