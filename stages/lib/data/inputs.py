"""What a model takes as input, and the one preprocessing path from images to it.

Every consumer of images (export's parity checks, calibration, the TensorRT calibrator,
evaluation, benchmarks, predict) turns uint8 NHWC images at the dataset's size into a model's
input here, in batches, so all backends see identical arrays. A model takes either

* float input (``float32``, or ``float16`` for models with fp16 I/O): NCHW, scaled by 1/255,
  normalised with the dataset's mean/std and upsampled to the model's size, or
* raw pixels (``uint8``, ``export.raw_input``): NHWC at the model's size; the scaling,
  normalisation and layout change happen inside the model.

The integer nearest upsampling from the dataset's size to the model's always happens here, on
the host (what a user's decoder/resizer does). Torch-free: the TensorRT interpreter runs it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..core.errors import DatasetError
from ..core.progress import progress

LAYOUTS = ("NCHW", "NHWC")
DTYPES = ("float32", "float16", "uint8")


@dataclass(frozen=True)
class InputSpec:
    """One model input: element type, layout and (square) spatial size, batch axis first."""

    dtype: str  # a numpy dtype name, one of DTYPES
    layout: str  # NCHW or NHWC
    size: int  # height == width at the model's input

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES or self.layout not in LAYOUTS or self.size <= 0:
            raise DatasetError(f"unsupported model input {self.describe()} (known: {', '.join(DTYPES)}; NCHW/NHWC)")

    @property
    def shape(self) -> tuple[int, int, int]:
        """One image's shape at the model input."""
        return (3, self.size, self.size) if self.layout == "NCHW" else (self.size, self.size, 3)

    @property
    def raw(self) -> bool:
        """Raw pixels: the model scales and normalises inside."""
        return self.dtype == "uint8"

    def describe(self) -> str:
        return f"{self.dtype} {self.layout} {self.size}x{self.size}"

    @classmethod
    def from_dims(cls, dtype: Any, dims: tuple[Any, ...] | list[Any], where: str = "the model") -> InputSpec:
        """From an element type and a per-image shape, (3, H, W) or (H, W, 3)."""
        name = np.dtype(dtype).name
        d = tuple(dims)
        if len(d) == 3 and d[0] == 3 and d[1] == d[2] and isinstance(d[1], int):
            return cls(name, "NCHW", int(d[1]))
        if len(d) == 3 and d[2] == 3 and d[0] == d[1] and isinstance(d[0], int):
            return cls(name, "NHWC", int(d[0]))
        raise DatasetError(f"{where}: input of shape {list(d)} is neither (3, H, W) nor (H, W, 3) with H == W")


def float_input(size: int) -> InputSpec:
    """The float32 NCHW input of a PyTorch checkpoint (and of a float-input ONNX model)."""
    return InputSpec("float32", "NCHW", size)


def preprocess(images: np.ndarray, mean: list[float], std: list[float], size: int) -> np.ndarray:
    """uint8 NHWC -> normalised float32 NCHW at ``size`` (nearest upsampling by an integer).

    Training uses the torch twin in :mod:`stages.lib.data.torchdata`.
    """
    x = images.astype(np.float32) * np.float32(1 / 255)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return upsample(np.ascontiguousarray(x.transpose(0, 3, 1, 2)), size, axes=(2, 3))


def upsample(x: np.ndarray, size: int, axes: tuple[int, int] = (1, 2)) -> np.ndarray:
    """Nearest upsampling of the spatial ``axes`` by the integer factor that reaches ``size``."""
    h = x.shape[axes[0]]
    if size % h:
        raise DatasetError(f"model input {size} is not a multiple of the image size {h}")
    factor = size // h
    if factor > 1:
        x = np.ascontiguousarray(x.repeat(factor, axis=axes[0]).repeat(factor, axis=axes[1]))
    return x


def to_model_input(images: np.ndarray, spec: InputSpec, mean: list[float], std: list[float]) -> np.ndarray:
    """One batch of uint8 NHWC images at the dataset's size -> exactly what ``spec`` takes."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise DatasetError(f"expected uint8 NHWC RGB images, got {images.dtype} {images.shape}")
    if spec.raw:
        x = upsample(np.ascontiguousarray(images), spec.size)
        return x if spec.layout == "NHWC" else np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    x = preprocess(images, mean, std, spec.size)
    if spec.layout == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    return x.astype(spec.dtype, copy=False)


def model_batches(
    images: np.ndarray,
    spec: InputSpec,
    mean: list[float],
    std: list[float],
    batch_size: int,
    drop_last: bool = False,
) -> Iterator[np.ndarray]:
    """Model-input batches of ``images`` in order; the last one smaller unless ``drop_last``."""
    n = len(images)
    stop = n - n % batch_size if drop_last else n
    from .store import release

    for start in range(0, stop, batch_size):
        x = to_model_input(images[start : start + batch_size], spec, mean, std)
        release(images)  # a memory-mapped split: its pages leave the resident set
        yield x


class _Infers(Protocol):
    backend: str
    precision: str

    def infer(self, x: np.ndarray) -> np.ndarray: ...

    def input_spec(self) -> InputSpec: ...


def infer_all(
    runner: _Infers,
    images: np.ndarray,
    mean: list[float],
    std: list[float],
    batch_size: int,
    desc: str = "",
    bar: bool = True,
) -> np.ndarray:
    """Logits of an open runner for every image, in the runner's input format (with a progress bar)."""
    batches = model_batches(images, runner.input_spec(), mean, std, batch_size)
    if bar:
        batches = progress(batches, -(-len(images) // batch_size), desc or f"{runner.backend} {runner.precision}")
    out = [runner.infer(x) for x in batches]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
