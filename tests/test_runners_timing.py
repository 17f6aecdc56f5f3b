"""stages/lib/runners (CPU paths) and the shared timing loop in stages/lib/core/timing.py."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import time
from pathlib import Path

import numpy as np
import pytest

from stages.lib.core import timing
from stages.lib.core.config import params_from_dict
from stages.lib.core.errors import BackendUnavailable, OnnxModelError, UnsupportedCombination
from stages.lib.core.params import BACKENDS, Params
from stages.lib.core.timing import TimedOp, Timing, measure, measure_span, span_budgeted, summarize
from stages.lib.data import inputs
from stages.lib.data import prepared as data
from stages.lib.runners.base import Artifacts, Runner, bench_input
from stages.lib.runners.registry import create_runner
from tests.conftest import TINY, compose

M = "artifacts/resnet18_cifar"


@pytest.fixture(scope="module")
def params() -> Params:
    p = params_from_dict(compose(TINY))
    assert p.device == "cpu" and p.model.name == "resnet18_cifar"
    return p


@pytest.fixture(scope="module")
def artifacts(prepared_tiny: Path) -> dict[str, Artifacts]:
    root = prepared_tiny / M
    return {
        prec: Artifacts(
            checkpoint=root / "checkpoint.pt", onnx=root / "onnx" / f"{prec}.onnx", engine_dir=root / "engines" / prec
        )
        for prec in ("fp32", "fp16", "int8")
    }


@pytest.fixture(scope="module")
def batch(prepared_tiny: Path, params: Params) -> np.ndarray:
    test = data.load_split(prepared_tiny / "data/prepared/test.npz")
    return inputs.preprocess(test.images[:6], params.data.mean, params.data.std, params.model.image_size)


# -- registry ------------------------------------------------------------------------------


def test_registry_maps_every_backend() -> None:
    from stages.lib.runners import registry

    assert set(registry._MODULES) == set(BACKENDS)
    for backend in BACKENDS:
        module = importlib.import_module(registry._MODULES[backend])
        assert callable(module.create), backend


# -- inference -------------------------------------------------------------------------------


def test_pytorch_and_onnxruntime_agree(params, artifacts, batch) -> None:
    torch_runner = create_runner("pytorch", "fp32", artifacts["fp32"], params)
    ort_runner = create_runner("onnxruntime", "fp32", artifacts["fp32"], params)
    assert isinstance(torch_runner, Runner) and isinstance(ort_runner, Runner)
    assert torch_runner.backend == "pytorch" and ort_runner.backend == "onnxruntime"
    assert torch_runner.device == "cpu" and ort_runner.device == "cpu"
    with torch_runner, ort_runner:
        a = torch_runner.infer(batch)
        b = ort_runner.infer(batch)
        assert torch_runner.input_shape() == ort_runner.input_shape() == (3, 32, 32)
        info = ort_runner.describe()
    assert a.shape == b.shape == (6, 10)
    assert a.dtype == np.float32 and b.dtype == np.float32
    assert np.abs(a).max() > 1.0
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-3)
    assert info["providers"] == ["CPUExecutionProvider"]
    assert ort_runner.session is None and torch_runner.model is None  # closed on exit


def test_onnxruntime_int8_runner_follows_fp32(params, artifacts, batch) -> None:
    with (
        create_runner("onnxruntime", "fp32", artifacts["fp32"], params) as r32,
        create_runner("onnxruntime", "int8", artifacts["int8"], params) as r8,
    ):
        ref, got = r32.infer(batch), r8.infer(batch)
    assert got.shape == (6, 10) and got.dtype == np.float32
    assert not np.array_equal(got, ref)  # really the quantized model
    np.testing.assert_allclose(got, ref, rtol=0, atol=0.1 * np.abs(ref).max())


def test_pytorch_int8_is_unsupported(params, artifacts) -> None:
    with pytest.raises(UnsupportedCombination, match="pytorch has no INT8 path here.*Q/DQ ONNX"):
        create_runner("pytorch", "int8", artifacts["int8"], params)


def test_pytorch_fp16_on_cpu_is_unavailable(params, artifacts) -> None:
    with pytest.raises(BackendUnavailable, match=r"pytorch: FP16 inference is run on CUDA only \(device=cpu\)"):
        create_runner("pytorch", "fp16", artifacts["fp16"], params)


def test_onnxruntime_fp16_on_cpu_is_unavailable(params, artifacts) -> None:
    with pytest.raises(BackendUnavailable, match="onnxruntime: FP16 convolutions run on the CUDA provider only"):
        create_runner("onnxruntime", "fp16", artifacts["fp16"], params)


def test_torch_compile_fp32_is_unsupported(params, artifacts) -> None:
    with pytest.raises(UnsupportedCombination, match="torch_compile is run in FP16 only"):
        create_runner("torch_compile", "fp32", artifacts["fp32"], params)


def test_torch_compile_int8_is_unsupported(params, artifacts) -> None:
    with pytest.raises(UnsupportedCombination, match="torch_compile has no INT8 path"):
        create_runner("torch_compile", "int8", artifacts["int8"], params)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tensorrt_without_tensorrt_is_unavailable(params, artifacts, precision) -> None:
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is importable here")
    with pytest.raises(BackendUnavailable) as err:
        create_runner("tensorrt", precision, artifacts[precision], params)
    msg = str(err.value)
    assert "TensorRT is not importable" in msg
    assert "install the [gpu] extra" in msg and "TRT_PYTHON" in msg


def test_cuda_params_without_gpu(params, artifacts) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible")
    cuda = dataclasses.replace(params, device="cuda")
    with pytest.raises(BackendUnavailable, match="no CUDA GPU is visible"):
        create_runner("pytorch", "fp32", artifacts["fp32"], cuda)
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(BackendUnavailable, match="install onnxruntime-gpu"):
            create_runner("onnxruntime", "fp32", artifacts["fp32"], cuda)


def test_missing_artifacts(params, artifacts, tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable, match="onnxruntime: no ONNX model given for fp32"):
        create_runner("onnxruntime", "fp32", Artifacts(), params)
    with pytest.raises(BackendUnavailable, match="pytorch: no checkpoint given"):
        create_runner("pytorch", "fp32", Artifacts(), params)
    missing = tmp_path / "fp32.onnx"
    runner = create_runner("onnxruntime", "fp32", Artifacts(onnx=missing), params)
    with pytest.raises(OnnxModelError, match=f"{missing} is missing"):
        runner.open()
    missing.write_bytes(b"garbage")
    with pytest.raises(OnnxModelError, match=f"{missing}: ONNX Runtime cannot load it"):
        runner.open()


# -- timing through runners -----------------------------------------------------------------


@pytest.mark.parametrize("backend", ["pytorch", "onnxruntime"])
def test_runner_ops_are_timed_on_the_host_clock(params, artifacts, backend: str) -> None:
    with create_runner(backend, "fp32", artifacts["fp32"], params) as runner:
        for op in (runner.compute_op(2, cuda_graph=False), runner.end_to_end_op(2)):
            assert op.stream is None and op.cuda_graph is False
            assert "host clock" in op.timed
            t = measure(op, warmup=1, iterations=5, max_seconds=10.0)
            op.close()
            assert t.samples_ms.shape == (5,) and (t.samples_ms > 0).all()
            assert t.span_ms == pytest.approx(float(t.samples_ms.sum()))
            assert t.clock == "host perf_counter, synchronised each iteration"
            s = summarize(t, 2)
            assert s["latency_ms_p50"] <= s["latency_ms_p90"] <= s["latency_ms_p99"]
            assert s["latency_ms_min"] <= s["latency_ms_p50"]
            assert s["iterations"] == 5
            assert s["throughput_ips"] == pytest.approx(2 * 5 / (t.span_ms / 1000.0), abs=0.06)
        assert runner.pipelined_op(2, 2) is None
        assert runner.concurrent_op(2, 2, cuda_graph=False) is None


def test_bench_input_is_deterministic_and_not_zero() -> None:
    a, b = bench_input(3, (3, 8, 8)), bench_input(3, (3, 8, 8))
    assert a.shape == (3, 3, 8, 8) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert np.count_nonzero(a) == a.size
    assert not np.array_equal(bench_input(4, (3, 8, 8))[:3], a)  # seeded by batch size


# -- timing.measure / summarize with fake ops -----------------------------------------------


class SleepOp:
    """A TimedOp whose step sleeps a known time; counts calls."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.steps = 0
        self.syncs = 0

    def step(self) -> None:
        self.steps += 1
        time.sleep(self.seconds)

    def sync(self) -> None:
        self.syncs += 1

    def op(self) -> TimedOp:
        return TimedOp(self.step, self.sync, None, "fake")


def test_measure_host_clock_matches_sleep() -> None:
    fake = SleepOp(0.002)
    t = measure(fake.op(), warmup=2, iterations=30, max_seconds=10.0)
    assert len(t.samples_ms) == 30  # well within the budget: all iterations
    p50 = float(np.median(t.samples_ms))
    assert 2.0 <= p50 < 6.0, p50  # time.sleep never returns early; allow scheduling noise
    assert t.samples_ms.min() >= 2.0
    assert fake.steps == 3 + 2 + 30  # probe, warm-up, timed
    assert fake.syncs >= 30 + 3  # synchronised around every probe and timed step
    s = summarize(t, batch_size=8)
    assert s["latency_ms_p50"] == pytest.approx(p50, abs=1e-5)
    assert s["throughput_ips"] == pytest.approx(8 * 30 / (t.span_ms / 1000), abs=0.06)
    assert s["throughput_ips"] <= 8 / 0.002  # each batch of 8 takes at least 2 ms


def test_measure_iterations_bounded_by_max_seconds() -> None:
    fake = SleepOp(0.002)
    t0 = time.perf_counter()
    t = measure(fake.op(), warmup=1000, iterations=100_000, max_seconds=0.06)
    wall = time.perf_counter() - t0
    n = len(t.samples_ms)
    assert 10 <= n <= 30, n  # ~ 60 ms / 2 ms, never fewer than 10
    warmup_steps = fake.steps - 3 - n
    assert 1 <= warmup_steps <= 10, warmup_steps  # a third of the budget, not 1000 steps
    assert wall < 2.0  # generous: the machine may be busy


def test_measure_runs_at_least_ten_iterations_when_budget_is_tiny() -> None:
    fake = SleepOp(0.002)
    t = measure(fake.op(), warmup=0, iterations=50, max_seconds=0.001)
    assert len(t.samples_ms) == 10
    assert fake.steps == 3 + 0 + 10  # warmup=0: probe and timed steps only


def test_measure_fewer_iterations_than_budget() -> None:
    fake = SleepOp(0.0)
    t = measure(fake.op(), warmup=3, iterations=7, max_seconds=5.0)
    assert len(t.samples_ms) == 7
    assert fake.steps == 3 + 3 + 7


def test_summarize_hand_built_timing() -> None:
    samples = np.array([1.0, 2.0, 3.0, 4.0, 100.0, 2.5, 3.5])
    t = Timing(samples, span_ms=250.0, clock="test clock")
    s = summarize(t, batch_size=8)
    for q in (50, 90, 99):
        assert s[f"latency_ms_p{q}"] == pytest.approx(np.percentile(samples, q), abs=1e-5)
    assert s["latency_ms_p50"] == 3.0
    assert s["latency_ms_mean"] == pytest.approx(samples.mean(), abs=1e-5)
    assert s["latency_ms_min"] == 1.0
    assert s["throughput_ips"] == pytest.approx(8 * 7 / 0.25)  # 224.0: span, not the sum
    assert s["iterations"] == 7
    assert s["clock"] == "test clock"


def test_measure_span_counts_all_steps() -> None:
    fake = SleepOp(0.002)
    ms = measure_span(fake.op(), warmup=2, iterations=5)
    assert fake.steps == 7
    assert 10.0 <= ms < 500.0  # 5 timed sleeps of 2 ms, plus scheduling noise


def test_span_budgeted_bounds_steps_by_time() -> None:
    fake = SleepOp(0.002)
    ms, n = span_budgeted(fake.op(), warmup=1000, iterations=100_000, max_seconds=0.06)
    assert 10 <= n <= 30, n  # ~ 60 ms / 2 ms
    assert 2.0 * n <= ms < 2.0 * n + 500.0
    assert fake.steps - 3 - n <= 10  # probe, a warm-up of a third of the budget, timed
    fake = SleepOp(0.0)
    ms, n = span_budgeted(fake.op(), warmup=2, iterations=7, max_seconds=5.0)
    assert n == 7 and fake.steps == 3 + 2 + 7
    fake = SleepOp(0.002)
    _, n = span_budgeted(fake.op(), warmup=0, iterations=50, max_seconds=0.001)
    assert n == 10  # never fewer than ten
    _, n = span_budgeted(SleepOp(0.002).op(), warmup=0, iterations=50, max_seconds=0.001, min_steps=40)
    assert n == 40  # or than min_steps


def test_concurrent_row_counts_every_copy(monkeypatch) -> None:
    from stages import benchmark

    class FakeRunner:
        backend = "tensorrt"

        def __init__(self) -> None:
            self.fake = SleepOp(0.001)
            self.asked: tuple[int, int, bool] | None = None

        def concurrent_op(self, batch: int, contexts: int, cuda_graph: bool) -> TimedOp:
            self.asked = (batch, contexts, cuda_graph)
            op = self.fake.op()
            op.cleanup.append(lambda: setattr(self, "closed", True))
            return op

    monkeypatch.setattr(benchmark, "span_budgeted", lambda op, w, i, s: (op.step(), (250.0, 20))[1])
    p = params_from_dict(compose([*TINY, "bench.contexts=3", "bench.cuda_graph=true"]))
    runner = FakeRunner()
    (row,) = benchmark.concurrent_rows(runner, 64, p)  # type: ignore[arg-type]
    assert runner.asked == (64, 3, True) and runner.closed  # type: ignore[attr-defined]
    assert row["mode"] == "concurrent" and row["contexts"] == 3 and row["iterations"] == 20
    assert row["throughput_ips"] == 64 * 3 * 20 / 0.25  # every copy's batch, over the span
    head = benchmark.headline([row])
    assert head["concurrent_throughput_ips_max"] == 15360.0 and head["concurrent_contexts"] == 3


def test_timed_op_close_runs_cleanup_once_in_reverse() -> None:
    calls: list[str] = []
    op = TimedOp(lambda: None, lambda: None, None, "x", cleanup=[lambda: calls.append("a"), lambda: calls.append("b")])
    op.close()
    op.close()
    assert calls == ["b", "a"]


def test_measure_uses_events_only_for_stream_ops(monkeypatch) -> None:
    seen = []
    monkeypatch.setattr(timing, "_event_times", lambda op, n: seen.append(n) or Timing(np.ones(n), n, "ev"))
    fake = SleepOp(0.0)
    t = measure(TimedOp(fake.step, fake.sync, 1234, "stream op"), warmup=1, iterations=12, max_seconds=5.0)
    assert seen == [12] and t.clock == "ev"
