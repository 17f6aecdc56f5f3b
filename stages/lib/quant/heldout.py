"""The held-out images the INT8 budget is checked on: a labelled subset of the training split
that is neither a calibration image nor part of the test split, and the logits of a model on
them in ONNX Runtime (CUDA where present, else CPU)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import DatasetError, OnnxModelError
from ..core.params import Params
from ..data import inputs
from ..data import prepared as data
from .onnxgraph import input_spec

BATCH = 64


def heldout_indices(n_train: int, calib: np.ndarray, size: int, seed: int) -> np.ndarray:
    """``size`` training-split indices, none of them in ``calib``, fixed by ``seed`` (sorted)."""
    rest = np.setdiff1d(np.arange(n_train), calib)
    if size > len(rest):
        raise DatasetError(
            f"calibrate.heldout_images={size} exceeds the {len(rest)} training images that are not "
            "calibration images: lower calibrate.heldout_images or data.calib_size"
        )
    return np.sort(np.random.default_rng(seed + 2).choice(rest, size, replace=False))


def heldout_split(train: data.Split, calib_size: int, size: int, seed: int) -> data.Split:
    """The held-out subset of ``train``: disjoint from the calibration images that prepare
    drew with the same ``calib_size`` and ``seed``."""
    calib = data.calibration_indices(len(train), calib_size, seed)
    idx = heldout_indices(len(train), calib, size, seed)
    return data.Split(train.images[idx], train.labels[idx])


@dataclass(frozen=True)
class Images:
    """Held-out images in a model's input format, in batches, with their labels."""

    batches: list[np.ndarray]
    labels: np.ndarray

    @classmethod
    def of(cls, split: data.Split, spec: inputs.InputSpec, mean: list[float], std: list[float]) -> Images:
        return cls(list(inputs.model_batches(split.images, spec, mean, std, BATCH)), split.labels)

    def subset(self, idx: np.ndarray) -> Images:
        """The images at ``idx`` (one batch list, same format)."""
        x = np.concatenate(self.batches)[idx]
        return Images([x[i : i + BATCH] for i in range(0, len(x), BATCH)], self.labels[idx])


def load_heldout(p: Params, train: str | Path, model: Any) -> Images:
    """The held-out images of the prepared training split at ``train``, in ``model``'s input format."""
    split = heldout_split(data.load_split(train), p.data.calib_size, p.calibrate.heldout_images, p.seed)
    return Images.of(split, input_spec(model), p.data.mean, p.data.std)


class OrtLogits:
    """Logits of ONNX models (protos, not files) in ONNX Runtime: CUDA without TF32 on
    ``device`` cuda, else CPU."""

    def __init__(self, device: str) -> None:
        self.device = device

    @property
    def provider(self) -> str:
        return "CUDAExecutionProvider" if self.device == "cuda" else "CPUExecutionProvider"

    def __call__(self, model: Any, images: Images) -> np.ndarray:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        providers: list[Any] = ["CPUExecutionProvider"]
        if self.device == "cuda":
            providers.insert(0, ("CUDAExecutionProvider", {"use_tf32": 0}))
        try:
            sess = ort.InferenceSession(model.SerializeToString(), opts, providers=providers)
        except Exception as exc:  # ORT raises its own exception types from C++
            raise OnnxModelError(f"ONNX Runtime cannot load the Q/DQ model ({exc})") from exc
        inp = sess.get_inputs()[0]
        dtype = np.float16 if inp.type == "tensor(float16)" else None
        out = [sess.run(None, {inp.name: b if dtype is None else b.astype(dtype)})[0] for b in images.batches]
        return np.concatenate(out).astype(np.float32)


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent."""
    return float(100.0 * np.mean(np.argmax(logits, axis=1) == labels))
