"""TensorRT-side code without a GPU: torch-free imports, Python 3.10, API feature detection,
fingerprints, the skipped build, and the separate-interpreter plumbing."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from stages.lib.core.errors import EngineError, EngineMismatchError
from stages.lib.trt import builder, common, fingerprint, inspect
from tests.conftest import ROOT, run_stage
from tests.import_graph import import_blocking

TRT_SIDE = [
    "stages.build",
    "stages.probe",
    "stages.evaluate",
    "stages.benchmark",
    "stages.predict",
    "stages.lib.data.inputs",
    "stages.lib.runners.trt_runner",
    "stages.lib.runners.trt_modes",
    "stages.lib.trt.engine",
    "stages.lib.trt.builder",
    "stages.lib.trt.calibrator",
    "stages.lib.trt.inspect",
    "stages.lib.trt.onnxfile",
    "stages.lib.trt.fingerprint",
    "stages.lib.core.cuda",
    "stages.lib.core.timing",
]
BLOCKED = ("torch", "torchvision", "onnx", "onnxruntime", "PIL", "pandas", "matplotlib", "hydra", "dvc")


def _module_file(mod: str) -> Path:
    return ROOT / (mod.replace(".", "/") + ".py")


def test_trt_side_modules_import_without_torch_or_onnx() -> None:
    proc = import_blocking(TRT_SIDE, BLOCKED)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


@pytest.mark.parametrize(
    "mod",
    TRT_SIDE
    + [
        "stages.lib.core.io",
        "stages.lib.core.params",
        "stages.lib.data.prepared",
        "stages.lib.runners.base",
        "stages.lib.core.interpreter",
    ]
    + ["stages.lib.core.cli", "stages.lib.core.gpus"],
)
def test_trt_side_modules_parse_as_python_310(mod: str) -> None:
    source = _module_file(mod).read_text()
    ast.parse(source, feature_version=(3, 10))  # raises SyntaxError on 3.11+ syntax


def _python310() -> str | None:
    for cand in (shutil.which("python3.10"), "/root/.pyenv/versions/3.10.13/bin/python3.10"):
        if cand and os.path.exists(cand):
            ok = subprocess.run([cand, "-c", "import numpy, yaml"], capture_output=True).returncode == 0
            if ok:
                return cand
    return None


@pytest.mark.skipif(_python310() is None, reason="no Python 3.10 with numpy and pyyaml here")
def test_trt_side_modules_import_under_python_310() -> None:
    code = f"import importlib\nfor m in {TRT_SIDE!r}: importlib.import_module(m)\nprint('ok')"
    proc = subprocess.run([_python310(), "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


# -- API feature detection with stand-ins for three TensorRT generations -------------------


def _fake_trt(version: str) -> SimpleNamespace:
    flags = {"8.6": ["EXPLICIT_BATCH"], "10": ["EXPLICIT_BATCH", "STRONGLY_TYPED"], "11": ["STRONGLY_TYPED"]}
    creation = SimpleNamespace(**{n: i for i, n in enumerate(flags[version])})
    builder_flags = SimpleNamespace(FP16=0, INT8=1, TF32=2) if version != "11" else SimpleNamespace(TF32=2)
    trt = SimpleNamespace(
        __version__=version,
        NetworkDefinitionCreationFlag=creation,
        BuilderFlag=builder_flags,
        TacticSource=SimpleNamespace(CUBLAS=0, CUBLAS_LT=1, CUDNN=2, EDGE_MASK_CONVOLUTIONS=3, JIT_CONVOLUTIONS=4),
        float16="half",
    )
    if version != "11":
        trt.IInt8EntropyCalibrator2 = object
    return trt


def test_network_flags_follow_the_api_generation() -> None:
    assert common.network_flags(_fake_trt("8.6"), strongly_typed=False) == 1  # EXPLICIT_BATCH bit 0
    assert common.network_flags(_fake_trt("10"), strongly_typed=True) == (1 << 0) | (1 << 1)
    assert common.network_flags(_fake_trt("11"), strongly_typed=True) == 1 << 0  # STRONGLY_TYPED only
    assert common.network_flags(_fake_trt("11"), strongly_typed=False) == 0
    assert not common.has_strongly_typed(_fake_trt("8.6"))
    assert common.has_strongly_typed(_fake_trt("10"))
    assert common.has_implicit_calibrator(_fake_trt("8.6"))
    assert not common.has_implicit_calibrator(_fake_trt("11"))


class _Config:
    def __init__(self) -> None:
        self.flags: list[int] = []

    def set_flag(self, flag: int) -> None:
        self.flags.append(flag)

    def get_tactic_sources(self) -> int:
        return 0b11111


def test_precision_flags_weakly_typed_int8_sets_fp16_and_int8() -> None:
    trt, cfg = _fake_trt("8.6"), _Config()
    mode = builder._set_precision(trt, cfg, "int8", strongly=False)
    assert sorted(cfg.flags) == [trt.BuilderFlag.FP16, trt.BuilderFlag.INT8]
    assert "INT8" in mode


def test_precision_flags_strongly_typed_sets_none() -> None:
    cfg = _Config()
    mode = builder._set_precision(_fake_trt("10"), cfg, "int8", strongly=True)
    assert cfg.flags == []
    assert "strongly typed" in mode


def test_weakly_typed_reduced_precision_without_flags_is_a_clear_error() -> None:
    with pytest.raises(EngineError, match="strongly_typed=auto"):
        builder._set_precision(_fake_trt("11"), _Config(), "fp16", strongly=False)


def test_tactic_sources_drop_cublas_and_cudnn_only() -> None:
    sources = builder._tactic_sources(_fake_trt("8.6"), _Config())
    assert sources == (1 << 3) | (1 << 4)


# -- engine inspector and fingerprints -------------------------------------------------------


def test_parse_layers_reads_precision_from_output_format() -> None:
    info = {
        "Layers": [
            {
                "Name": "conv1 + relu",
                "LayerType": "CaskConvolution",
                "TacticName": "sm90_xmma",
                "Outputs": [{"Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}],
            },
            {
                "Name": "fc",
                "LayerType": "CaskGemm",
                "Outputs": [{"Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}],
            },
            {"Name": "out", "LayerType": "Reformat", "Outputs": [{"Format/Datatype": "Row major linear FP32"}]},
            "names-only-layer",
        ]
    }
    rows = inspect.parse_layers(info)
    assert [r["precision"] for r in rows] == ["INT8", "FP16", "FP32", "unknown"]
    assert rows[0]["type"] == "CaskConvolution" and rows[0]["tactic"] == "sm90_xmma"


def test_parse_layers_maps_abbreviated_types_and_quantized_inputs() -> None:
    """Without an execution context the inspector abbreviates types ("Float", "Half", "Int8");
    a quantized conv reads INT8 (inputs or weights) but may write FP16, and counts as INT8."""

    def fmt(*types: str) -> list[dict[str, str]]:
        return [{"Format/Datatype": t} for t in types]

    info = {
        "Layers": [
            {"Name": "conv1 + relu", "LayerType": "CaskConvolution", "Inputs": fmt("Int8"), "Outputs": fmt("Half")},
            {
                "Name": "conv2 + add",
                "LayerType": "CaskConvolution",
                "Inputs": fmt("Int8", "Int8"),
                "Outputs": fmt("Float"),
            },
            {
                "Name": "conv3",
                "LayerType": "CaskConvolution",
                "Weights": {"Type": "Int8", "Count": 9},
                "Inputs": fmt("Half"),
                "Outputs": fmt("Half"),
            },
            {"Name": "add (mixed)", "LayerType": "ElementWise", "Inputs": fmt("Int8", "Half"), "Outputs": fmt("Half")},
            {
                "Name": "fc",
                "LayerType": "CaskGemm",
                "Weights": {"Type": "Half", "Count": 5120},
                "Inputs": fmt("Half"),
                "Outputs": fmt("Half"),
            },
            {"Name": "out", "LayerType": "Reformat", "Inputs": fmt("Half"), "Outputs": fmt("Float")},
        ]
    }
    rows = inspect.parse_layers(info)
    assert [(r["name"], r["precision"]) for r in rows] == [
        ("conv1 + relu", "INT8"),
        ("conv2 + add", "INT8"),
        ("conv3", "INT8"),
        ("add (mixed)", "FP16"),
        ("fc", "FP16"),
        ("out", "FP32"),
    ]
    abbreviated = [inspect.precision_of(t) for t in ("Float", "Half", "Int8", "")]
    assert abbreviated == ["FP32", "FP16", "INT8", "unknown"]


def test_parse_layers_without_formats_uses_weights_then_tactic_names() -> None:
    """Real inspector output of 8.6 on the H100 (two-profile engines, no context): every
    format reads "N/A due to dynamic shapes", so weights and kernel names must decide."""
    engines = json.loads((Path(__file__).parent / "data" / "inspector_trt86_h100.json").read_text())["engines"]
    by_engine = {p: {(r["type"], r["precision"]) for r in inspect.parse_layers(info)} for p, info in engines.items()}
    assert all(
        layer["Outputs"][0]["Format/Datatype"] == "N/A due to dynamic shapes"
        for info in engines.values()
        for layer in info["Layers"]
    )
    assert ("CaskConvolution", "TF32") in by_engine["fp32"]  # f32f32_tf32f32 kernels
    assert ("CaskConvolution", "FP16") in by_engine["fp16"]
    assert ("CaskConvolution", "INT8") in by_engine["int8"]
    assert ("CaskGemmConvolution", "FP32") in by_engine["int8"]  # the fc stays unquantized
    assert ("CaskPooling", "FP32") in by_engine["int8"]  # ..._kFLOAT_... pooling kernel
    assert ("Reformat", "unknown") in by_engine["int8"]  # nothing says: no guess
    assert not any(prec == "INT8" for _, prec in by_engine["fp32"] | by_engine["fp16"])


class _Inspector:
    def __init__(self, engine: _Engine) -> None:
        self.engine, self.execution_context = engine, None

    def get_engine_information(self, _fmt: object) -> str:
        self.engine.inspected_with.append(self.execution_context)
        if self.execution_context is not None and self.engine.context_breaks:
            return ""  # what 8.6 returns after its internal "slot" error
        return json.dumps({"Layers": [{"Name": "conv", "Weights": {"Type": "Int8"}}]})


class _Context:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[int, ...]] = {}

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.shapes[name] = shape
        return True


class _Engine:
    num_io_tensors = 2

    def __init__(self, profiles: int, context_breaks: bool = False) -> None:
        self.num_optimization_profiles, self.context_breaks = profiles, context_breaks
        self.inspected_with: list[object] = []
        self.contexts: list[_Context] = []

    def create_engine_inspector(self) -> _Inspector:
        return _Inspector(self)

    def create_execution_context(self) -> _Context:
        self.contexts.append(_Context())
        return self.contexts[-1]

    def get_tensor_name(self, i: int) -> str:
        return ["input", "logits"][i]

    def get_tensor_mode(self, name: str) -> str:
        return "IN" if name == "input" else "OUT"

    def get_tensor_profile_shape(self, name: str, k: int) -> list[tuple[int, ...]]:
        return [(1, 3, 32, 32), (8, 3, 32, 32), (16, 3, 32, 32)]


def _inspector_trt(engine: _Engine) -> SimpleNamespace:
    runtime = SimpleNamespace(deserialize_cuda_engine=lambda _b: engine)
    return SimpleNamespace(
        Runtime=lambda _logger: runtime,
        TensorIOMode=SimpleNamespace(INPUT="IN"),
        LayerInformationFormat=SimpleNamespace(JSON="json"),
    )


@pytest.mark.parametrize(
    "profiles,breaks,contexts_used",
    [(1, False, ["context"]), (1, True, ["context", None]), (2, False, [None])],
)
def test_engine_information_attaches_a_shaped_context_only_to_single_profile_engines(
    profiles: int, breaks: bool, contexts_used: list[str | None]
) -> None:
    engine = _Engine(profiles, breaks)
    info = inspect.engine_information(_inspector_trt(engine), None, b"engine")
    assert info["Layers"][0]["Name"] == "conv"
    assert [None if c is None else "context" for c in engine.inspected_with] == contexts_used
    if profiles == 1:  # the context got the opt shape of profile 0 before inspection
        assert engine.contexts[0].shapes == {"input": (8, 3, 32, 32)}
    else:
        assert engine.contexts == []


def test_fingerprint_mismatch_names_both_sides_and_the_fix() -> None:
    built = {"gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "tensorrt": "8.6.0", "driver": "13.0"}
    fingerprint.check_compatible("e.engine", built, dict(built, driver="13.1"))  # driver alone: fine
    with pytest.raises(EngineMismatchError) as exc:
        fingerprint.check_compatible("e.engine", built, dict(built, gpu="NVIDIA A100", compute_capability="8.0"))
    msg = str(exc.value)
    assert "H100" in msg and "A100" in msg and "dvc repro" in msg and "e.engine" in msg
    with pytest.raises(EngineMismatchError, match="TensorRT 10.3"):
        fingerprint.check_compatible("e.engine", built, dict(built, tensorrt="10.3.0"))


def test_probe_without_tensorrt_or_gpu_says_why(tmp_path: Path) -> None:
    proc = run_stage("probe", ["--out", str(tmp_path / "fp.json")], ROOT, env={"TRT_PYTHON": ""})
    fp = json.loads((tmp_path / "fp.json").read_text())
    if fp["available"]:
        pytest.skip("this machine has TensorRT and a GPU")
    assert fp["reason"] and fp["gpu"] is None
    assert "skipped" in proc.stderr


def test_build_without_tensorrt_records_skip_and_removes_stale_engine(project: Path) -> None:
    out = project / "engines" / "fp32"
    out.mkdir(parents=True)
    (out / "model.engine").write_bytes(b"stale")
    (out / "timing.cache").write_bytes(b"keep me")
    fp = project / "fp.json"
    fp.write_text(json.dumps({"available": False, "reason": "no CUDA GPU visible", "gpu": None}))
    run_stage(
        "build",
        [
            "--precision",
            "fp32",
            "--onnx",
            "missing.onnx",
            "--fingerprint",
            str(fp),
            "--out-dir",
            str(out),
            "--report",
            str(project / "build.json"),
        ],
        project,
        env={"TRT_PYTHON": ""},
    )
    record = json.loads((out / "build.json").read_text())
    assert record["status"] == "skipped" and record["reason"] == "no CUDA GPU visible"
    assert not (out / "model.engine").exists()
    assert (out / "timing.cache").read_bytes() == b"keep me"
    assert json.loads((project / "build.json").read_text())["status"] == "skipped"


def test_trt_python_runs_tensorrt_stages_in_that_interpreter(project: Path, tmp_path: Path) -> None:
    """With TRT_PYTHON set, probe and build re-run themselves in it (here a recording stub)."""
    log = tmp_path / "calls.txt"
    stub = tmp_path / "trt-python"
    stub.write_text(f'#!/bin/sh\necho "$PIPELINE_CHILD $*" >> {log}\nexit 0\n')
    stub.chmod(0o755)
    run_stage("probe", ["--out", "fp.json"], project, env={"TRT_PYTHON": str(stub)})
    run_stage(
        "build",
        ["--precision", "int8", "--onnx", "a.onnx", "--fingerprint", "fp.json", "--out-dir", "e", "--report", "r.json"],
        project,
        env={"TRT_PYTHON": str(stub)},
    )
    calls = log.read_text().splitlines()
    assert calls[0] == "trt -m stages.probe --out fp.json"
    assert calls[1].startswith("trt -m stages.build --precision int8 --onnx a.onnx")


def test_failing_trt_interpreter_fails_the_stage_with_its_exit_code(project: Path, tmp_path: Path) -> None:
    stub = tmp_path / "trt-python"
    stub.write_text("#!/bin/sh\necho 'error: build int8: something specific' >&2\nexit 3\n")
    stub.chmod(0o755)
    proc = run_stage("probe", ["--out", "fp.json"], project, check=False, env={"TRT_PYTHON": str(stub)})
    assert proc.returncode == 3
    assert proc.stderr.strip().splitlines() == ["error: build int8: something specific"]


def test_profile_selection_prefers_closest_opt_and_rejects_out_of_range() -> None:
    from stages.lib.trt.engine import pick_profile

    profiles, path = [(1, 1, 1), (2, 256, 1024)], Path("e/model.engine")
    assert pick_profile(profiles, 1, path) == 0
    assert pick_profile(profiles, 64, path) == 1
    assert pick_profile([(1, 1, 64), (2, 256, 1024)], 32, path) == 0  # the closer opt wins
    with pytest.raises(EngineError, match=r"batch size 2048 is outside .*e/model.engine .*\[1..1\], \[2..1024\]"):
        pick_profile(profiles, 2048, path)


@pytest.mark.parametrize(
    "n,profiles,plan",
    [
        (128, [(1, 1, 1), (2, 16, 32)], [(0, 32, 32), (32, 64, 32), (64, 96, 32), (96, 128, 32)]),
        (70, [(1, 1, 1), (2, 16, 32)], [(0, 32, 32), (32, 64, 32), (64, 70, 6)]),
        (1, [(1, 1, 1), (2, 256, 1024)], [(0, 1, 1)]),
        (10, [(4, 8, 8)], [(0, 8, 8), (8, 10, 4)]),  # remainder 2 runs padded to 4
        (5, [(1, 1, 2), (8, 8, 16)], [(0, 5, 8)]),  # 5 falls between the profiles
        (0, [(1, 1, 8)], []),
    ],
)
def test_trt_runner_splits_and_pads_batches_to_fit_the_profiles(
    n: int, profiles: list[tuple[int, int, int]], plan: list[tuple[int, int, int]]
) -> None:
    from stages.lib.runners.trt_runner import plan_batches

    assert plan_batches(n, profiles) == plan
    for _start, _stop, run in plan:
        assert any(lo <= run <= hi for lo, _, hi in profiles)


def test_trt_runner_refuses_an_engine_without_profiles() -> None:
    from stages.lib.runners.trt_runner import plan_batches

    with pytest.raises(EngineError, match="no optimization profiles"):
        plan_batches(4, [])
