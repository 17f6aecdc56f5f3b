"""A deserialized TensorRT engine: its one input and one output, its optimization profiles,
and execution contexts bound to them (Polygraphy's loader side; torch-free).

The runner (:mod:`stages.lib.runners.trt_runner`) and the benchmark modes
(:mod:`stages.lib.runners.trt_modes`) drive engines only through this class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core import cuda
from ..core.errors import EngineError
from . import common

# An engine folder (the build stage's output): the plan, its build report and its layer table.
ENGINE_FILE = "model.engine"
BUILD_FILE = "build.json"
LAYERS_FILE = "layers.json"


class Engine:
    """One deserialization of a plan. Several copies of one plan (:meth:`copy`) compute at
    once on their own streams; with dynamic shapes a profile serves one context at a time."""

    def __init__(self, trt: Any, runtime: Any, plan: bytes, path: Path, logger: Any = None) -> None:
        self.trt, self.runtime, self.plan, self.path = trt, runtime, plan, path
        self.logger = logger  # the runtime's logger must live as long as the runtime
        self.engine = runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise EngineError(
                f"{path}: TensorRT {trt.__version__} cannot load it "
                "(corrupt, or built by another version): run `dvc repro`"
            )
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise EngineError(f"{path}: expected one input and one output, got {names}")
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.in_dtype = common.dtype_to_numpy(trt, self.engine.get_tensor_dtype(self.input_name))
        self.out_dtype = common.dtype_to_numpy(trt, self.engine.get_tensor_dtype(self.output_name))
        self.num_classes = int(self.engine.get_tensor_shape(self.output_name)[-1])
        self.input_dims = tuple(int(d) for d in self.engine.get_tensor_shape(self.input_name))[1:]  # one image
        self.profiles: list[tuple[int, int, int]] = []
        for k in range(self.engine.num_optimization_profiles):
            lo, opt, hi = (int(s[0]) for s in self.engine.get_tensor_profile_shape(self.input_name, k))
            self.profiles.append((lo, opt, hi))

    @classmethod
    def load(cls, trt: Any, logger: Any, path: Path) -> Engine:
        """Deserialize the plan at ``path`` with a new runtime."""
        if not path.is_file():
            raise EngineError(f"{path} is missing: run `dvc repro`")
        return cls(trt, trt.Runtime(logger), path.read_bytes(), path, logger)

    def copy(self) -> Engine:
        """Another deserialization of the same plan (its own weights and contexts)."""
        return Engine(self.trt, self.runtime, self.plan, self.path, self.logger)

    def profile_for(self, batch: int) -> int:
        """The profile whose range holds ``batch`` (see :func:`pick_profile`)."""
        return pick_profile(self.profiles, batch, self.path)

    def context(self, profile: int, stream: cuda.Stream) -> Any:
        """A new execution context on ``profile`` (selected on ``stream``)."""
        ctx = self.engine.create_execution_context()
        if ctx is None:
            raise EngineError(f"{self.path}: could not create an execution context")
        ctx.set_optimization_profile_async(profile, stream.ptr)
        return ctx

    def bind(self, ctx: Any, batch: int, chw: tuple[int, ...], d_in: int, d_out: int) -> None:
        """Input shape and I/O device addresses on a context of this engine."""
        if not ctx.set_input_shape(self.input_name, (batch, *chw)):
            raise EngineError(f"{self.path}: cannot set input shape batch={batch} on this context's profile")
        ctx.set_tensor_address(self.input_name, d_in)
        ctx.set_tensor_address(self.output_name, d_out)

    def execute(self, ctx: Any, stream: cuda.Stream) -> None:
        """Enqueue one inference of ``ctx`` on ``stream``."""
        if not ctx.execute_async_v3(stream.ptr):
            raise EngineError(f"execute_async_v3 failed for {self.path}")

    def input_nbytes(self, batch: int, chw: tuple[int, ...]) -> int:
        return batch * int(np.prod(chw)) * np.dtype(self.in_dtype).itemsize

    def output_nbytes(self, batch: int) -> int:
        return batch * self.num_classes * np.dtype(self.out_dtype).itemsize

    def activation_memory_mb(self) -> float:
        """Device memory an execution context needs for activations (the name differs across
        TensorRT versions: see :func:`stages.lib.trt.common.device_memory_size`)."""
        return round(common.device_memory_size(self.engine) / 2**20, 2)

    def close(self) -> None:
        self.engine = None


def pick_profile(profiles: list[tuple[int, int, int]], batch: int, path: Path) -> int:
    """Index of the (min, opt, max) profile that holds ``batch``, preferring the closest opt."""
    fits = [k for k, (lo, _, hi) in enumerate(profiles) if lo <= batch <= hi]
    if not fits:
        ranges = ", ".join(f"[{lo}..{hi}]" for lo, _, hi in profiles)
        raise EngineError(
            f"batch size {batch} is outside every optimization profile of {path} ({ranges}): adjust build.profiles"
        )
    return min(fits, key=lambda k: (abs(profiles[k][1] - batch), k))
