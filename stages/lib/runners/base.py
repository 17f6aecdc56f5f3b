"""The one runner interface every backend implements (Polygraphy's runner split).

Evaluation calls :meth:`Runner.infer`; benchmarking asks a runner for
:class:`~stages.lib.core.timing.TimedOp` objects and times them with the shared loop in
:mod:`stages.lib.core.timing`. Torch-free.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.timing import TimedOp
from ..data.inputs import InputSpec


@dataclass(frozen=True)
class Artifacts:
    """The files one backend x precision may need; None where a stage does not pass one."""

    checkpoint: Path | None = None
    onnx: Path | None = None
    engine_dir: Path | None = None


class Runner(abc.ABC):
    """open/infer/close, plus the ops the benchmark times. Use as a context manager."""

    backend: str = ""

    def __init__(self, precision: str, device: str) -> None:
        self.precision = precision
        self.device = device

    def __enter__(self) -> Runner:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abc.abstractmethod
    def open(self) -> None:
        """Load the model and allocate what inference needs."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release everything open() took."""

    @abc.abstractmethod
    def infer(self, x: np.ndarray) -> np.ndarray:
        """A host batch in the format of :meth:`input_spec` in, float32 logits on the host out."""

    @abc.abstractmethod
    def compute_op(self, batch_size: int, cuda_graph: bool) -> TimedOp:
        """One inference on device-resident input and output (no host copies)."""

    def end_to_end_op(self, batch_size: int) -> TimedOp:
        """One inference from a host array to host logits, copies included."""
        x = self.bench_batch(batch_size)
        return TimedOp(
            step=lambda: self.infer(x),
            sync=lambda: None,
            stream=None,
            timed="host clock around infer(): host input -> host logits",
        )

    def pipelined_op(self, batch_size: int, streams: int) -> TimedOp | None:
        """End-to-end with copies overlapped with compute; None if not supported."""
        return None

    def concurrent_op(self, batch_size: int, contexts: int, cuda_graph: bool) -> TimedOp | None:
        """``contexts`` inferences at once, each on its own stream with device-resident I/O
        (a step runs ``contexts`` batches); None if not supported."""
        return None

    @abc.abstractmethod
    def input_shape(self) -> tuple[int, int, int]:
        """One input image's shape: (C, H, W), or (H, W, C) for NHWC models."""

    def input_spec(self) -> InputSpec:
        """What :meth:`infer` takes (dtype, layout, size); :func:`stages.lib.data.inputs.to_model_input`
        makes it from images. Float32 NCHW unless the model says otherwise (ONNX and TensorRT
        runners read it from the model once open)."""
        return InputSpec("float32", "NCHW", self.input_shape()[-1])

    def bench_batch(self, batch_size: int) -> np.ndarray:
        """Random input in this runner's format, for timing."""
        spec = self.input_spec()
        return bench_input(batch_size, spec.shape, spec.dtype)

    def describe(self) -> dict[str, Any]:
        """Versions and settings worth recording next to results."""
        return {}


def bench_input(batch_size: int, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    """Random input of ``dtype``: normalised-looking floats or uniform raw pixels, never zeros
    (which can time faster than real data); seeded by the batch size."""
    rng = np.random.default_rng(batch_size)
    if np.dtype(dtype) == np.uint8:
        return rng.integers(0, 256, (batch_size, *shape), dtype=np.uint8)
    return rng.standard_normal((batch_size, *shape), dtype=np.float32).astype(dtype, copy=False)
