"""Benchmark modes on top of a TensorRT runner's public methods (torch-free).

The modes see the runner only through :class:`EngineHost`, the part of
:class:`~.trt_runner.TrtRunner`'s public API they use, so the runner can offer them as its
``pipelined_op``/``concurrent_op`` without the two modules importing each other.

* ``pipelined``: H2D, execute and D2H of consecutive batches on three streams with several
  buffer sets, so copies overlap compute (end-to-end throughput).
* ``concurrent``: several deserialized copies of the engine, each with its own context,
  stream and device I/O, enqueued together (compute throughput).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import numpy as np

from ..core import cuda
from ..core.errors import EngineError
from ..core.timing import TimedOp
from ..trt.engine import Engine

log = logging.getLogger(__name__)


class EngineHost(Protocol):
    """What the modes use of an open TensorRT runner: its public API, nothing private."""

    stream: cuda.Stream | None

    @property
    def loaded(self) -> Engine: ...

    def slot(self, batch: int) -> Any: ...  # an execution context on the batch's profile (``.context``)

    def bench_batch(self, batch_size: int) -> np.ndarray: ...

    def input_shape(self) -> tuple[int, int, int]: ...


class _BufferSet:
    """Pinned host and device I/O for one in-flight batch, and the events that order its use."""

    def __init__(self, eng: Engine, batch: int, chw: tuple[int, ...], x: np.ndarray) -> None:
        self.h_in = cuda.PinnedArray((batch, *chw), eng.in_dtype)
        self.h_in.array[...] = x
        self.d_in = cuda.DeviceBuffer(self.h_in.nbytes)
        self.d_out = cuda.DeviceBuffer(eng.output_nbytes(batch))
        self.h_out = cuda.PinnedArray((batch, eng.num_classes), eng.out_dtype)
        self.h2d_done, self.compute_done, self.d2h_done = (cuda.Event(timing=False) for _ in range(3))

    def close(self) -> None:
        for buf in (self.h_in, self.d_in, self.d_out, self.h_out):
            buf.close()
        for event in (self.h2d_done, self.compute_done, self.d2h_done):
            event.close()


class _Pipeline:
    """Double/triple-buffered H2D -> execute -> D2H across three streams and one context."""

    def __init__(self, runner: EngineHost, batch: int, depth: int) -> None:
        self.r, self.eng, self.b, self.depth = runner, runner.loaded, batch, depth
        assert runner.stream is not None
        self.compute = runner.stream
        self.slot = runner.slot(batch)
        self.copy_in, self.copy_out = cuda.Stream(), cuda.Stream()
        x = runner.bench_batch(batch)
        self.bufs = [_BufferSet(self.eng, batch, runner.input_shape(), x) for _ in range(depth)]
        self.i = 0

    def step(self) -> None:
        buf = self.bufs[self.i % self.depth]
        first_use = self.i < self.depth
        if not first_use:  # this set's input buffer is free once its last compute finished
            self.copy_in.wait(buf.compute_done)
        cuda.copy_htod_async(buf.d_in.ptr, buf.h_in.ptr, buf.h_in.nbytes, self.copy_in)
        buf.h2d_done.record(self.copy_in.ptr)
        self.compute.wait(buf.h2d_done)
        if not first_use:  # and its output buffer once its last D2H finished
            self.compute.wait(buf.d2h_done)
        self.eng.bind(self.slot.context, self.b, self.r.input_shape(), buf.d_in.ptr, buf.d_out.ptr)
        self.eng.execute(self.slot.context, self.compute)
        buf.compute_done.record(self.compute.ptr)
        self.copy_out.wait(buf.compute_done)
        cuda.copy_dtoh_async(buf.h_out.ptr, buf.d_out.ptr, buf.h_out.nbytes, self.copy_out)
        buf.d2h_done.record(self.copy_out.ptr)
        self.i += 1

    def sync(self) -> None:
        for s in (self.copy_in, self.compute, self.copy_out):
            s.synchronize()

    def close(self) -> None:
        self.sync()
        for buf in self.bufs:
            buf.close()
        self.copy_in.close()
        self.copy_out.close()


def pipelined_op(runner: EngineHost, batch: int, depth: int) -> TimedOp:
    """The ``pipelined`` mode as a :class:`TimedOp` (timed by the host clock over many steps)."""
    pipe = _Pipeline(runner, batch, depth)
    dtype = np.dtype(runner.loaded.in_dtype).name
    op = TimedOp(
        pipe.step,
        pipe.sync,
        None,
        f"host clock over many batches: pinned {dtype} input, H2D / execute / D2H on "
        f"three streams with {depth} buffer sets, overlapping copies and compute",
    )
    op.cleanup.append(pipe.close)
    return op


class _Copy:
    """One engine copy of the concurrent mode: engine, context, stream and device I/O."""

    def __init__(self, eng: Engine, profile: int, batch: int, chw: tuple[int, ...], h_in: cuda.PinnedArray) -> None:
        self.engine: Engine = eng.copy()
        self.stream = cuda.Stream()
        self.context = self.engine.context(profile, self.stream)
        self.d_in = cuda.DeviceBuffer(h_in.nbytes)
        self.d_out = cuda.DeviceBuffer(eng.output_nbytes(batch))
        self.engine.bind(self.context, batch, chw, self.d_in.ptr, self.d_out.ptr)
        cuda.copy_htod_async(self.d_in.ptr, h_in.ptr, h_in.nbytes, self.stream)
        self.engine.execute(self.context, self.stream)  # once before capture: lazy setup
        self.stream.synchronize()
        self.graph: cuda.Graph | None = None

    def launch(self) -> None:
        if self.graph is not None:
            self.graph.launch(self.stream)
        else:
            self.engine.execute(self.context, self.stream)

    def close(self) -> None:
        self.stream.synchronize()
        if self.graph is not None:
            self.graph.close()
            self.graph = None
        self.d_in.close()
        self.d_out.close()
        self.stream.close()
        self.context = None  # a context goes before its engine
        self.engine.close()


class _Concurrent:
    """N engine copies on N streams, compute only (as ``trtexec --streams``)."""

    def __init__(self, runner: EngineHost, batch: int, n: int, cuda_graph: bool) -> None:
        eng, chw = runner.loaded, runner.input_shape()
        self.copies: list[_Copy] = []
        h_in = cuda.PinnedArray((batch, *chw), eng.in_dtype)
        try:
            h_in.array[...] = runner.bench_batch(batch)
            for i in range(n):
                try:
                    self.copies.append(_Copy(eng, eng.profile_for(batch), batch, chw, h_in))
                except EngineError as exc:
                    raise EngineError(f"{eng.path}: could not create engine copy {i + 1} of {n} ({exc})") from exc
            self.graphed = cuda_graph and self._capture()
        except BaseException:
            self.close()
            raise
        finally:
            h_in.close()

    def _capture(self) -> bool:
        try:
            for c in self.copies:
                c.graph = cuda.Graph(c.stream, lambda c=c: c.engine.execute(c.context, c.stream))
        except EngineError as exc:
            log.warning("CUDA graph capture failed (%s); concurrent run without graphs", exc)
            for c in self.copies:
                if c.graph is not None:
                    c.graph.close()
                    c.graph = None
            return False
        return True

    def step(self) -> None:
        for c in self.copies:
            c.launch()

    def sync(self) -> None:
        for c in self.copies:
            c.stream.synchronize()

    def close(self) -> None:
        while self.copies:
            self.copies.pop().close()


def concurrent_op(runner: EngineHost, batch: int, n: int, cuda_graph: bool) -> TimedOp:
    """The ``concurrent`` mode as a :class:`TimedOp`; a step runs ``n`` batches."""
    conc = _Concurrent(runner, batch, n, cuda_graph)
    op = TimedOp(
        conc.step,
        conc.sync,
        None,
        f"host clock over many steps: {n} engine copies, each execute_async_v3 on its own "
        f"stream with device-resident input/output"
        + (", replayed as CUDA graphs" if conc.graphed else "")
        + f"; a step is {n} batches",
        cuda_graph=conc.graphed,
    )
    op.cleanup.append(conc.close)
    return op
