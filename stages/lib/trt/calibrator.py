"""The implicit INT8 entropy calibrator, for TensorRT versions that still have it (<= 10.x).

The pipeline's INT8 path is explicit quantization (a Q/DQ ONNX model), which works on every
version; this is the option for users who want TensorRT's own calibration. Its cache is
TensorRT's text format, written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core.io import write_bytes
from . import common


def make_entropy_calibrator(trt: Any, batches: list[np.ndarray], cache_path: Path) -> Any:
    """An IInt8EntropyCalibrator2 over ``batches`` in the network's input format (float32 NCHW,
    or uint8 NHWC for raw-pixel models), all of one batch size."""
    base = common.require_implicit_calibrator(trt)
    from ..core import cuda

    class EntropyCalibrator(base):  # type: ignore[misc,valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self.batches = [np.ascontiguousarray(b) for b in batches]
            self.index = 0
            self.buffer = cuda.DeviceBuffer(self.batches[0].nbytes)

        def get_batch_size(self) -> int:
            return int(self.batches[0].shape[0])

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.index >= len(self.batches):
                return None
            batch = self.batches[self.index]
            self.index += 1
            cuda.copy_htod(self.buffer.ptr, batch.ctypes.data, batch.nbytes)
            return [self.buffer.ptr]

        def read_calibration_cache(self) -> bytes | None:
            return cache_path.read_bytes() if cache_path.is_file() else None

        def write_calibration_cache(self, cache: Any) -> None:
            write_bytes(cache_path, bytes(cache))

    return EntropyCalibrator()
