"""TensorRT runner: cuda-python + numpy + tensorrt only (no torch).

Named I/O tensors and ``execute_async_v3`` on an explicit stream; pinned host buffers; one
execution context per optimization profile, picked by batch size; CUDA-graph capture for the
compute op. The pipelined and concurrent benchmark modes (:mod:`.trt_modes`) build on this
runner's public methods.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core import cuda
from ..core.errors import BackendUnavailable, EngineError
from ..core.io import read_json
from ..core.params import Params
from ..core.timing import TimedOp
from ..data.inputs import InputSpec
from ..trt import common, fingerprint
from ..trt.engine import BUILD_FILE, ENGINE_FILE, LAYERS_FILE, Engine
from .base import Artifacts, Runner

log = logging.getLogger(__name__)


def create(backend: str, precision: str, artifacts: Artifacts, params: Params) -> Runner:
    common.import_tensorrt()
    if artifacts.engine_dir is None:
        raise BackendUnavailable("tensorrt: no engine folder given")
    build_file = Path(artifacts.engine_dir) / BUILD_FILE
    if not build_file.is_file():
        raise EngineError(f"{build_file} is missing: run `dvc repro build@{precision}`")
    build = read_json(build_file)
    if build.get("status") != "built":
        raise BackendUnavailable(f"tensorrt: engine not built ({build.get('reason')})")
    return TrtRunner(precision, Path(artifacts.engine_dir), build, params.model.image_size)


@dataclass
class Slot:
    """An execution context on one profile, with buffers for that profile's max batch."""

    context: Any
    profile: int
    max_batch: int
    d_in: cuda.DeviceBuffer
    d_out: cuda.DeviceBuffer
    h_in: cuda.PinnedArray
    h_out: cuda.PinnedArray

    def close(self) -> None:
        for buf in (self.d_in, self.d_out, self.h_in, self.h_out):
            buf.close()


class TrtRunner(Runner):
    backend = "tensorrt"

    def __init__(self, precision: str, engine_dir: Path, build: dict[str, Any], image_size: int) -> None:
        super().__init__(precision, "cuda")
        self.engine_path = engine_dir / ENGINE_FILE
        self.build = build
        self.image_size = image_size
        self.slots: dict[int, Slot] = {}
        self.engine: Engine | None = None
        self.stream: cuda.Stream | None = None
        self.spec: InputSpec | None = None  # the engine's input, read by open()

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        trt = common.import_tensorrt()
        fingerprint.check_compatible(str(self.engine_path), self.build.get("fingerprint", {}), fingerprint.probe())
        self.trt = trt
        self.engine = Engine.load(trt, common.make_logger(trt), self.engine_path)
        self.spec = InputSpec.from_dims(self.engine.in_dtype, self.engine.input_dims, where=str(self.engine_path))
        self.stream = cuda.Stream()

    def close(self) -> None:
        for slot in self.slots.values():
            slot.close()
        self.slots.clear()
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    def input_shape(self) -> tuple[int, int, int]:
        return self.input_spec().shape

    def input_spec(self) -> InputSpec:
        """The engine's input (raw uint8 NHWC, float16 or float32 NCHW) once open."""
        return self.spec or InputSpec("float32", "NCHW", self.image_size)

    @property
    def loaded(self) -> Engine:
        """The open engine (raises if the runner is not open)."""
        if self.engine is None:
            raise EngineError(f"{self.engine_path}: the runner is not open")
        return self.engine

    # -- contexts and buffers ----------------------------------------------------------------

    def slot(self, batch: int) -> Slot:
        """The context (and buffers) of the profile that serves ``batch``; made once per profile."""
        eng = self.loaded
        k = eng.profile_for(batch)
        if k not in self.slots:
            assert self.stream is not None
            max_b = eng.profiles[k][2]
            shape_in, shape_out = (max_b, *self.input_shape()), (max_b, eng.num_classes)
            self.slots[k] = Slot(
                eng.context(k, self.stream),
                k,
                max_b,
                cuda.DeviceBuffer(eng.input_nbytes(max_b, self.input_shape())),
                cuda.DeviceBuffer(eng.output_nbytes(max_b)),
                cuda.PinnedArray(shape_in, eng.in_dtype),
                cuda.PinnedArray(shape_out, eng.out_dtype),
            )
        return self.slots[k]

    def bound_slot(self, batch: int) -> Slot:
        """:meth:`slot` with ``batch`` bound to the slot's own device buffers."""
        slot = self.slot(batch)
        self.loaded.bind(slot.context, batch, self.input_shape(), slot.d_in.ptr, slot.d_out.ptr)
        return slot

    # -- inference -------------------------------------------------------------------------

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Logits for any number of images: split into batches the profiles hold (and padded
        up to a profile's minimum where none holds the remainder)."""
        plan = plan_batches(int(x.shape[0]), self.loaded.profiles)
        outs = [self._infer_one(x[start:stop], run) for start, stop, run in plan]
        return np.concatenate(outs) if outs else np.zeros((0, self.loaded.num_classes), np.float32)

    def _infer_one(self, x: np.ndarray, run: int) -> np.ndarray:
        n = int(x.shape[0])
        if run > n:  # below every profile's minimum: pad with zero images, drop their logits
            x = np.concatenate([x, np.zeros((run - n, *x.shape[1:]), x.dtype)])
        return self._infer_batch(x)[:n]

    def _infer_batch(self, x: np.ndarray) -> np.ndarray:
        b, eng, stream = int(x.shape[0]), self.loaded, self.stream
        assert stream is not None
        slot = self.bound_slot(b)
        h_in = slot.h_in.array[:b]
        h_in[...] = x  # converts to the engine's input dtype (fp16 I/O engines)
        cuda.copy_htod_async(slot.d_in.ptr, slot.h_in.ptr, h_in.nbytes, stream)
        eng.execute(slot.context, stream)
        cuda.copy_dtoh_async(slot.h_out.ptr, slot.d_out.ptr, eng.output_nbytes(b), stream)
        stream.synchronize()
        return slot.h_out.array[:b].astype(np.float32)

    def compute_op(self, batch_size: int, cuda_graph: bool) -> TimedOp:
        eng, stream = self.loaded, self.stream
        assert stream is not None
        slot = self.bound_slot(batch_size)
        slot.h_in.array[:batch_size] = self.bench_batch(batch_size)
        cuda.copy_htod_async(slot.d_in.ptr, slot.h_in.ptr, slot.h_in.array[:batch_size].nbytes, stream)
        eng.execute(slot.context, stream)  # once before capture: lets TensorRT finish lazy setup
        stream.synchronize()
        step = lambda: eng.execute(slot.context, stream)  # noqa: E731
        graph = _capture(stream, step) if cuda_graph else None
        if graph is not None:
            step = lambda: graph.launch(stream)  # noqa: E731
        op = TimedOp(
            step,
            stream.synchronize,
            stream.ptr,
            "execute_async_v3 on device-resident input/output" + (", replayed as a CUDA graph" if graph else ""),
            cuda_graph=graph is not None,
        )
        if graph is not None:
            op.cleanup.append(graph.close)
        return op

    def end_to_end_op(self, batch_size: int) -> TimedOp:
        eng, stream = self.loaded, self.stream
        assert stream is not None
        slot = self.bound_slot(batch_size)
        slot.h_in.array[:batch_size] = self.bench_batch(batch_size)
        in_bytes = slot.h_in.array[:batch_size].nbytes
        out_bytes = eng.output_nbytes(batch_size)

        def step() -> None:
            cuda.copy_htod_async(slot.d_in.ptr, slot.h_in.ptr, in_bytes, stream)
            eng.execute(slot.context, stream)
            cuda.copy_dtoh_async(slot.h_out.ptr, slot.d_out.ptr, out_bytes, stream)

        dtype = np.dtype(eng.in_dtype).name
        return TimedOp(
            step,
            stream.synchronize,
            None,
            f"host clock: pinned {dtype} host input -> H2D -> execute -> D2H, synchronised each iteration",
        )

    def pipelined_op(self, batch_size: int, streams: int) -> TimedOp | None:
        """Copies on their own streams overlap the previous/next batch's compute."""
        from .trt_modes import pipelined_op

        return pipelined_op(self, batch_size, max(2, streams))

    def concurrent_op(self, batch_size: int, contexts: int, cuda_graph: bool) -> TimedOp | None:
        """``contexts`` copies of the engine, each with its own context, stream and device I/O,
        enqueued together: kernels of one copy can fill the SMs another leaves idle."""
        if contexts < 2:
            return None
        from .trt_modes import concurrent_op

        return concurrent_op(self, batch_size, contexts, cuda_graph)

    # -- extras ----------------------------------------------------------------------------

    def layer_profile(self, batch_size: int, iterations: int) -> list[dict[str, Any]]:
        """Mean time per layer over ``iterations`` synchronous runs (TensorRT's IProfiler)."""
        trt, eng, stream = self.trt, self.loaded, self.stream
        assert stream is not None
        slot = self.bound_slot(batch_size)
        totals: dict[str, float] = {}

        class _Profiler(trt.IProfiler):  # type: ignore[misc,name-defined]
            def __init__(self) -> None:
                trt.IProfiler.__init__(self)

            def report_layer_time(self, name: str, ms: float) -> None:
                totals[name] = totals.get(name, 0.0) + ms

        self._profiler = _Profiler()  # must outlive every enqueue on this context
        slot.context.profiler = self._profiler
        for _ in range(iterations):
            eng.execute(slot.context, stream)
            stream.synchronize()
        layers_file = self.engine_path.parent / LAYERS_FILE
        precision = {r["name"]: r["precision"] for r in read_json(layers_file)} if layers_file.is_file() else {}
        return sorted(
            ({"layer": n, "precision": precision.get(n, "?"), "ms_mean": t / iterations} for n, t in totals.items()),
            key=lambda r: -r["ms_mean"],
        )

    def describe(self) -> dict[str, Any]:
        eng = self.loaded
        return {
            "tensorrt": self.trt.__version__,
            "engine": str(self.engine_path),
            "engine_mb": round(self.engine_path.stat().st_size / 2**20, 2),
            "activation_memory_mb": eng.activation_memory_mb(),
            "profiles": [list(p) for p in eng.profiles],
            "input_dtype": np.dtype(eng.in_dtype).name,
            "input": self.input_spec().describe(),
        }


def _capture(stream: cuda.Stream, step: Any) -> cuda.Graph | None:
    """``step`` captured as a CUDA graph on ``stream``, or None (logged) where capture fails."""
    try:
        return cuda.Graph(stream, step)
    except EngineError as exc:
        log.warning("CUDA graph capture failed (%s); timing without a graph", exc)
        return None


def plan_batches(n: int, profiles: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """(start, stop, batch to run) covering ``n`` images with batches some profile holds.

    Chunks are the largest profile maximum; a remainder no profile holds runs padded up to
    the smallest profile minimum above it.
    """
    if not profiles:
        raise EngineError("the engine has no optimization profiles")
    hi = max(p[2] for p in profiles)
    plan = []
    for start in range(0, n, hi):
        size = min(hi, n - start)
        held = any(lo <= size <= top for lo, _, top in profiles)
        plan.append((start, start + size, size if held else min(lo for lo, _, _ in profiles if lo > size)))
    return plan
