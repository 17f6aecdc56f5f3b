"""report: summary.md, plots and a flat metrics.json from a hand-made reports/<model>/ folder.

The folder holds what train, export, calibrate, build, evaluate and benchmark write (same file
names and shapes), so every number the report shows is known here.
"""

from __future__ import annotations

import json
import re
import shlex
import struct
from pathlib import Path
from typing import Any

import pytest
import yaml

from stages.lib.core.io import write_csv, write_json
from stages.lib.report.results import ran as record_ran
from tests.conftest import ROOT, TINY, compose, copy_files, run_stage

MODEL = "resnet18_cifar"
D = f"reports/{MODEL}"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# -- the fake stage outputs ---------------------------------------------------------------

TRT_REASON = "TensorRT is not importable in this interpreter (No module named 'tensorrt')"
FP16_CPU = "pytorch: FP16 inference is run on CUDA only (device=cpu)"
ORT_FP16_CPU = "onnxruntime: FP16 convolutions run on the CUDA provider only"
NO_INT8 = "pytorch has no INT8 path here; INT8 runs from the Q/DQ ONNX model on ONNX Runtime and TensorRT"
NOT_EVAL = "same weights and arithmetic as pytorch eager; benchmarked only"
COMPILE_FP16_ONLY = "torch_compile is run in FP16 only, its strongest setting (each batch shape costs a compilation)"
BUILD_SKIP = "TensorRT not importable (No module named 'tensorrt'); no CUDA GPU visible"


def _eval_ok(top1: float, agree: float, diff: float, images: int) -> dict[str, Any]:
    """What stages.evaluate writes per backend (summary part; detail keys are popped there)."""
    return {
        "status": "ok",
        "top1": top1,
        "top1_agreement_vs_ort_fp32": agree,
        "max_abs_diff_vs_ort_fp32": diff,
        "agreement_images": images,
        "images": images,
        "eval_seconds": 1.5,
    }


def _bench_rows(backend: str, prec: str, p50: dict[int, float], gpu: bool) -> list[dict[str, Any]]:
    rows = []
    for b, ms in p50.items():
        rows.append(
            {
                "batch_size": b,
                "mode": "compute",
                "cuda_graph": False,
                "latency_ms_p50": ms,
                "latency_ms_p90": ms * 1.1,
                "latency_ms_p99": ms * 1.2,
                "latency_ms_mean": ms * 1.05,
                "latency_ms_min": ms * 0.9,
                "throughput_ips": round(b / ms * 1000.0, 1),
                "iterations": 50,
                "clock": "CUDA events on the stream" if gpu else "host perf_counter, synchronised each iteration",
                "timed": f"{backend} forward on device-resident input",
            }
        )
        if gpu:
            rows.append(
                {
                    "batch_size": b,
                    "mode": "end_to_end",
                    "cuda_graph": False,
                    "latency_ms_p50": ms * 2,
                    "latency_ms_p90": ms * 2.2,
                    "latency_ms_p99": ms * 2.4,
                    "latency_ms_mean": ms * 2.1,
                    "latency_ms_min": ms * 1.9,
                    "throughput_ips": round(b / (2 * ms) * 1000.0, 1),
                    "iterations": 50,
                    "clock": "host perf_counter",
                    "timed": f"{backend} host -> host",
                }
            )
    return rows


def _headline(rows: list[dict[str, Any]]) -> dict[str, Any]:
    from stages.benchmark import headline

    return headline(rows)


SCENARIOS: dict[str, dict[str, Any]] = {
    # The default experiment on a GPU with TensorRT; real CIFAR-10.
    "gpu_trt": {
        "overrides": [],
        "synthetic": False,
        "fingerprint": {
            "gpu": "NVIDIA H100 80GB HBM3",
            "compute_capability": "9.0",
            "driver": "550.54.15",
            "cuda_runtime": 12040,
            "tensorrt": "10.3.0",
            "available": True,
            "reason": None,
        },
        "images": 10000,
        "evals": {
            "fp32": {
                "pytorch": _eval_ok(94.12, 0.9998, 0.00012, 10000),
                "torch_compile": {"status": "not_evaluated", "reason": NOT_EVAL},
                "onnxruntime": _eval_ok(94.11, 1.0, 0.0, 10000),
                "tensorrt": _eval_ok(94.10, 0.9996, 0.00034, 10000),
            },
            "fp16": {
                "pytorch": _eval_ok(94.05, 0.9981, 0.0123, 10000),
                "torch_compile": {"status": "not_evaluated", "reason": NOT_EVAL},
                "onnxruntime": _eval_ok(94.02, 0.998, 0.0131, 10000),
                "tensorrt": _eval_ok(94.08, 0.9983, 0.0119, 10000),
            },
            "int8": {
                "pytorch": {"status": "unsupported", "reason": NO_INT8},
                "torch_compile": {"status": "unsupported", "reason": NO_INT8},
                "onnxruntime": _eval_ok(93.90, 0.9874, 0.456, 10000),
                "tensorrt": _eval_ok(92.80, 0.9712, 1.234, 10000),
            },
        },
        "bench": {
            "fp32": {
                "pytorch": {1: 1.5, 256: 40.0},
                "onnxruntime": {1: 1.2, 256: 30.0},
                "tensorrt": {1: 0.5, 256: 12.0},
                "torch_compile": {"status": "unsupported", "reason": COMPILE_FP16_ONLY},
            },
            "fp16": {
                "pytorch": {1: 1.4, 256: 20.0},
                "torch_compile": {1: 0.9, 256: 15.0},
                "onnxruntime": {1: 1.0, 256: 18.0},
                "tensorrt": {1: 0.3, 256: 5.0},
            },
            "int8": {
                "pytorch": {"status": "unsupported", "reason": NO_INT8},
                "torch_compile": {"status": "unsupported", "reason": NO_INT8},
                "onnxruntime": {1: 2.0, 256: 60.0},
                "tensorrt": {1: 0.21, 256: 2.5},
            },
        },
    },
    # The CPU profile on synthetic data: no TensorRT, no FP16.
    "cpu_synthetic": {
        "overrides": TINY,
        "synthetic": True,
        "fingerprint": {
            "gpu": None,
            "compute_capability": None,
            "driver": None,
            "cuda_runtime": None,
            "tensorrt": None,
            "available": False,
            "reason": BUILD_SKIP,
        },
        "images": 128,
        "evals": {
            "fp32": {
                "pytorch": _eval_ok(23.44, 1.0, 2.1e-06, 128),
                "torch_compile": {"status": "not_evaluated", "reason": NOT_EVAL},
                "onnxruntime": _eval_ok(23.44, 1.0, 0.0, 128),
                "tensorrt": {"status": "skipped", "reason": TRT_REASON},
            },
            "fp16": {
                "pytorch": {"status": "skipped", "reason": FP16_CPU},
                "torch_compile": {"status": "not_evaluated", "reason": NOT_EVAL},
                "onnxruntime": {"status": "skipped", "reason": ORT_FP16_CPU},
                "tensorrt": {"status": "skipped", "reason": TRT_REASON},
            },
            "int8": {
                "pytorch": {"status": "unsupported", "reason": NO_INT8},
                "torch_compile": {"status": "not_evaluated", "reason": NOT_EVAL},
                "onnxruntime": _eval_ok(22.66, 0.9531, 0.0749, 128),
                "tensorrt": {"status": "skipped", "reason": TRT_REASON},
            },
        },
        "bench": {
            "fp32": {
                "pytorch": {1: 230.0, 4: 800.0},
                "onnxruntime": {1: 35.0, 4: 90.0},
                "torch_compile": {"status": "unsupported", "reason": COMPILE_FP16_ONLY},
                "tensorrt": {"status": "skipped", "reason": TRT_REASON},
            },
            "fp16": {
                "pytorch": {"status": "skipped", "reason": FP16_CPU},
                "torch_compile": {
                    "status": "skipped",
                    "reason": "torch_compile: FP16 inference is run on CUDA only (device=cpu)",
                },
                "onnxruntime": {"status": "skipped", "reason": ORT_FP16_CPU},
                "tensorrt": {"status": "skipped", "reason": TRT_REASON},
            },
            "int8": {
                "pytorch": {"status": "unsupported", "reason": NO_INT8},
                "torch_compile": {"status": "unsupported", "reason": NO_INT8},
                "onnxruntime": {1: 9.0, 4: 30.0},
                "tensorrt": {"status": "skipped", "reason": TRT_REASON},
            },
        },
    },
}


def build_model_dir(root: Path, name: str) -> dict[str, Any]:
    """Write params.yaml and every input of the report stage under ``root``; return the scenario
    with what was written (bench summaries and records) added."""
    sc = SCENARIOS[name]
    params = compose(sc["overrides"])
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    gpu = params["device"] == "cuda"
    d = root / D
    write_json(root / "artifacts" / "fingerprint.json", sc["fingerprint"])
    write_json(
        root / "data" / "prepared" / "meta.json",
        {
            "dataset": "synthetic" if sc["synthetic"] else "cifar10",
            "source": "synthetic" if sc["synthetic"] else "pickle:data/raw/cifar-10-batches-py",
            "synthetic": sc["synthetic"],
            "classes": CLASSES,
            "train_images": 512 if sc["synthetic"] else 50000,
            "test_images": sc["images"],
            "calib_images": params["data"]["calib_size"],
            "calib_drawn_from": "train split",
            "image_shape": [32, 32, 3],
        },
    )
    # train.py
    write_json(
        d / "train.json",
        {
            "test_top1": sc["evals"]["fp32"]["pytorch"]["top1"],
            "epochs": params["train"]["epochs"],
            "train_images": 512,
            "train_wall_s": 321.0,
            "train_images_per_s": 1234.5,
            "device": "NVIDIA H100 80GB HBM3" if gpu else "cpu",
            "profile": params["profile"],
            "synthetic_data": sc["synthetic"],
            **({"resumed": 1} if gpu else {}),
        },
    )
    history = [
        {
            "epoch": e,
            "train_loss": round(2.0 / e, 5),
            "train_top1": 30.0 + 10 * e,
            "test_top1": (25.0 + 10 * e) if (gpu or e == 3) else None,
            "lr": 0.1 / e,
            "epoch_seconds": 10.0,
        }
        for e in (1, 2, 3)
    ]
    write_csv(d / "train_history.csv", history)
    # export.py, calibrate.py
    write_json(
        d / "export.json",
        {
            "opset": 17,
            "exporter": "torchscript",
            "export_s": 3.2,
            "fp32_onnx_mb": 42.6,
            "fp16_onnx_mb": 21.3,
            "ort_provider": "cuda" if gpu else "cpu",
            "synthetic_data": sc["synthetic"],
            "fp32_parity": {"max_abs_diff": 1.6e-06, "top1_agreement": 1.0, "images": 512},
            "reference_images": sc["images"],
            "fp16_parity": {
                "status": "skipped",
                "reason": "FP16 ONNX is validated on the CUDA provider only",
            },
        },
    )
    write_json(
        d / "calibrate.json",
        {
            "method": "entropy",
            "images": params["calibrate"]["num_images"],
            "from_split": "train",
            "per_channel": True,
            "quantize_residual_add": False,
            "tensors_calibrated": 49,
            "calibrate_s": 5.0,
            "quantize_linear_nodes": 40,
            "dequantize_linear_nodes": 62,
            "provider": "CPUExecutionProvider",
            "tool": "onnxruntime 1.20.1 quantization",
            # the stage's own check; reports written before it existed lack these keys
            **(
                {
                    "float_convs": 5,
                    "float_nodes": ["^/layer4/"],
                    "qdq_top1_agreement_vs_fp32": 0.9941,
                    "agreement_images": 256,
                    # minmax fell short, entropy (the method reported) was kept
                    "attempts": [
                        {"method": "minmax", "qdq_top1_agreement_vs_fp32": 0.7188, "calibrate_s": 2.3},
                        {"method": "entropy", "qdq_top1_agreement_vs_fp32": 0.9941, "calibrate_s": 2.7},
                    ],
                }
                if gpu
                else {}
            ),
        },
    )
    sc = dict(sc, bench_summary={}, records={})
    for prec in params["precisions"]:
        # build.py: the report json is the build record without the fingerprint
        if sc["fingerprint"]["available"]:
            build = {
                "precision": prec,
                "onnx": f"artifacts/{MODEL}/onnx/{prec}.onnx",
                "tensorrt": "10.3.0",
                "mode": "explicit Q/DQ" if prec == "int8" else prec,
                "strongly_typed": False,
                "build_s": {"fp32": 31.5, "fp16": 62.25, "int8": 48.0}[prec],
                "engine_mb": {"fp32": 45.1, "fp16": 23.4, "int8": 12.6}[prec],
                "layer_count": {"fp32": 30, "fp16": 31, "int8": 45}[prec],
                "layer_precisions": {
                    "fp32": {"FP32": 30},
                    "fp16": {"FP16": 31},
                    "int8": {"INT8": 40, "FP32": 5},
                }[prec],
                "timing_cache_warm": prec != "fp32",
                "status": "built",
            }
        else:
            build = {
                "status": "skipped",
                "precision": prec,
                "reason": BUILD_SKIP,
                "fingerprint": sc["fingerprint"],
            }
        write_json(d / "build" / f"{prec}.json", build)
        # evaluate.py
        write_json(
            d / "eval" / f"{prec}.json",
            {"precision": prec, "synthetic_data": sc["synthetic"], **sc["evals"][prec]},
        )
        # benchmark.py
        summary: dict[str, Any] = {"precision": prec, "profile": params["profile"]}
        records: list[dict[str, Any]] = []
        for backend in params["backends"]:
            spec = sc["bench"][prec][backend]
            if "status" in spec:
                summary[backend] = spec
                continue
            rows = _bench_rows(backend, prec, spec, gpu)
            records += [{"backend": backend, "precision": prec, **r} for r in rows]
            rec: dict[str, Any] = {"status": "ok", "runtime": {"backend": backend}}
            if gpu:
                rec["device_mem_mb"] = 100.0 + len(backend)
                rec["gpu"] = {"name": "NVIDIA H100 80GB HBM3", "index": 2, "uuid": "GPU-22"}
                rows.append(
                    {
                        "batch_size": max(spec),
                        "mode": "pipelined",
                        "cuda_graph": False,
                        "throughput_ips": 41000.0 if backend == "tensorrt" else 9000.0,
                        "iterations": 500,
                        "clock": "host perf_counter over the whole run",
                        "timed": "pipelined",
                    }
                )
                records.append({"backend": backend, "precision": prec, **rows[-1]})
                if backend == "tensorrt":  # as benchmark.concurrent_rows writes it
                    rows.append(
                        {
                            "batch_size": max(spec),
                            "mode": "concurrent",
                            "contexts": 2,
                            "cuda_graph": True,
                            "throughput_ips": 110000.0,
                            "iterations": 40,
                            "clock": "host perf_counter over the whole run",
                            "timed": "2 engine copies",
                        }
                    )
                    records.append({"backend": backend, "precision": prec, **rows[-1]})
            summary[backend] = {**rec, **_headline(rows)}
        write_json(d / "bench" / f"{prec}.json", summary)
        write_csv(d / "bench" / f"{prec}.csv", records)
        layers = {}
        if gpu and "tensorrt" in params["backends"]:
            layers["tensorrt"] = {
                "batch_size": 256,
                "total_ms": 2.0,
                # every layer, slowest first, as the benchmark keeps them: 1.5 + 0.4 + 11 x 0.01
                "layers": [
                    {"layer": f"{prec}_conv1 + relu", "precision": prec.upper(), "ms_mean": 1.5},
                    {"layer": f"{prec}_fc", "precision": "FP32", "ms_mean": 0.39},
                    *({"layer": f"{prec}_small{i}", "precision": "INT8", "ms_mean": 0.01} for i in range(11)),
                ],
            }
        write_json(d / "bench" / f"{prec}_layers.json", layers)
        sc["bench_summary"][prec] = summary
        sc["records"][prec] = records
    sc["params"] = params
    return sc


def _report_args() -> list[str]:
    """The report stage's arguments, exactly as dvc.yaml gives them."""
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["report"]
    tokens = shlex.split(stage["cmd"].replace("${model.name}", MODEL))
    assert tokens[:3] == ["python", "-m", "stages.report"]
    return tokens[3:]


class Ran:
    def __init__(self, root: Path, scenario: dict[str, Any]) -> None:
        self.root = root
        self.sc = scenario
        self.d = root / D
        self.summary = (self.d / "summary.md").read_text()
        self.metrics = json.loads((self.d / "metrics.json").read_text())


def _run(tmp_path_factory: pytest.TempPathFactory, name: str) -> Ran:
    root = tmp_path_factory.mktemp(f"report_{name}")
    copy_files(root)
    sc = build_model_dir(root, name)
    run_stage("report", _report_args(), root)
    return Ran(root, sc)


# (not named gpu/cpu: conftest skips tests that carry a "gpu" keyword on machines without one)
@pytest.fixture(scope="module")
def on_gpu(tmp_path_factory: pytest.TempPathFactory) -> Ran:
    return _run(tmp_path_factory, "gpu_trt")


@pytest.fixture(scope="module")
def on_cpu(tmp_path_factory: pytest.TempPathFactory) -> Ran:
    return _run(tmp_path_factory, "cpu_synthetic")


def _section(md: str, title: str) -> str:
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", md, flags=re.S | re.M)
    assert m, f"no '## {title}' section in summary.md:\n{md}"
    return m.group(1)


# -- summary.md ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["on_gpu", "on_cpu"])
def test_summary_names_the_model_and_where_it_ran(name: str, request: pytest.FixtureRequest) -> None:
    ran: Ran = request.getfixturevalue(name)
    md = ran.summary
    assert md.startswith(f"# {MODEL}: results\n")
    p = ran.sc["params"]
    if name == "on_gpu":
        assert (f"- Where: {MODEL}, profile gpu, NVIDIA H100 80GB HBM3 (driver 550.54.15), TensorRT 10.3.0") in md
    else:
        assert f"- Where: {MODEL}, profile cpu, no CUDA GPU, no TensorRT" in md
    assert f"- Precisions: {', '.join(p['precisions'])}; backends: {', '.join(p['backends'])}" in md
    device = "NVIDIA H100 80GB HBM3" if name == "on_gpu" else "cpu"
    trained = f"wall time 321 s on {device}"
    resumed = ", over 2 runs (interrupted and resumed once; each run counted up to its last save)\n"
    assert (trained + resumed in md) == (name == "on_gpu")
    assert (trained + "\n" in md) == (name == "on_cpu")
    assert "entropy calibration on" in md and "onnxruntime 1.20.1 quantization" in md
    check = (
        "; 5 convs kept in float (^/layer4/); Q/DQ top-1 agreement with FP32 99.4% on 256 calibration images "
        "(ONNX Runtime); also tried: minmax 71.9%\n"
    )
    assert (check in md) == (name == "on_gpu")
    assert "onnxruntime 1.20.1 quantization)\n" in md or name == "on_gpu"


def test_synthetic_banner_only_for_synthetic_data(on_gpu: Ran, on_cpu: Ran) -> None:
    banner = "> **SYNTHETIC DATA**: these numbers say nothing about CIFAR-10."
    assert banner in on_cpu.summary
    assert on_cpu.summary.index(banner) < on_cpu.summary.index("## Skipped or not run")
    assert "SYNTHETIC" not in on_gpu.summary
    assert "- Data: cifar10 from `pickle:data/raw/cifar-10-batches-py` (50000 train / 10000 test" in on_gpu.summary
    assert f"- Classes ({len(CLASSES)}): {', '.join(CLASSES)}" in on_gpu.summary


def _expected_status_lines(ran: Ran) -> list[str]:
    """One line per (status, reason), naming every stage x backend x precision it covers."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for what, table in (("evaluate", ran.sc["evals"]), ("benchmark", ran.sc["bench_summary"])):
        for prec in ran.sc["params"]["precisions"]:
            for backend, rec in table[prec].items():
                if isinstance(rec, dict) and rec.get("status") not in (None, "ok"):
                    grouped.setdefault((rec["status"], rec["reason"]), []).append(f"{what} {backend} {prec.upper()}")
    return [f"- **{status}**: {reason} ({', '.join(where)})" for (status, reason), where in grouped.items()]


def _not_run(section: str) -> dict[str, tuple[str, str]]:
    """'- **status**: reason (a, b)' lines -> {a: (status, reason), b: ...}."""
    import re as _re

    out = {}
    for line in section.splitlines():
        m = _re.match(r"- \*\*(\S+)\*\*: (.*) \(([^()]*)\)$", line)
        if m:
            for where in m.group(3).split(", "):
                out[where] = (m.group(1), m.group(2))
    return out


def test_skipped_section_lists_every_skipped_backend_with_its_reason(on_cpu: Ran) -> None:
    section = _section(on_cpu.summary, "Skipped or not run")
    expected = _expected_status_lines(on_cpu)
    expected.append(f"- **skipped**: {BUILD_SKIP} (build TensorRT FP32, build TensorRT FP16, build TensorRT INT8)")
    got = [line for line in section.splitlines() if line.startswith("- ")]
    assert got == expected
    # spot checks on what a reader looks for
    not_run = _not_run(section)
    assert not_run["evaluate tensorrt FP32"] == ("skipped", TRT_REASON)
    assert not_run["evaluate pytorch FP16"] == ("skipped", FP16_CPU)
    assert not_run["benchmark onnxruntime FP16"] == ("skipped", ORT_FP16_CPU)
    assert not_run["evaluate pytorch INT8"] == ("unsupported", NO_INT8)
    assert not_run["evaluate torch_compile FP32"] == ("not_evaluated", NOT_EVAL)
    assert not_run["build TensorRT INT8"] == ("skipped", BUILD_SKIP)


def test_skipped_section_on_a_gpu_lists_only_what_did_not_run(on_gpu: Ran) -> None:
    section = _section(on_gpu.summary, "Skipped or not run")
    got = [line for line in section.splitlines() if line.startswith("- ")]
    assert got == _expected_status_lines(on_gpu)
    assert not any("tensorrt" in line for line in got)
    assert "build TensorRT" not in section


def test_accuracy_table_rows(on_gpu: Ran, on_cpu: Ran) -> None:
    for ran in (on_gpu, on_cpu):
        section = _section(ran.summary, "Accuracy (full test split)")
        rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line][1:]
        expected = []
        for prec in ran.sc["params"]["precisions"]:
            for backend, rec in ran.sc["evals"][prec].items():
                if rec["status"] == "ok":
                    expected.append(
                        f"| {backend} | {prec.upper()} | {rec['top1']:.2f} | "
                        f"{rec['top1_agreement_vs_ort_fp32']:.4f} ({rec['agreement_images']} img) | "
                        f"{rec['max_abs_diff_vs_ort_fp32']:.3g} | {rec['images']} |"
                    )
        assert rows == expected
    assert "| tensorrt | INT8 | 92.80 | 0.9712 (10000 img) | 1.23 | 10000 |" in on_gpu.summary
    assert "| onnxruntime | INT8 | 22.66 | 0.9531 (128 img) | 0.0749 | 128 |" in on_cpu.summary
    assert "| pytorch | INT8 |" not in on_cpu.summary  # unsupported: no accuracy row


def test_quality_gate_rows(on_gpu: Ran, on_cpu: Ran) -> None:
    g = _section(on_gpu.summary, "Quality gate")
    assert (
        "| tensorrt | INT8 | top-1 drop vs tensorrt fp32 <= 0.5 points | **NO** | "
        "92.80% vs 94.10% (tensorrt fp32): drop 1.30 points |"
    ) in g
    assert (
        "| onnxruntime | INT8 | top-1 drop vs onnxruntime fp32 <= 0.5 points | yes | "
        "93.90% vs 94.11% (onnxruntime fp32): drop 0.21 points |"
    ) in g
    assert "| pytorch | FP32 | top-1 agreement with ORT FP32 >= 0.99 | yes | agreement 0.9998 |" in g
    assert "| tensorrt | FP16 | top-1 drop vs tensorrt fp32 <= 0.5 points | yes |" in g
    rows = [line for line in g.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 8  # 3 FP32 + 3 FP16 + 2 INT8 evaluated backends
    assert sum("**NO**" in r for r in rows) == 1
    c = _section(on_cpu.summary, "Quality gate")
    assert (
        "| onnxruntime | INT8 | top-1 drop vs onnxruntime fp32 <= 0.5 points | **NO** | "
        "22.66% vs 23.44% (onnxruntime fp32): drop 0.78 points |"
    ) in c


def test_quality_gate_rows_agree_with_the_gate_stage(on_gpu: Ran) -> None:
    proc = run_stage("gate", ["--model-dir", D, "--out", f"{D}/gate.json"], on_gpu.root, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: quality gate: tensorrt int8 fails 'top-1 drop vs tensorrt fp32 <= 0.5 points' "
        f"(92.80% vs 94.10% (tensorrt fp32): drop 1.30 points) (see {D}/summary.md)"
    ]
    gate = json.loads((on_gpu.d / "gate.json").read_text())
    assert gate["passed"] is False and gate["checks"] == 8 and gate["failed"] == 1


def test_performance_targets_section(on_gpu: Ran, on_cpu: Ran) -> None:
    """ResNet-18's H100 targets (conf/targets/resnet18_cifar.yaml) against the run; informative only:
    the report stage succeeded although most are missed, and the section sits after the gate."""
    g = _section(on_gpu.summary, "Performance targets")
    assert "Targets set for NVIDIA H100 80GB HBM3 (params: targets.gpus)." in g
    assert "| TensorRT INT8 best img/s (compute) >= 500,000 | 102,400 (b256) | **79.5% short** |" in g
    assert "| TensorRT INT8 batch-1 p50 <= 0.15 ms | 0.2100 ms | **40.0% over** |" in g
    assert (
        "| TensorRT INT8 top-1 within 0.3 points of TensorRT FP32 | 92.80% vs 94.10%: drop 1.30 points | "
        "**1.00 points over** |"
    ) in g
    assert (
        "| TensorRT FP32 pipelined img/s within 15% of compute at its batch | 41,000 vs 21,333 at b256: 92.2% above "
        "| met |"
    ) in g
    md = on_gpu.summary
    assert md.index("## Quality gate") < md.index("## Performance targets") < md.index("## Speed: headline")
    c = _section(on_cpu.summary, "Performance targets")
    assert c.strip() == (
        "Not checked in profile cpu (targets.enabled is false); "
        "targets are set for: NVIDIA H100 80GB HBM3, NVIDIA H200."
    )


def test_performance_targets_in_metrics_json(on_gpu: Ran, on_cpu: Ran) -> None:
    m = {k: v for k, v in on_gpu.metrics.items() if k.startswith("target_")}
    assert m == {
        "target_int8_throughput_ips": 102400.0,
        "target_int8_throughput_ips_met": 0,
        "target_int8_bs1_latency_ms": 0.21,
        "target_int8_bs1_latency_ms_met": 0,
        "target_int8_top1_drop_points": 1.3,
        "target_int8_top1_drop_points_met": 0,
        "target_fp32_pipelined_vs_compute_ratio": 1.9219,
        "target_fp32_pipelined_vs_compute_ratio_met": 1,
        "target_fp16_pipelined_vs_compute_ratio": 0.8008,
        "target_fp16_pipelined_vs_compute_ratio_met": 0,
        "target_int8_pipelined_vs_compute_ratio": 0.4004,
        "target_int8_pipelined_vs_compute_ratio_met": 0,
    }
    assert not [k for k in on_cpu.metrics if k.startswith("target_")]  # not checked in the cpu profile


def test_headline_speed_table(on_gpu: Ran, on_cpu: Ran) -> None:
    g = _section(on_gpu.summary, "Speed: headline")
    # TensorRT INT8: batch-1 p50 0.21 ms; best compute 256/2.5 ms = 102,400 img/s at b256;
    # end to end 256/5 ms = 51,200 img/s; pipelined 41,000 img/s; two engine copies at once
    # 110,000 img/s; 108 MB. Only TensorRT has a concurrent run.
    assert "| tensorrt | INT8 | 0.2100 | 102,400 (b256) | 51,200 (b256) | 41,000 | 110,000 (b256 x2) | 108 |" in g
    assert "| pytorch | FP32 | 1.5000 | 6,400 (b256) | 3,200 (b256) | 9,000 | - | 107 |" in g
    assert "| torch_compile | FP16 | 0.9000 | 17,067 (b256) |" in g
    c = _section(on_cpu.summary, "Speed: headline")
    assert "| onnxruntime | INT8 | 9.0000 | 133 (b4) | - | - | - | - |" in c
    assert "| pytorch | FP32 | 230.0000 | 5 (b4) | - | - | - | - |" in c
    rows = [line for line in c.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 3  # pytorch FP32, onnxruntime FP32, onnxruntime INT8
    assert "What each number measured:" in g


def test_every_case_table_has_one_row_per_record(on_gpu: Ran) -> None:
    section = _section(on_gpu.summary, "Speed: every case")
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == sum(len(r) for r in on_gpu.sc["records"].values())
    assert "| tensorrt | INT8 | 256 | compute | False | 2.5000 | 3.0000 | 102,400 | 50 |" in rows


def test_tensorrt_sections_only_when_engines_were_built(on_gpu: Ran, on_cpu: Ran) -> None:
    engines = _section(on_gpu.summary, "TensorRT engines")
    assert "| INT8 | explicit Q/DQ | 48.0 | True | 12.6 | 45 | {'INT8': 40, 'FP32': 5} |" in engines
    assert "| FP32 | fp32 | 31.5 | False | 45.1 | 30 | {'FP32': 30} |" in engines
    layers = _section(on_gpu.summary, "Ten slowest layers per engine")
    assert "**TensorRT INT8**, batch 256, sum of layer times 2.0000 ms" in layers
    assert "| `int8_conv1 + relu` | INT8 | 1.5000 | 75.0% |" in layers
    # ten of the thirteen layers: the two slow ones and eight of the eleven small ones
    int8 = layers.split("**TensorRT INT8**")[1].split("**TensorRT")[0]
    assert int8.count("| `int8_") == 10 and "int8_small7`" in int8 and "int8_small8`" not in int8
    assert "## TensorRT engines" not in on_cpu.summary
    assert "## Ten slowest layers" not in on_cpu.summary


# -- plots ---------------------------------------------------------------------------------


def _png_size(path: Path) -> tuple[int, int]:
    blob = path.read_bytes()
    assert blob[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert blob[12:16] == b"IHDR"
    return struct.unpack(">II", blob[16:24])


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("on_gpu", {"accuracy", "latency", "throughput", "throughput_end_to_end", "speedup", "training"}),
        ("on_cpu", {"accuracy", "latency", "throughput", "speedup", "training"}),
    ],
)
def test_plots_are_real_pngs(name: str, expected: set[str], request: pytest.FixtureRequest) -> None:
    ran: Ran = request.getfixturevalue(name)
    plots = sorted((ran.d / "plots").glob("*.png"))
    assert {p.stem for p in plots} == expected
    for png in plots:
        width, height = _png_size(png)
        assert width >= 400 and height >= 300, (png, width, height)
        assert png.stat().st_size > 10_000, f"{png} is suspiciously small"
    assert not [p for p in (ran.d / "plots").iterdir() if p.suffix != ".png"]
    # summary.md embeds each of them by a path relative to itself
    for png in plots:
        assert f"![{png.stem}](plots/{png.name})" in ran.summary
        assert (ran.d / "plots" / png.name).is_file()


def test_plots_differ_between_runs(on_gpu: Ran, on_cpu: Ran) -> None:
    """The figures are drawn from the data, not a fixed image."""
    for stem in ("accuracy", "latency", "training"):
        assert (on_gpu.d / "plots" / f"{stem}.png").read_bytes() != (on_cpu.d / "plots" / f"{stem}.png").read_bytes()


# -- metrics.json --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["on_gpu", "on_cpu"])
def test_metrics_json_is_flat_snake_case_numbers(name: str, request: pytest.FixtureRequest) -> None:
    ran: Ran = request.getfixturevalue(name)
    assert ran.metrics, "metrics.json is empty"
    for key, value in ran.metrics.items():
        assert re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", key), key
        # numbers only: no strings, no nesting, flags as 0/1 (JSON true/false are not numbers here)
        assert type(value) in (int, float), f"{key} is not a number: {value!r}"


def test_metrics_json_values(on_gpu: Ran, on_cpu: Ran) -> None:
    m = on_gpu.metrics
    assert m["top1_tensorrt_int8"] == 92.8
    assert m["top1_onnxruntime_int8"] == 93.9
    assert m["top1_pytorch_fp32"] == 94.12
    assert m["top1_tensorrt_fp16"] == 94.08
    assert m["int8_top1_drop_pts"] == 1.3  # the worst INT8 backend: TensorRT, 94.10 -> 92.80
    assert "fp32_top1_drop_pts" not in m
    assert m["gate_passed"] == 0 and m["gate_failed_checks"] == 1  # as the gate stage finds
    assert m["train_test_top1"] == 94.12 and m["train_wall_s"] == 321.0
    assert m["synthetic_data"] == 0
    assert m["ms_p50_tensorrt_int8_b1"] == 0.21
    assert m["ips_tensorrt_int8_best"] == 102400.0
    assert m["ips_tensorrt_int8_e2e_best"] == 51200.0
    assert m["ips_tensorrt_int8_pipelined_best"] == 41000.0
    assert m["ips_tensorrt_int8_concurrent_best"] == 110000.0
    assert "ips_pytorch_fp32_concurrent_best" not in m
    assert m["ms_p50_torch_compile_fp16_b1"] == 0.9
    for missing in ("top1_pytorch_int8", "top1_torch_compile_fp32", "ms_p50_torch_compile_int8_b1"):
        assert missing not in m
    # one top-1 per evaluated backend x precision
    evaluated = {f"top1_{b}_{p}" for p, e in on_gpu.sc["evals"].items() for b, r in e.items() if r["status"] == "ok"}
    assert {k for k in m if k.startswith("top1_")} == evaluated

    c = on_cpu.metrics
    assert c["synthetic_data"] == 1
    assert c["top1_onnxruntime_int8"] == 22.66 and c["top1_pytorch_fp32"] == 23.44
    assert c["int8_top1_drop_pts"] == 0.78 and c["gate_passed"] == 0
    assert c["ms_p50_pytorch_fp32_b1"] == 230.0
    assert c["ips_onnxruntime_fp32_best"] == round(4 / 90.0 * 1000.0, 1)
    assert not [k for k in c if "_tensorrt_" in k or "_fp16_" in k or k.startswith("gpu_index")]
    assert not [k for k in c if "e2e" in k or "pipelined" in k or "concurrent" in k]


def test_metrics_json_names_the_benchmark_gpu(on_gpu: Ran) -> None:
    """gpu_index_<precision>: nvidia-smi's index of the GPU each precision was benchmarked on."""
    indexes = {
        p: rec["gpu"]["index"] for p, by in on_gpu.sc["bench_summary"].items() for rec in by.values() if record_ran(rec)
    }
    assert indexes, "the scenario benchmarks nothing on a GPU"
    assert {k: v for k, v in on_gpu.metrics.items() if k.startswith("gpu_index_")} == {
        f"gpu_index_{p}": i for p, i in indexes.items()
    }


def test_data_plots_hold_one_series_per_backend_and_precision(on_gpu: Ran) -> None:
    throughput = json.loads((on_gpu.d / "plot_data" / "throughput.json").read_text())
    series = {r["series"] for r in throughput}
    benched = {f"{r['backend']} {r['precision']}" for rows in on_gpu.sc["records"].values() for r in rows}
    assert series == benched
    trt = [(r["batch_size"], r["throughput_ips"]) for r in throughput if r["series"] == "tensorrt int8"]
    assert trt == sorted(trt) and (256, 102400.0) in trt  # compute mode only, by batch size
    top1 = json.loads((on_gpu.d / "plot_data" / "top1.json").read_text())
    assert {"series": "tensorrt int8", "top1": 92.8} in top1
    assert len(top1) == len([k for k in on_gpu.metrics if k.startswith("top1_")])


def test_report_follows_the_precisions_in_params(tmp_path: Path) -> None:
    """`-S precision=int8`: the report reads and shows INT8 only (other files may linger)."""
    copy_files(tmp_path)
    build_model_dir(tmp_path, "gpu_trt")
    params = compose(["precision=int8"])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_stage("report", _report_args(), tmp_path)
    md = (tmp_path / D / "summary.md").read_text()
    metrics = json.loads((tmp_path / D / "metrics.json").read_text())
    assert "- Precisions: int8;" in md
    accuracy = _section(md, "Accuracy (full test split)")
    assert "| tensorrt | INT8 | 92.80 |" in accuracy
    assert "| FP32 |" not in accuracy and "| FP16 |" not in accuracy
    assert metrics["top1_tensorrt_int8"] == 92.8
    assert not [k for k in metrics if "_fp32" in k or "_fp16" in k]


def test_report_without_fingerprint_or_meta_still_writes(tmp_path: Path) -> None:
    """--fingerprint and --data-meta are optional for the stage: without them it says so."""
    copy_files(tmp_path)
    build_model_dir(tmp_path, "cpu_synthetic")
    run_stage("report", ["--model-dir", D], tmp_path)
    md = (tmp_path / D / "summary.md").read_text()
    assert f"- Where: {MODEL}, profile cpu, no CUDA GPU, no TensorRT" in md
    assert "SYNTHETIC" not in md  # nothing says so without the data meta
    assert json.loads((tmp_path / D / "metrics.json").read_text())["synthetic_data"] == 0


def test_report_reads_only_declared_inputs(tmp_path: Path) -> None:
    from tests.test_dvc_yaml import DVC_YAML, _paths, _traced_reads, expand_stages

    copy_files(tmp_path)
    sc = build_model_dir(tmp_path, "cpu_synthetic")
    stage = expand_stages(DVC_YAML, sc["params"])["report"]
    proc, reads = _traced_reads(stage, tmp_path, tmp_path / "reads.json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"{D}/eval/fp32.json" in reads  # the tracer works
    allowed = [p.rstrip("/") for key in ("deps", "outs", "metrics") for p in _paths(stage.get(key))]
    undeclared = sorted(r for r in reads if not any(r == a or r.startswith(a + "/") for a in allowed))
    assert not undeclared, f"report reads files that are not among its deps: {undeclared}"
