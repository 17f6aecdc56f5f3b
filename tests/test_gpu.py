"""GPU and TensorRT tests: run on the GPU host (`make test-gpu`, with TRT_PYTHON where
TensorRT lives in its own interpreter); skipped automatically elsewhere."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY, run_stage, write_params

M = "artifacts/resnet18_cifar"
GPU_TINY = [o for o in TINY if not o.startswith("profile=")] + [
    "profile=gpu",
    "build.profiles=[{min:1,opt:1,max:1},{min:2,opt:16,max:32}]",
    "build.opt_level=1",
    "bench.batch_sizes=[1,16]",
    "bench.compile_batch_sizes=[16]",
    "bench.streams=2",
]


@pytest.fixture(scope="module")
def gpu_project(prepared_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gpu")
    shutil.copytree(prepared_tiny, root, dirs_exist_ok=True)
    write_params(root, GPU_TINY)
    return root


_BUILD_FAILED: dict[str, str] = {}  # precision -> error: a failed build is not retried per test


def _build(root: Path, precision: str) -> dict:
    if precision in _BUILD_FAILED:
        pytest.fail(f"the {precision} build failed earlier in this test run:\n{_BUILD_FAILED[precision]}")
    run_stage("probe", ["--out", "artifacts/fingerprint.json"], root)
    try:
        _run_build(root, precision)
    except AssertionError as exc:
        _BUILD_FAILED[precision] = str(exc)[-2000:]
        raise
    return json.loads((root / M / "engines" / precision / "build.json").read_text())


def _built(root: Path, precision: str) -> dict:
    """The engine's build report, building it only if no earlier test did."""
    if not (root / M / "engines" / precision / "model.engine").exists():
        return _build(root, precision)
    return json.loads((root / M / "engines" / precision / "build.json").read_text())


def _run_build(root: Path, precision: str) -> None:
    run_stage(
        "build",
        [
            "--precision",
            precision,
            "--onnx",
            f"{M}/onnx/{precision}.onnx",
            "--fingerprint",
            "artifacts/fingerprint.json",
            "--out-dir",
            f"{M}/engines/{precision}",
            "--report",
            f"reports/build_{precision}.json",
        ],
        root,
    )


def _evaluate_inputs(precision: str, engine_dir: str | None = None) -> list[str]:
    """The evaluate stage's precision and input arguments, for the parent and a child run."""
    return [
        "--precision",
        precision,
        "--test",
        "data/prepared/test.npz",
        "--reference",
        f"{M}/reference_logits.npy",
        "--checkpoint",
        f"{M}/checkpoint.pt",
        "--onnx",
        f"{M}/onnx/{precision}.onnx",
        "--engine-dir",
        engine_dir or f"{M}/engines/{precision}",
    ]


def _evaluate(root: Path, precision: str, engine_dir: str | None = None) -> dict:
    out = root / "reports" / f"eval_{precision}.json"
    run_stage(
        "evaluate",
        [
            *_evaluate_inputs(precision, engine_dir),
            "--out",
            str(out),
            "--detail",
            str(out.with_suffix(".detail.json")),
        ],
        root,
    )
    return json.loads(out.read_text())


@pytest.mark.tensorrt
def test_probe_fingerprints_gpu_and_tensorrt(gpu_project: Path) -> None:
    run_stage("probe", ["--out", "artifacts/fingerprint.json"], gpu_project)
    fp = json.loads((gpu_project / "artifacts" / "fingerprint.json").read_text())
    assert fp["available"] is True, fp["reason"]
    assert fp["gpu"] and fp["compute_capability"] and fp["tensorrt"] and fp["driver"]


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_build_engine_with_report_and_layer_precisions(gpu_project: Path, precision: str) -> None:
    report = _build(gpu_project, precision)
    engine = gpu_project / M / "engines" / precision / "model.engine"
    assert report["status"] == "built" and engine.stat().st_size > 100_000
    assert report["layer_count"] > 5 and report["build_s"] > 0
    assert (gpu_project / M / "engines" / precision / "timing.cache").stat().st_size > 0
    wanted = {"fp32": ("FP32", "TF32"), "fp16": ("FP16",), "int8": ("INT8",)}[precision]
    assert sum(report["layer_precisions"].get(w, 0) for w in wanted) > 0, report["layer_precisions"]
    fp = json.loads((gpu_project / "artifacts" / "fingerprint.json").read_text())
    assert report["tensorrt"] == fp["tensorrt"]  # built by the TensorRT that probed (TRT_PYTHON's)


@pytest.mark.tensorrt
def test_rebuild_reuses_the_timing_cache(gpu_project: Path) -> None:
    _built(gpu_project, "fp32")
    second = _build(gpu_project, "fp32")
    assert second["timing_cache_warm"] is True and second["timing_cache_bytes_before"] > 0


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision,min_agreement", [("fp32", 0.99), ("fp16", 0.98), ("int8", 0.9)])
def test_engine_matches_onnxruntime_fp32(gpu_project: Path, precision: str, min_agreement: float) -> None:
    _built(gpu_project, precision)
    result = _evaluate(gpu_project, precision)
    trt = result["tensorrt"]
    assert trt["status"] == "ok", trt
    assert trt["top1_agreement_vs_ort_fp32"] >= min_agreement
    assert trt["agreement_images"] == 128 and trt["images"] == 128


def implicit_calibrator_missing(cwd: Path, env: dict[str, str] | None = None) -> str | None:
    """Why the TensorRT that the stages use (TRT_PYTHON's, or this interpreter's) has no implicit
    calibrator, or None where it has one (or cannot say: then the test runs and fails loudly)."""
    full_env = dict(os.environ, **(env or {}))
    code = "import tensorrt\nfrom stages.lib.trt import common\n"
    code += "print(tensorrt.__version__, common.has_implicit_calibrator(tensorrt))"
    python = full_env.get("TRT_PYTHON") or sys.executable
    proc = subprocess.run([python, "-c", code], cwd=cwd, env=full_env, capture_output=True, text=True)
    words = proc.stdout.split()
    if proc.returncode != 0 or len(words) != 2 or words[1] == "True":
        return None
    return f"TensorRT {words[0]} has no IInt8EntropyCalibrator2 (removed in 11.x): no implicit calibration to test"


@pytest.mark.tensorrt
def test_implicit_calibration_builds_and_writes_its_cache(gpu_project: Path, tmp_path: Path) -> None:
    """The option for TensorRT versions that still have IInt8EntropyCalibrator2 (8.6 here)."""
    reason = implicit_calibrator_missing(gpu_project)
    if reason:
        pytest.skip(reason)
    _built(gpu_project, "fp32")  # the probe has run
    out = tmp_path / "implicit"
    args = ["--precision", "int8", "--onnx", f"{M}/onnx/fp32.onnx", "--fingerprint", "artifacts/fingerprint.json"]
    args += ["--out-dir", str(out), "--report", str(tmp_path / "build.json"), "--implicit-calibration"]
    run_stage("build", args, gpu_project)
    report = json.loads((out / "build.json").read_text())
    assert report["status"] == "built" and "implicit" in report["mode"]
    # Implicit quantization lets TensorRT pick INT8 or FP16 per layer by timing: on this tiny
    # model it has chosen FP16 for every layer on an H100 (TensorRT 8.6), so the test does not ask
    # for INT8 layers, only for a reduced-precision engine and a complete calibration.
    precisions = report["layer_precisions"]
    assert precisions.get("INT8", 0) + precisions.get("FP16", 0) > 0, precisions
    cache = (out / "calibration.cache").read_bytes().splitlines()
    assert cache[0].startswith(b"TRT-") and b"EntropyCalibration2" in cache[0]
    scales = [line for line in cache[1:] if b": " in line]
    assert len(scales) > 20, "one scale per calibrated tensor of the ResNet-18"
    trt = _evaluate(gpu_project, "int8", engine_dir=str(out))["tensorrt"]
    assert trt["status"] == "ok", trt
    assert trt["top1_agreement_vs_ort_fp32"] >= 0.9


@pytest.mark.tensorrt
def test_engine_from_other_hardware_is_refused_with_one_line(gpu_project: Path, tmp_path: Path) -> None:
    _built(gpu_project, "fp32")
    foreign = tmp_path / "foreign"
    shutil.copytree(gpu_project / M / "engines" / "fp32", foreign)
    build = json.loads((foreign / "build.json").read_text())
    build["fingerprint"]["gpu"] = "NVIDIA A100-SXM4-80GB"
    build["fingerprint"]["compute_capability"] = "8.0"
    (foreign / "build.json").write_text(json.dumps(build))
    result = _evaluate(gpu_project, "fp32", engine_dir=str(foreign))
    assert result["tensorrt"]["status"] == "failed"
    reason = result["tensorrt"]["reason"]
    assert "A100" in reason and "run `dvc repro`" in reason and "\n" not in reason


@pytest.mark.tensorrt
def test_benchmark_times_graphs_copies_and_pipeline(gpu_project: Path) -> None:
    _built(gpu_project, "int8")
    out = gpu_project / "reports" / "bench_int8.json"
    params = gpu_project / "params.yaml"
    text = params.read_text().replace("- pytorch\n- torch_compile\n- onnxruntime\n", "")
    params.write_text(text)  # backends: tensorrt only
    run_stage(
        "benchmark",
        [
            "--precision",
            "int8",
            "--checkpoint",
            f"{M}/checkpoint.pt",
            "--onnx",
            f"{M}/onnx/int8.onnx",
            "--engine-dir",
            f"{M}/engines/int8",
            "--out",
            str(out),
            "--records",
            str(out.with_suffix(".csv")),
            "--layers",
            str(out.with_suffix(".layers.json")),
        ],
        gpu_project,
    )
    summary = json.loads(out.read_text())["tensorrt"]
    assert summary["status"] == "ok" and summary["device_mem_mb"] > 0
    rows = out.with_suffix(".csv").read_text()
    assert "compute" in rows and "end_to_end" in rows and "pipelined" in rows and "True" in rows
    layers = json.loads(out.with_suffix(".layers.json").read_text())["tensorrt"]
    assert layers["layers"] and layers["layers"][0]["ms_mean"] > 0
    assert layers["layers"][0]["precision"] != "?"
    assert summary["compute_bs1_latency_ms_p50"] > 0
    assert summary["pipelined_throughput_ips_max"] > 0
    # the project's conf runs two engine copies at once at the largest batch
    assert summary["concurrent_contexts"] == 2 and summary["concurrent_throughput_ips_max"] > 0
    assert len(layers["layers"]) > 10  # every layer, not only the ten the report shows


@pytest.mark.gpu
@pytest.mark.parametrize(
    "backend,precision", [("pytorch", "fp32"), ("pytorch", "fp16"), ("onnxruntime", "fp32"), ("onnxruntime", "fp16")]
)
def test_cuda_backends_agree_with_reference(gpu_project: Path, backend: str, precision: str) -> None:
    import onnxruntime as ort

    if backend == "onnxruntime" and "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is not installed")
    part = gpu_project / f"part_{backend}_{precision}.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "stages.evaluate",
            *_evaluate_inputs(precision),
            "--backend",
            backend,
            "--part",
            str(part),
        ],
        cwd=gpu_project,
        check=True,
        env=dict(os.environ, PYTHONPATH=f"{gpu_project}:{os.environ.get('PYTHONPATH', '')}"),
    )
    rec = json.loads(part.read_text())
    assert rec["status"] == "ok", rec
    assert rec["top1_agreement_vs_ort_fp32"] >= (0.99 if precision == "fp32" else 0.97)
    if backend == "onnxruntime":
        assert rec["runtime"]["providers"][0] == "CUDAExecutionProvider"
