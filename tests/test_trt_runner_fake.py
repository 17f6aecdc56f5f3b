"""The TensorRT runner and its benchmark modes on a fake TensorRT and a fake CUDA (no GPU).

The fakes keep device memory as numpy arrays keyed by pointer and run an "engine" whose
logits are a known function of its input, so these tests check the data flow the GPU tests
cannot isolate: which buffers are bound and copied, batch splitting and padding, the pipelined
and concurrent modes' use of the runner's public methods, and that every buffer, stream and
event is released.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from stages.lib.core import cuda
from stages.lib.runners import trt_modes, trt_runner
from stages.lib.trt import common, engine

CLASSES = 4
CHW = (3, 4, 4)
MEMORY: dict[int, np.ndarray] = {}  # pointer -> bytes, host (pinned) and device alike
_ptrs = itertools.count(1 << 20, 1 << 20)


class _Alloc:
    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self.ptr = next(_ptrs)
        MEMORY[self.ptr] = np.zeros(max(nbytes, 1), np.uint8)

    def close(self) -> None:
        MEMORY.pop(self.ptr, None)
        self.ptr = 0


class FakePinned(_Alloc):
    def __init__(self, shape: tuple[int, ...], dtype: Any) -> None:
        super().__init__(int(np.prod(shape)) * np.dtype(dtype).itemsize)
        self.array = MEMORY[self.ptr][: self.nbytes].view(dtype).reshape(shape)


class FakeStream:
    open = 0

    def __init__(self) -> None:
        FakeStream.open += 1
        self.ptr = next(_ptrs)
        self.handle = self.ptr

    def synchronize(self) -> None:
        pass

    def wait(self, event: Any) -> None:
        assert event.handle is not None

    def close(self) -> None:
        FakeStream.open -= 1


class FakeEvent:
    def __init__(self, timing: bool = True) -> None:
        self.handle = object()

    def record(self, stream: int) -> None:
        assert isinstance(stream, int)

    def close(self) -> None:
        self.handle = None


class FakeGraph:
    def __init__(self, stream: FakeStream, enqueue: Any) -> None:
        self.enqueue = enqueue  # a real capture records the work without running it

    def launch(self, stream: FakeStream) -> None:
        self.enqueue()

    def close(self) -> None:
        self.enqueue = None


def _copy(dst: int, src: int, nbytes: int, stream: Any = None) -> None:
    MEMORY[dst][:nbytes] = MEMORY[src][:nbytes]


# -- the fake TensorRT: logits[c] = sum of the image's pixels * (c + 1) ----------------------


class FakeContext:
    def __init__(self, eng: FakeEngine) -> None:
        self.eng, self.shape, self.addr, self.profile, self.runs = eng, None, {}, None, 0

    def set_optimization_profile_async(self, k: int, stream: int) -> None:
        self.profile = k

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        lo, _, hi = self.eng.profiles[self.profile]
        if not lo <= shape[0] <= hi:
            return False
        self.shape = shape
        return True

    def set_tensor_address(self, name: str, ptr: int) -> None:
        self.addr[name] = ptr

    def execute_async_v3(self, stream: int) -> bool:
        b = self.shape[0]
        n = b * int(np.prod(CHW))
        dtype = np.uint8 if self.eng.raw else np.float32
        x = MEMORY[self.addr["input"]][: n * np.dtype(dtype).itemsize].view(dtype).reshape(b, -1).astype(np.float32)
        out = x.sum(1, keepdims=True) * np.arange(1, CLASSES + 1, dtype=np.float32)
        MEMORY[self.addr["logits"]][: out.nbytes] = out.astype(np.float32).view(np.uint8).reshape(-1)
        self.runs += 1
        return True


class FakeEngine:
    def __init__(self, profiles: list[tuple[int, int, int]], v2: bool, raw: bool = False) -> None:
        self.profiles, self.num_io_tensors, self.contexts, self.raw = profiles, 2, [], raw
        self.dims = (CHW[1], CHW[2], CHW[0]) if raw else CHW  # raw-pixel engines take uint8 NHWC
        self.num_optimization_profiles = len(profiles)
        if v2:
            self.device_memory_size_v2 = 3 * 2**20
        else:
            self.device_memory_size = 2 * 2**20

    def get_tensor_name(self, i: int) -> str:
        return ["input", "logits"][i]

    def get_tensor_mode(self, name: str) -> str:
        return "in" if name == "input" else "out"

    def get_tensor_dtype(self, name: str) -> str:
        return "u8" if self.raw and name == "input" else "f32"

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (-1, *self.dims) if name == "input" else (-1, CLASSES)

    def get_tensor_profile_shape(self, name: str, k: int) -> list[tuple[int, ...]]:
        return [(b, *self.dims) for b in self.profiles[k]]

    def create_execution_context(self) -> FakeContext:
        self.contexts.append(FakeContext(self))
        return self.contexts[-1]


def _fake_trt(profiles: list[tuple[int, int, int]], v2: bool = True, raw: bool = False) -> Any:
    engines: list[FakeEngine] = []

    class Runtime:
        def __init__(self, logger: Any) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, plan: bytes) -> FakeEngine:
            engines.append(FakeEngine(profiles, v2, raw))
            return engines[-1]

    return SimpleNamespace(
        __version__="fake",
        Runtime=Runtime,
        TensorIOMode=SimpleNamespace(INPUT="in", OUTPUT="out"),
        float32="f32",
        float16="f16",
        int8="i8",
        uint8="u8",
        int32="i32",
        bool="b",
        engines=engines,
    )


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    def make(profiles: list[tuple[int, int, int]], v2: bool = True, raw: bool = False) -> trt_runner.TrtRunner:
        trt = _fake_trt(profiles, v2, raw)
        for name, fake in {
            "Stream": FakeStream,
            "DeviceBuffer": _Alloc,
            "PinnedArray": FakePinned,
            "Event": FakeEvent,
            "Graph": FakeGraph,
            "copy_htod_async": _copy,
            "copy_dtoh_async": _copy,
        }.items():
            monkeypatch.setattr(cuda, name, fake)
        monkeypatch.setattr(common, "import_tensorrt", lambda: trt)
        monkeypatch.setattr(common, "make_logger", lambda trt: "logger")
        monkeypatch.setattr(trt_runner.fingerprint, "probe", lambda: {})
        (tmp_path / engine.ENGINE_FILE).write_bytes(b"plan")
        r = trt_runner.TrtRunner("fp32", tmp_path, {"status": "built"}, CHW[1])
        r.trt_fake = trt
        return r

    MEMORY.clear()
    FakeStream.open = 0
    return make


def _expected(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1).sum(1, keepdims=True) * np.arange(1, CLASSES + 1, dtype=np.float32)


@pytest.mark.parametrize("n", [1, 5, 16, 37])
def test_infer_returns_each_image_s_logits_across_profiles_and_padding(runner: Any, n: int) -> None:
    r = runner([(1, 1, 1), (4, 8, 16)])
    x = np.random.default_rng(n).standard_normal((n, *CHW), dtype=np.float32)
    with r:
        got = r.infer(x)
    np.testing.assert_allclose(got, _expected(x), rtol=1e-5)
    assert not MEMORY and FakeStream.open == 0  # every buffer and stream released


def test_compute_and_end_to_end_ops_run_the_bound_context(runner: Any) -> None:
    r = runner([(1, 1, 1), (2, 8, 16)])
    with r:
        for graph in (False, True):
            op = r.compute_op(8, cuda_graph=graph)
            assert op.cuda_graph is graph and op.stream == r.stream.ptr
            op.step()
            op.close()
        op = r.end_to_end_op(8)
        op.step()
        slot = r.slot(8)
        np.testing.assert_allclose(slot.h_out.array[:8], _expected(slot.h_in.array[:8]), rtol=1e-5)
        assert "pinned float32 host input" in op.timed
    assert not MEMORY


def test_pipelined_mode_fills_every_buffer_set_with_its_own_logits(runner: Any) -> None:
    r = runner([(1, 1, 1), (2, 8, 16)])
    with r:
        op = r.pipelined_op(8, streams=3)
        pipe = op.cleanup[0].__self__
        for _ in range(7):
            op.step()
        op.sync()
        assert len(pipe.bufs) == 3
        for buf in pipe.bufs:
            np.testing.assert_allclose(buf.h_out.array, _expected(buf.h_in.array), rtol=1e-5)
        assert r.slot(8).context.runs == 7  # one context, one execute per step
        op.close()
    assert not MEMORY and FakeStream.open == 0


def test_concurrent_mode_runs_each_engine_copy_on_its_own_stream(runner: Any) -> None:
    r = runner([(1, 1, 1), (2, 8, 16)])
    with r:
        for graph in (False, True):
            op = r.concurrent_op(8, contexts=3, cuda_graph=graph)
            assert op.cuda_graph is graph and "3 engine copies" in op.timed
            conc = op.cleanup[0].__self__
            op.step()
            op.step()
            assert [c.context.runs for c in conc.copies] == [3, 3, 3]  # one warm-up + two steps
            assert len({c.stream.ptr for c in conc.copies}) == 3
            op.close()
        assert r.concurrent_op(8, contexts=1, cuda_graph=True) is None
    assert not MEMORY and FakeStream.open == 0
    assert len(r.trt_fake.engines) == 1 + 2 * 3  # the runner's engine and two rounds of copies


@pytest.mark.parametrize(("v2", "mb"), [(True, 3.0), (False, 2.0)])
def test_describe_reads_activation_memory_under_either_api_name(runner: Any, v2: bool, mb: float) -> None:
    r = runner([(1, 1, 1)], v2=v2)
    with r:
        info = r.describe()
    assert info["activation_memory_mb"] == mb and info["profiles"] == [[1, 1, 1]]


def test_a_batch_outside_the_profiles_is_a_clear_error(runner: Any) -> None:
    from stages.lib.core.errors import EngineError

    r = runner([(1, 1, 1), (2, 8, 16)])
    with r, pytest.raises(EngineError, match=r"batch size 32 is outside every optimization profile"):
        r.compute_op(32, cuda_graph=False)


def test_modes_use_only_the_runner_s_public_methods() -> None:
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(trt_modes))
    own = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    private = sorted(
        {
            n.attr
            for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and n.attr.startswith("_") and not n.attr.startswith("__")
        }
        - own
    )
    assert private == [], f"trt_modes reaches into private attributes: {private}"


def test_a_raw_pixel_engine_takes_uint8_nhwc_in_every_mode(runner: Any) -> None:
    r = runner([(1, 1, 1), (2, 8, 16)], raw=True)
    x = np.random.default_rng(0).integers(0, 256, (5, CHW[1], CHW[2], CHW[0]), dtype=np.uint8)
    with r:
        assert r.input_spec().dtype == "uint8" and r.describe()["input_dtype"] == "uint8"
        np.testing.assert_allclose(r.infer(x), _expected(x.astype(np.float32)), rtol=1e-5)
        bench = r.bench_batch(8)
        assert bench.dtype == np.uint8 and bench.shape == (8, CHW[1], CHW[2], CHW[0]) and bench.any()
        for op in (r.end_to_end_op(8), r.pipelined_op(8, streams=2), r.concurrent_op(8, 2, cuda_graph=True)):
            op.step()
            op.sync()
            op.close()
        assert "pinned uint8 host input" in r.end_to_end_op(8).timed
    assert FakeStream.open == 0
