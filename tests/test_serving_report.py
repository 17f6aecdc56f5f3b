"""The report's "Served through Triton" section and plot, and the serving interpreter check,
on hand-made records (no server)."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest

from stages.lib.core.errors import BackendUnavailable
from stages.lib.core.io import write_csv, write_json
from stages.lib.serving import process
from stages.lib.serving.report import in_process, served_report
from tests.conftest import ROOT
from tests.import_graph import import_blocking

TIMED = "client-side request latency"


def _bench_row(backend: str, batch: int, mode: str, ips: float, p50: float, p99: float) -> dict[str, Any]:
    return {
        "backend": backend,
        "precision": "int8",
        "batch_size": batch,
        "mode": mode,
        "throughput_ips": ips,
        "latency_ms_p50": p50,
        "latency_ms_p99": p99,
    }


BENCH = [
    _bench_row("tensorrt", 8, "compute", 90000.0, 0.08, 0.09),
    _bench_row("tensorrt", 8, "end_to_end", 20000.0, 0.40, 0.50),
    _bench_row("tensorrt", 256, "end_to_end", 40000.0, 6.4, 7.0),
    _bench_row("tensorrt", 256, "pipelined", 60000.0, 0.0, 0.0),
    _bench_row("onnxruntime", 8, "compute", 800.0, 10.0, 12.0),
]


def _served(concurrency: int, ips: float, p50: float, p99: float, served: str = "model") -> dict[str, Any]:
    row = {"backend": "tensorrt", "precision": "int8", "model": "m_int8", "served": served}
    row.update(concurrency=concurrency, batch_size=8, requests=100, throughput_ips=ips)
    row.update(latency_ms_p50=p50, latency_ms_p99=p99, server_queue_ms_mean=0.5 * p50, server_compute_ms_mean=0.25)
    return {**row, "server_batch_mean": 8.0 * concurrency, "timed": TIMED}


def _model_dir(tmp: Path) -> Path:
    d = tmp / "reports" / "m"
    write_csv(d / "bench" / "int8.csv", BENCH)
    served = [_served(1, 5000.0, 1.5, 2.0), _served(1, 6250.0, 1.2, 1.6, "passthrough")]
    served += [_served(16, 20000.0, 6.0, 9.5), _served(16, 25000.0, 5.0, 8.0, "passthrough")]
    write_csv(d / "serve" / "int8.csv", served)
    server = {"triton": "2.51.0", "pytriton": "0.7.0"}
    write_json(
        d / "serve" / "int8.json",
        {
            "precision": "int8",
            "tensorrt": {"status": "ok", "server": server, "client": {"perf_analyzer": "2.51.0", "protocol": "grpc"}},
            "onnxruntime": {"status": "skipped", "reason": "onnxruntime: no CUDA execution provider"},
        },
    )
    return d


def test_in_process_prefers_end_to_end_and_the_best_batch() -> None:
    ref = in_process(BENCH, "tensorrt", "int8", 8)
    assert ref is not None
    assert (ref["mode"], ref["throughput_ips"], ref["batch_size"]) == ("end_to_end", 40000.0, 256)
    # CPU benchmarks time host arrays in and out as "compute": that is the in-process figure there
    cpu = in_process(BENCH, "onnxruntime", "int8", 8)
    assert cpu is not None and cpu["mode"] == "compute" and cpu["latency_ms_p99"] == 12.0
    assert in_process(BENCH, "pytorch", "int8", 8) is None


def test_in_process_latency_is_at_one_requests_batch() -> None:
    ref = in_process(BENCH, "tensorrt", "int8", 8)
    assert ref is not None and (ref["latency_ms_p50"], ref["latency_ms_p99"]) == (0.40, 0.50)
    assert in_process(BENCH, "tensorrt", "int8", 32)["latency_ms_p50"] is None  # type: ignore[index]


def test_section_puts_served_pass_through_and_in_process_side_by_side(tmp_path: Path) -> None:
    lines, png = served_report(_model_dir(tmp_path), tmp_path / "plots")
    text = "\n".join(lines)
    assert lines[0] == "## Served through Triton"
    assert "Triton 2.51.0 (PyTriton 0.7.0" in text and "over gRPC on 127.0.0.1 by perf_analyzer 2.51.0" in text
    header = next(line for line in lines if line.startswith("| backend |"))
    assert "| served img/s | pass-through img/s | in process img/s |" in header
    rows = [line for line in lines if line.startswith("| tensorrt |")]
    assert rows == [
        "| tensorrt | INT8 | 1 | 8 | 5,000.0 | 6,250.0 | 40,000 (b256) | 0.80 | 1.50 / 2.00 | 1.20 / 1.60 "
        "| 0.40 / 0.50 | 0.75 / 0.25 | 8.0 |",
        "| tensorrt | INT8 | 16 | 8 | 20,000.0 | 25,000.0 | 40,000 (b256) | 0.80 | 6.00 / 9.50 | 5.00 / 8.00 "
        "| 0.40 / 0.50 | 3.00 / 0.25 | 128.0 |",
    ]
    assert "- onnxruntime INT8: skipped: onnxruntime: no CUDA execution provider" in lines
    assert png == tmp_path / "plots" / "served.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_records_without_a_pass_through_model_still_report(tmp_path: Path) -> None:
    """Records of a serve stage that served no pass-through model: its columns say "-"."""
    d = _model_dir(tmp_path)
    rows = [{k: v for k, v in _served(4, 9000.0, 2.0, 3.0).items() if k != "served"}]
    write_csv(d / "serve" / "int8.csv", rows)
    lines, png = served_report(d, tmp_path / "plots")
    (row,) = [line for line in lines if line.startswith("| tensorrt |")]
    assert row.startswith("| tensorrt | INT8 | 4 | 8 | 9,000.0 | - | 40,000 (b256) | - | 2.00 / 3.00 | - |")
    assert png is not None and png.is_file()


def test_nothing_served_gives_reasons_and_no_plot(tmp_path: Path) -> None:
    d = tmp_path / "m"
    write_json(d / "serve" / "fp32.json", {"precision": "fp32", "onnxruntime": {"status": "skipped", "reason": "no"}})
    (d / "serve" / "fp32.csv").write_text("backend\n")
    lines, png = served_report(d, tmp_path / "plots")
    assert png is None and not (tmp_path / "plots").exists()
    assert "- onnxruntime FP32: skipped: no" in lines
    assert not any(line.startswith("|") for line in lines)


def test_no_serve_stage_no_section(tmp_path: Path) -> None:
    assert served_report(tmp_path, tmp_path / "plots") == ([], None)


# -- the serving interpreter check ----------------------------------------------------------


def _info(**over: Any) -> dict[str, Any]:
    info = {"executable": "/v/bin/python", "version": "3.11", "libpython": "/py/lib/libpython3.11.so.1.0"}
    info.update(libpython_name="libpython3.11.so.1.0", numpy="1.26.4", pytriton="0.7.0", tritonclient="2.73.0")
    return {**info, **over}


def test_a_usable_serving_interpreter_puts_its_bin_and_libpython_first() -> None:
    sp = process._checked("/v/bin/python", _info())
    env = sp.env(EXTRA="1")
    assert env["PATH"].split(":")[0] == "/v/bin" and env["LD_LIBRARY_PATH"].split(":")[0] == "/py/lib"
    assert env["PYTHONPATH"] == str(process.PROJECT_ROOT) and env["EXTRA"] == "1"
    assert (process.PROJECT_ROOT / "stages" / "lib" / "serving" / "process.py").is_file()


@pytest.mark.parametrize(
    ("over", "expected"),
    [
        ({"numpy": "2.4.6"}, "PyTriton needs numpy<2"),
        ({"pytriton": None, "pytriton_error": "ModuleNotFoundError: x"}, "pytriton is not importable"),
        ({"libpython": None}, "no libpython3.11.so.1.0"),
    ],
)
def test_an_unusable_serving_interpreter_says_what_is_wrong(over: dict[str, Any], expected: str) -> None:
    with pytest.raises(BackendUnavailable, match=expected):
        process._checked("/v/bin/python", _info(**over))


def test_no_serving_interpreter_names_the_variable_and_the_fix() -> None:
    with pytest.raises(BackendUnavailable, match="set SERVE_PYTHON") as info:
        process.serving_python({})
    assert "make serve-venv" in str(info.value)
    assert json.dumps(str(info.value))  # one line, no traceback material


# -- what the serving interpreter runs --------------------------------------------------------

# Modules the serving interpreter imports: it has numpy<2, pyyaml, PyTriton, tritonclient and
# a runtime (ONNX Runtime, or TensorRT + cuda-python), and may be Python 3.10.
SERVING_SIDE = [
    "stages.lib.serving.server",
    "stages.lib.serving.process",
    "stages.lib.serving.spec",
    "stages.lib.runners.registry",
    "stages.lib.runners.ort_runner",
    "stages.lib.runners.trt_runner",
]
NOT_THERE = ("torch", "torchvision", "onnx", "pandas", "matplotlib", "PIL", "hydra", "dvc", "pytriton", "tritonclient")


def test_serving_side_modules_import_without_the_projects_heavy_packages() -> None:
    """PyTriton and tritonclient are imported inside functions, the rest not at all."""
    proc = import_blocking(SERVING_SIDE, NOT_THERE)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


@pytest.mark.parametrize("module", SERVING_SIDE[:3])
def test_serving_side_modules_parse_as_python_310(module: str) -> None:
    ast.parse((ROOT / (module.replace(".", "/") + ".py")).read_text(), feature_version=(3, 10))
