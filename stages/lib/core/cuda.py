"""Thin, checked wrappers over cuda-python's runtime API.

Used by the TensorRT runner for buffers, streams and graphs, and by every GPU runner for
event timing and device-memory readings. Torch-free; imported lazily, so CPU-only
machines never need cuda-python.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from .errors import BackendUnavailable, EngineError


def _runtime() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[no-redef]  # older cuda-python
        except ImportError as exc:
            raise BackendUnavailable("cuda-python is not installed (pip install 'trt-pipeline[gpu]')") from exc
    return cudart


def check(result: Any) -> Any:
    """Unpack a cuda-python result tuple, raising on a non-success status."""
    cudart = _runtime()
    err, *rest = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        name = cudart.cudaGetErrorName(err)[1]
        raise EngineError(f"CUDA call failed: {name.decode() if isinstance(name, bytes) else name}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else tuple(rest)


def device_count() -> int:
    cudart = _runtime()
    err, n = cudart.cudaGetDeviceCount()
    return int(n) if err == cudart.cudaError_t.cudaSuccess else 0


def device_properties(index: int = 0) -> dict[str, Any]:
    cudart = _runtime()
    props = check(cudart.cudaGetDeviceProperties(index))
    name = props.name
    name = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
    return {
        "name": name.rstrip("\x00"),
        "compute_capability": f"{props.major}.{props.minor}",
        "multiprocessors": int(props.multiProcessorCount),
        "total_memory_mb": round(int(props.totalGlobalMem) / 2**20),
        "driver_version": _version(check(cudart.cudaDriverGetVersion())),
        "cuda_runtime_version": _version(check(cudart.cudaRuntimeGetVersion())),
    }


def _version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


def mem_used_mb() -> float:
    """Device memory in use on the current device (all processes), in MiB."""
    cudart = _runtime()
    free, total = check(cudart.cudaMemGetInfo())
    return (int(total) - int(free)) / 2**20


class Stream:
    def __init__(self) -> None:
        cudart = _runtime()
        self.handle = check(cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking))

    @property
    def ptr(self) -> int:
        return int(self.handle)

    def synchronize(self) -> None:
        check(_runtime().cudaStreamSynchronize(self.handle))

    def wait(self, event: Event) -> None:
        """Make later work on this stream wait for ``event`` (no host synchronisation)."""
        check(_runtime().cudaStreamWaitEvent(self.handle, event.handle, 0))

    def close(self) -> None:
        if self.handle is not None:
            check(_runtime().cudaStreamDestroy(self.handle))
            self.handle = None


class DeviceBuffer:
    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self.ptr = int(check(_runtime().cudaMalloc(max(nbytes, 1))))

    def close(self) -> None:
        if self.ptr:
            check(_runtime().cudaFree(self.ptr))
            self.ptr = 0


class PinnedArray:
    """A page-locked host array (numpy view), for fast and truly async copies."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        self.ptr = int(check(_runtime().cudaMallocHost(max(self.nbytes, 1))))
        buf = (ctypes.c_byte * self.nbytes).from_address(self.ptr)
        self.array = np.frombuffer(memoryview(buf), dtype=dtype).reshape(shape)

    def close(self) -> None:
        if self.ptr:
            self.array = None  # type: ignore[assignment]
            check(_runtime().cudaFreeHost(self.ptr))
            self.ptr = 0


def copy_htod(dst_ptr: int, src_ptr: int, nbytes: int) -> None:
    """A synchronous host-to-device copy."""
    cudart = _runtime()
    check(cudart.cudaMemcpy(dst_ptr, src_ptr, nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice))


def init_context() -> None:
    """Create this process's CUDA context now (so a memory reading taken next includes it)."""
    check(_runtime().cudaFree(0))


def copy_htod_async(dst_ptr: int, src_ptr: int, nbytes: int, stream: Stream) -> None:
    cudart = _runtime()
    check(cudart.cudaMemcpyAsync(dst_ptr, src_ptr, nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream.handle))


def copy_dtoh_async(dst_ptr: int, src_ptr: int, nbytes: int, stream: Stream) -> None:
    cudart = _runtime()
    check(cudart.cudaMemcpyAsync(dst_ptr, src_ptr, nbytes, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream.handle))


class Event:
    """A CUDA event; ``timing=False`` for one that only orders streams (cheaper to record)."""

    def __init__(self, timing: bool = True) -> None:
        cudart = _runtime()
        flags = cudart.cudaEventDefault if timing else cudart.cudaEventDisableTiming
        self.handle = check(cudart.cudaEventCreateWithFlags(flags))

    def record(self, stream: int) -> None:
        check(_runtime().cudaEventRecord(self.handle, stream))

    def synchronize(self) -> None:
        check(_runtime().cudaEventSynchronize(self.handle))

    def elapsed_ms(self, start: Event) -> float:
        return float(check(_runtime().cudaEventElapsedTime(start.handle, self.handle)))

    def close(self) -> None:
        if self.handle is not None:
            check(_runtime().cudaEventDestroy(self.handle))
            self.handle = None


class Graph:
    """A captured CUDA graph of whatever ``enqueue`` puts on ``stream``."""

    def __init__(self, stream: Stream, enqueue: Any) -> None:
        cudart = _runtime()
        check(
            cudart.cudaStreamBeginCapture(stream.handle, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal)
        )
        try:
            enqueue()
        finally:
            graph = check(cudart.cudaStreamEndCapture(stream.handle))
        self._graph = graph
        self._exec = check(cudart.cudaGraphInstantiate(graph, 0))

    def launch(self, stream: Stream) -> None:
        check(_runtime().cudaGraphLaunch(self._exec, stream.handle))

    def close(self) -> None:
        cudart = _runtime()
        if self._exec is not None:
            check(cudart.cudaGraphExecDestroy(self._exec))
            check(cudart.cudaGraphDestroy(self._graph))
            self._exec = None
