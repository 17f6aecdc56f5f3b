"""Memory before it runs out: a case that cannot fit is refused in one line naming the case,
its need and what the machine has; an allocation failure marks that case failed and the
other cases still run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stages import benchmark
from stages.lib.core import memory
from stages.lib.core.config import load_params
from stages.lib.core.errors import OutOfMemory
from stages.lib.data.inputs import InputSpec
from tests.conftest import run_stage
from tests.test_cli_errors import TRAIN_ARGS, edit_params, one_line_error, prepare_synthetic

A = "artifacts/resnet18_cifar"
R = "reports/resnet18_cifar"
HUGE = 100_000_000  # 100 M CIFAR images: 1.1 TiB of float32 input alone


def test_case_need_counts_io_and_model_activations() -> None:
    need = memory.case_need(10, 3072, 40, ("resnet18", True, 32))
    assert need.io_bytes == 10 * (3072 + 40)
    assert need.activation_bytes == 10 * 600 * 32 * 32
    assert memory.case_need(10, 3072, 40, ("resnet18", True, 32), "int8").activation_bytes == need.activation_bytes // 4
    training = memory.case_need(10, 3072, 40, ("resnet18", True, 32), training=True)
    assert training.activation_bytes == 5 * need.activation_bytes


def test_check_fits_refuses_naming_case_need_and_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "available_host_bytes", lambda: 8 << 30)
    need = memory.Need(io_bytes=30 << 30, activation_bytes=2 << 30)
    with pytest.raises(OutOfMemory) as info:
        memory.check_fits("benchmark pytorch FP32 batch 9", need, "cpu", "lower bench.batch_sizes")
    assert str(info.value) == (
        "benchmark pytorch FP32 batch 9: needs about 32.0 GiB (inputs and outputs 30.0 GiB + activations at "
        "least 2.0 GiB), this machine has 8.0 GiB of RAM available: lower bench.batch_sizes"
    )
    memory.check_fits("fits", memory.Need(1 << 30, 0), "cpu", "-")


def test_check_fits_uses_free_gpu_memory_for_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "free_gpu_bytes", lambda: 1 << 30)
    monkeypatch.setattr(memory, "available_host_bytes", lambda: 1 << 40)
    with pytest.raises(OutOfMemory, match="1.0 GiB of free GPU memory"):
        memory.check_fits("c", memory.Need(2 << 30, 0), "cuda", "x")
    monkeypatch.setattr(memory, "free_gpu_bytes", lambda: None)  # unknown: not checked
    memory.check_fits("c", memory.Need(2 << 30, 0), "cuda", "x")


def test_available_host_bytes_is_plausible() -> None:
    have = memory.available_host_bytes()
    assert have is None or 0 < have < 1 << 50


@pytest.mark.parametrize(
    ("exc", "oom"),
    [
        (MemoryError(), True),
        (RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB"), True),
        (
            RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory for requested buffer"),
            True,
        ),
        (RuntimeError("numpy: Unable to allocate 34.3 GiB for an array"), True),
        (RuntimeError("cudaErrorMemoryAllocation"), True),
        (ValueError("shapes (3,) and (4,) not aligned"), False),
    ],
)
def test_is_out_of_memory(exc: BaseException, oom: bool) -> None:
    assert memory.is_out_of_memory(exc) is oom


class FakeRunner:
    backend, precision, device = "onnxruntime", "fp32", "cpu"

    def input_spec(self) -> InputSpec:
        return InputSpec("float32", "NCHW", 32)


def test_a_batch_that_runs_out_of_memory_fails_alone(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = load_params(project / "params.yaml")  # bench.batch_sizes [1, 4]
    monkeypatch.setattr(memory, "available_host_bytes", lambda: 1 << 40)

    def rows(runner: Any, p: Any, b: int, gpu: bool) -> list[dict[str, Any]]:
        if b == 1:
            raise MemoryError()
        return [{"batch_size": b, "mode": "compute", "cuda_graph": False}]

    monkeypatch.setattr(benchmark, "batch_rows", rows)
    failed: list[dict[str, Any]] = []
    got = benchmark.bench_runner(FakeRunner(), "onnxruntime", p, failed)  # type: ignore[arg-type]
    assert [r["batch_size"] for r in got] == [4]
    assert failed == [
        {
            "batch_size": 1,
            "reason": "out of memory (MemoryError): lower bench.batch_sizes",
        }
    ]


def test_batch_need_of_a_runner(project: Path) -> None:
    p = load_params(project / "params.yaml")
    need = benchmark.batch_need(FakeRunner(), p, 8)  # type: ignore[arg-type]
    assert need.io_bytes == 8 * (3 * 32 * 32 * 4 + 4 * 10)
    assert need.activation_bytes == 8 * 600 * 32 * 32


BENCH_ARGS = ["--precision", "fp32", "--checkpoint", f"{A}/checkpoint.pt", "--onnx", f"{A}/onnx/fp32.onnx"]
BENCH_ARGS += ["--engine-dir", f"{A}/engines/fp32", "--out", f"{R}/bench/fp32.json"]
BENCH_ARGS += ["--records", f"{R}/bench/fp32.csv", "--layers", f"{R}/bench/fp32_layers.json"]


def test_benchmark_refuses_a_batch_beyond_ram_and_times_the_rest(prepared_tiny: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "p"
    shutil.copytree(prepared_tiny, root)
    edit_params(root, lambda r: r.update(backends=["onnxruntime"]) or r["bench"].update(batch_sizes=[1, HUGE]))
    proc = run_stage("benchmark", BENCH_ARGS, root)
    refused = [line for line in proc.stderr.splitlines() if f"batch {HUGE}: needs about" in line]
    assert len(refused) == 1, proc.stderr[-3000:]
    assert "this machine has" in refused[0] and "of RAM available: lower bench.batch_sizes" in refused[0]
    rec = json.loads((root / R / "bench" / "fp32.json").read_text())["onnxruntime"]
    assert rec["status"] == "ok"
    assert [f["batch_size"] for f in rec["failed_batches"]] == [HUGE]
    rows = (root / R / "bench" / "fp32.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("onnxruntime,fp32,1,")


def test_train_refuses_a_batch_beyond_ram_before_anything_is_written(project: Path) -> None:
    prepare_synthetic(project)
    edit_params(project, lambda r: r["train"].update(batch_size=HUGE))
    proc = run_stage("train", TRAIN_ARGS, project, check=False)
    line = one_line_error(proc, "train", f"train batch {HUGE}: needs about ", "lower train.batch_size")
    assert "of RAM available" in line
    assert not (project / "artifacts").exists() and not (project / "reports").exists()


def test_an_allocation_failure_outside_a_case_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """A single-case stage (train) that runs out of memory: one line, exit 1."""
    from stages.lib.core.cli import run_main

    def body() -> None:
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.1 GiB total capacity)")

    assert run_main("train", body) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: train: out of memory (out of memory. Tried to allocate 20.00 GiB (GPU 0; ")
    assert err.endswith(
        "lower the batch size (train.batch_size, bench.batch_sizes, serve.batch_size) or free memory, then rerun\n"
    )
    assert err.count("\n") == 1
