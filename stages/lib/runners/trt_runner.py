"""TensorRT runner: cuda-python + numpy + tensorrt only (no torch).

Named I/O tensors and ``execute_async_v3`` on an explicit stream; pinned host buffers;
one execution context per optimization profile, picked by batch size; CUDA-graph capture
for the compute op; a copy/compute-overlapped pipeline for end-to-end throughput; several
engine instances computing at once on their own streams.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import cuda
from ..errors import BackendUnavailable, EngineError
from ..io import read_json
from ..params import Params
from ..timing import TimedOp
from ..trt import common, fingerprint
from .base import Artifacts, Runner, bench_input

log = logging.getLogger(__name__)

ENGINE_FILE = "model.engine"
BUILD_FILE = "build.json"
LAYERS_FILE = "layers.json"


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
class _Slot:
    """An execution context on one profile, with buffers for that profile's max batch."""

    context: Any
    profile: int
    max_batch: int
    d_in: cuda.DeviceBuffer
    d_out: cuda.DeviceBuffer
    h_in: cuda.PinnedArray
    h_out: cuda.PinnedArray


class TrtRunner(Runner):
    backend = "tensorrt"

    def __init__(self, precision: str, engine_dir: Path, build: dict[str, Any], image_size: int) -> None:
        super().__init__(precision, "cuda")
        self.engine_path = engine_dir / ENGINE_FILE
        self.build = build
        self.image_size = image_size
        self.slots: dict[int, _Slot] = {}
        self._closers: list[Any] = []

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        trt = common.import_tensorrt()
        here = fingerprint.probe()
        fingerprint.check_compatible(str(self.engine_path), self.build.get("fingerprint", {}), here)
        if not self.engine_path.is_file():
            raise EngineError(f"{self.engine_path} is missing: run `dvc repro`")
        self.trt = trt
        self.logger = common.make_logger(trt)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self.engine is None:
            raise EngineError(
                f"{self.engine_path}: TensorRT {trt.__version__} cannot load it "
                "(corrupt, or built by another version): run `dvc repro`"
            )
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise EngineError(f"{self.engine_path}: expected one input and one output, got {names}")
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.in_dtype = common.dtype_to_numpy(trt, self.engine.get_tensor_dtype(self.input_name))
        self.out_dtype = common.dtype_to_numpy(trt, self.engine.get_tensor_dtype(self.output_name))
        self.num_classes = int(self.engine.get_tensor_shape(self.output_name)[-1])
        self.profiles: list[tuple[int, int, int]] = []
        for k in range(self.engine.num_optimization_profiles):
            lo, opt, hi = (int(s[0]) for s in self.engine.get_tensor_profile_shape(self.input_name, k))
            self.profiles.append((lo, opt, hi))
        self.stream = cuda.Stream()

    def close(self) -> None:
        for fn in reversed(self._closers):
            fn()
        self._closers.clear()
        for slot in self.slots.values():
            for buf in (slot.d_in, slot.d_out, slot.h_in, slot.h_out):
                buf.close()
        self.slots.clear()
        if getattr(self, "stream", None) is not None:
            self.stream.close()
            self.stream = None  # type: ignore[assignment]
        self.engine = None

    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.image_size, self.image_size)

    # -- profiles and buffers --------------------------------------------------------------

    def profile_for(self, batch: int) -> int:
        """The profile whose range holds ``batch``, preferring the closest opt shape."""
        fits = [k for k, (lo, _, hi) in enumerate(self.profiles) if lo <= batch <= hi]
        if not fits:
            ranges = ", ".join(f"[{lo}..{hi}]" for lo, _, hi in self.profiles)
            raise EngineError(
                f"batch size {batch} is outside every optimization profile of "
                f"{self.engine_path} ({ranges}): adjust build.profiles"
            )
        return min(fits, key=lambda k: (abs(self.profiles[k][1] - batch), k))

    def _slot(self, batch: int) -> _Slot:
        k = self.profile_for(batch)
        if k not in self.slots:
            ctx = self.engine.create_execution_context()
            if ctx is None:
                raise EngineError(f"{self.engine_path}: could not create an execution context")
            ctx.set_optimization_profile_async(k, self.stream.ptr)
            max_b = self.profiles[k][2]
            shape_in = (max_b, *self.input_shape())
            shape_out = (max_b, self.num_classes)
            slot = _Slot(
                ctx,
                k,
                max_b,
                cuda.DeviceBuffer(_nbytes(shape_in, self.in_dtype)),
                cuda.DeviceBuffer(_nbytes(shape_out, self.out_dtype)),
                cuda.PinnedArray(shape_in, self.in_dtype),
                cuda.PinnedArray(shape_out, self.out_dtype),
            )
            self.slots[k] = slot
        return self.slots[k]

    def _bind(self, slot: _Slot, batch: int, d_in: int, d_out: int) -> None:
        self._bind_context(slot.context, slot.profile, batch, d_in, d_out)

    def _bind_context(self, ctx: Any, profile: int, batch: int, d_in: int, d_out: int) -> None:
        """Input shape and I/O addresses on any execution context of this engine's plan."""
        if not ctx.set_input_shape(self.input_name, (batch, *self.input_shape())):
            raise EngineError(f"cannot set input shape batch={batch} on profile {profile}")
        ctx.set_tensor_address(self.input_name, d_in)
        ctx.set_tensor_address(self.output_name, d_out)

    def _enqueue(self, slot: _Slot, stream: cuda.Stream) -> None:
        self._execute(slot.context, stream)

    def _execute(self, ctx: Any, stream: cuda.Stream) -> None:
        if not ctx.execute_async_v3(stream.ptr):
            raise EngineError(f"execute_async_v3 failed for {self.engine_path}")

    # -- inference -------------------------------------------------------------------------

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Logits for any number of images: split into batches the profiles hold (and padded
        up to a profile's minimum where none holds the remainder)."""
        plan = plan_batches(int(x.shape[0]), self.profiles)
        outs = [self._infer_one(x[start:stop], run) for start, stop, run in plan]
        return np.concatenate(outs) if outs else np.zeros((0, self.num_classes), np.float32)

    def _infer_one(self, x: np.ndarray, run: int) -> np.ndarray:
        n = int(x.shape[0])
        if run > n:  # below every profile's minimum: pad with zero images, drop their logits
            x = np.concatenate([x, np.zeros((run - n, *x.shape[1:]), x.dtype)])
        return self._infer_batch(x)[:n]

    def _infer_batch(self, x: np.ndarray) -> np.ndarray:
        b = int(x.shape[0])
        slot = self._slot(b)
        self._bind(slot, b, slot.d_in.ptr, slot.d_out.ptr)
        h_in = slot.h_in.array[:b]
        h_in[...] = x  # converts to the engine's input dtype (fp16 I/O engines)
        cuda.copy_htod_async(slot.d_in.ptr, slot.h_in.ptr, h_in.nbytes, self.stream)
        self._enqueue(slot, self.stream)
        out_bytes = b * self.num_classes * np.dtype(self.out_dtype).itemsize
        cuda.copy_dtoh_async(slot.h_out.ptr, slot.d_out.ptr, out_bytes, self.stream)
        self.stream.synchronize()
        return slot.h_out.array[:b].astype(np.float32)

    def compute_op(self, batch_size: int, cuda_graph: bool) -> TimedOp:
        slot = self._slot(batch_size)
        self._bind(slot, batch_size, slot.d_in.ptr, slot.d_out.ptr)
        x = bench_input(batch_size, self.input_shape())
        slot.h_in.array[:batch_size] = x
        cuda.copy_htod_async(slot.d_in.ptr, slot.h_in.ptr, slot.h_in.array[:batch_size].nbytes, self.stream)
        self._enqueue(slot, self.stream)  # once before capture: lets TensorRT finish lazy setup
        self.stream.synchronize()
        step = lambda: self._enqueue(slot, self.stream)  # noqa: E731
        graphed = False
        if cuda_graph:
            try:
                graph = cuda.Graph(self.stream, step)
                step = lambda: graph.launch(self.stream)  # noqa: E731
                graphed = True
            except EngineError as exc:
                log.warning("CUDA graph capture failed (%s); timing without a graph", exc)
        op = TimedOp(
            step,
            self.stream.synchronize,
            self.stream.ptr,
            "execute_async_v3 on device-resident input/output" + (", replayed as a CUDA graph" if graphed else ""),
            cuda_graph=graphed,
        )
        if graphed:
            op.cleanup.append(graph.close)
        return op

    def end_to_end_op(self, batch_size: int) -> TimedOp:
        slot = self._slot(batch_size)
        x = bench_input(batch_size, self.input_shape())
        slot.h_in.array[:batch_size] = x
        self._bind(slot, batch_size, slot.d_in.ptr, slot.d_out.ptr)
        in_bytes = slot.h_in.array[:batch_size].nbytes
        out_bytes = batch_size * self.num_classes * np.dtype(self.out_dtype).itemsize

        def step() -> None:
            cuda.copy_htod_async(slot.d_in.ptr, slot.h_in.ptr, in_bytes, self.stream)
            self._enqueue(slot, self.stream)
            cuda.copy_dtoh_async(slot.h_out.ptr, slot.d_out.ptr, out_bytes, self.stream)

        dtype = np.dtype(self.in_dtype).name
        return TimedOp(
            step,
            self.stream.synchronize,
            None,
            f"host clock: pinned {dtype} host input -> H2D -> execute -> D2H, synchronised each iteration",
        )

    def pipelined_op(self, batch_size: int, streams: int) -> TimedOp | None:
        """Copies on their own streams overlap the previous/next batch's compute."""
        return _Pipeline(self, batch_size, max(2, streams)).op()

    def concurrent_op(self, batch_size: int, contexts: int, cuda_graph: bool) -> TimedOp | None:
        """``contexts`` copies of the engine, each with its own context, stream and device I/O,
        enqueued together: kernels of one copy can fill the SMs another leaves idle."""
        if contexts < 2:
            return None
        return _Concurrent(self, batch_size, contexts, cuda_graph).op()

    # -- extras ----------------------------------------------------------------------------

    def layer_profile(self, batch_size: int, iterations: int) -> list[dict[str, Any]]:
        """Mean time per layer over ``iterations`` synchronous runs (TensorRT's IProfiler)."""
        trt = self.trt
        slot = self._slot(batch_size)
        self._bind(slot, batch_size, slot.d_in.ptr, slot.d_out.ptr)
        totals: dict[str, float] = {}

        class _Profiler(trt.IProfiler):  # type: ignore[misc,name-defined]
            def __init__(self) -> None:
                trt.IProfiler.__init__(self)

            def report_layer_time(self, name: str, ms: float) -> None:
                totals[name] = totals.get(name, 0.0) + ms

        self._profiler = _Profiler()  # must outlive every enqueue on this context
        slot.context.profiler = self._profiler
        for _ in range(iterations):
            self._enqueue(slot, self.stream)
            self.stream.synchronize()
        layers_file = self.engine_path.parent / LAYERS_FILE
        precision = {r["name"]: r["precision"] for r in read_json(layers_file)} if layers_file.is_file() else {}
        return sorted(
            ({"layer": n, "precision": precision.get(n, "?"), "ms_mean": t / iterations} for n, t in totals.items()),
            key=lambda r: -r["ms_mean"],
        )

    def describe(self) -> dict[str, Any]:
        return {
            "tensorrt": self.trt.__version__,
            "engine": str(self.engine_path),
            "engine_mb": round(self.engine_path.stat().st_size / 2**20, 2),
            "activation_memory_mb": round(common.device_memory_size(self.engine) / 2**20, 2),
            "profiles": [list(p) for p in self.profiles],
            "input_dtype": np.dtype(self.in_dtype).name,
        }


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


class _Pipeline:
    """Double/triple-buffered H2D -> execute -> D2H across three streams and one context."""

    def __init__(self, runner: TrtRunner, batch: int, depth: int) -> None:
        self.r, self.b, self.depth = runner, batch, depth
        self.slot = runner._slot(batch)
        rt = cuda._runtime()
        self.rt = rt
        self.copy_in, self.copy_out = cuda.Stream(), cuda.Stream()
        shape_in = (batch, *runner.input_shape())
        shape_out = (batch, runner.num_classes)
        x = bench_input(batch, runner.input_shape())
        self.bufs = []
        for _ in range(depth):
            h_in = cuda.PinnedArray(shape_in, runner.in_dtype)
            h_in.array[...] = x
            self.bufs.append(
                (
                    h_in,
                    cuda.DeviceBuffer(h_in.nbytes),
                    cuda.DeviceBuffer(_nbytes(shape_out, runner.out_dtype)),
                    cuda.PinnedArray(shape_out, runner.out_dtype),
                    [self._event() for _ in range(3)],
                )
            )
        self.i = 0

    def _event(self) -> Any:
        return cuda.check(self.rt.cudaEventCreateWithFlags(self.rt.cudaEventDisableTiming))

    def _wait(self, stream: cuda.Stream, event: Any) -> None:
        cuda.check(self.rt.cudaStreamWaitEvent(stream.handle, event, 0))

    def step(self) -> None:
        h_in, d_in, d_out, h_out, (h2d_done, compute_done, d2h_done) = self.bufs[self.i % self.depth]
        first_use = self.i < self.depth
        r, rt = self.r, self.rt
        if not first_use:  # this slot's input buffer is free once its last compute finished
            self._wait(self.copy_in, compute_done)
        cuda.copy_htod_async(d_in.ptr, h_in.ptr, h_in.nbytes, self.copy_in)
        cuda.check(rt.cudaEventRecord(h2d_done, self.copy_in.handle))
        self._wait(r.stream, h2d_done)
        if not first_use:  # and its output buffer once its last D2H finished
            self._wait(r.stream, d2h_done)
        r._bind(self.slot, self.b, d_in.ptr, d_out.ptr)
        r._enqueue(self.slot, r.stream)
        cuda.check(rt.cudaEventRecord(compute_done, r.stream.handle))
        self._wait(self.copy_out, compute_done)
        cuda.copy_dtoh_async(h_out.ptr, d_out.ptr, h_out.nbytes, self.copy_out)
        cuda.check(rt.cudaEventRecord(d2h_done, self.copy_out.handle))
        self.i += 1

    def sync(self) -> None:
        for s in (self.copy_in, self.r.stream, self.copy_out):
            s.synchronize()

    def close(self) -> None:
        self.sync()
        for h_in, d_in, d_out, h_out, events in self.bufs:
            for buf in (h_in, d_in, d_out, h_out):
                buf.close()
            for e in events:
                cuda.check(self.rt.cudaEventDestroy(e))
        self.copy_in.close()
        self.copy_out.close()

    def op(self) -> TimedOp:
        dtype = np.dtype(self.r.in_dtype).name
        op = TimedOp(
            self.step,
            self.sync,
            None,
            f"host clock over many batches: pinned {dtype} input, H2D / execute / D2H on "
            f"three streams with {self.depth} buffer sets, overlapping copies and compute",
        )
        op.cleanup.append(self.close)
        return op


class _Concurrent:
    """N engine instances on N streams, compute only.

    Each copy is deserialized from the same plan: with dynamic shapes an optimization profile
    serves one context at a time, so copies of the engine (as ``trtexec --streams``) rather
    than contexts of one engine.
    """

    def __init__(self, runner: TrtRunner, batch: int, n: int, cuda_graph: bool) -> None:
        self.r, self.b, self.n = runner, batch, n
        self.k = runner.profile_for(batch)
        plan = runner.engine_path.read_bytes()
        self.copies: list[tuple[Any, Any, cuda.Stream, cuda.DeviceBuffer, cuda.DeviceBuffer]] = []
        self.graphs: list[cuda.Graph] = []
        x = bench_input(batch, runner.input_shape())
        h_in = cuda.PinnedArray((batch, *runner.input_shape()), runner.in_dtype)
        try:
            h_in.array[...] = x
            for _ in range(n):
                engine = runner.runtime.deserialize_cuda_engine(plan)
                ctx = engine.create_execution_context() if engine is not None else None
                if ctx is None:
                    where = f"engine copy {len(self.copies) + 1} of {n}"
                    raise EngineError(f"{runner.engine_path}: could not create {where}")
                stream = cuda.Stream()
                d_in = cuda.DeviceBuffer(h_in.nbytes)
                d_out = cuda.DeviceBuffer(_nbytes((batch, runner.num_classes), runner.out_dtype))
                self.copies.append((engine, ctx, stream, d_in, d_out))
                ctx.set_optimization_profile_async(self.k, stream.ptr)
                runner._bind_context(ctx, self.k, batch, d_in.ptr, d_out.ptr)
                cuda.copy_htod_async(d_in.ptr, h_in.ptr, h_in.nbytes, stream)
                runner._execute(ctx, stream)  # once before capture: lazy setup
                stream.synchronize()
            self.graphed = False
            if cuda_graph:
                try:
                    for _, ctx, stream, _, _ in self.copies:
                        self.graphs.append(cuda.Graph(stream, lambda c=ctx, s=stream: runner._execute(c, s)))
                    self.graphed = True
                except EngineError as exc:
                    log.warning("CUDA graph capture failed (%s); concurrent run without graphs", exc)
                    self._close_graphs()
        except BaseException:
            self.close()
            raise
        finally:
            h_in.close()

    def step(self) -> None:
        if self.graphed:
            for g, (_, _, stream, _, _) in zip(self.graphs, self.copies, strict=True):
                g.launch(stream)
        else:
            for _, ctx, stream, _, _ in self.copies:
                self.r._execute(ctx, stream)

    def sync(self) -> None:
        for _, _, stream, _, _ in self.copies:
            stream.synchronize()

    def _close_graphs(self) -> None:
        for g in self.graphs:
            g.close()
        self.graphs.clear()

    def close(self) -> None:
        self.sync()
        self._close_graphs()
        while self.copies:
            engine, ctx, stream, d_in, d_out = self.copies.pop()
            d_in.close()
            d_out.close()
            stream.close()
            del ctx, engine  # a context goes before its engine

    def op(self) -> TimedOp:
        op = TimedOp(
            self.step,
            self.sync,
            None,
            f"host clock over many steps: {self.n} engine copies, each execute_async_v3 on its own "
            f"stream with device-resident input/output"
            + (", replayed as CUDA graphs" if self.graphed else "")
            + f"; a step is {self.n} batches",
            cuda_graph=self.graphed,
        )
        op.cleanup.append(self.close)
        return op


def _nbytes(shape: tuple[int, ...], dtype: Any) -> int:
    return int(np.prod(shape)) * np.dtype(dtype).itemsize
