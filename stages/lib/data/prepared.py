"""The dataset as arrays: a split, the prepared .npz files, the calibration subset, and
synthetic data for tests. Torch-free: the TensorRT interpreter evaluates engines on these
arrays too (reading raw CIFAR-10 is :mod:`stages.lib.data.rawdata`; model input preprocessing is
:mod:`stages.lib.data.inputs`).
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import DatasetError

log = logging.getLogger(__name__)

IMAGE_SIZE = 32  # CIFAR-10 images are 32x32 RGB


@dataclass(frozen=True)
class Split:
    """One split as arrays: images uint8 NHWC (N, H, W, 3), labels int64 (N,)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class RawDataset:
    train: Split
    test: Split
    classes: tuple[str, ...]
    source: str
    synthetic: bool


# -- synthetic data ------------------------------------------------------------------------


def synthetic(n_train: int, n_test: int, num_classes: int, seed: int) -> RawDataset:
    """Learnable fake data for tests: one smooth colour template per class plus noise.

    Always labelled synthetic; never a stand-in for CIFAR-10 numbers.
    """
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(num_classes, 4, 4, 3))
    templates = coarse.repeat(8, axis=1).repeat(8, axis=2)

    def make(n: int) -> Split:
        labels = rng.integers(0, num_classes, size=n).astype(np.int64)
        noise = rng.normal(0, 40, size=(n, 32, 32, 3))
        images = np.clip(templates[labels] + noise, 0, 255).astype(np.uint8)
        return Split(images, labels)

    classes = tuple(f"class{i}" for i in range(num_classes))
    return RawDataset(make(n_train), make(n_test), classes, "synthetic", True)


# -- prepared arrays -----------------------------------------------------------------------


def save_split(path: Path, split: Split) -> None:
    from ..core.io import atomic_path
    from .store import write_split

    need = split.images.nbytes + split.labels.nbytes
    with atomic_path(path, need_bytes=need) as tmp:
        write_split(tmp, split.images, split.labels)


def load_split(path: str | Path) -> Split:
    """A prepared split (written by the prepare stage), its images memory-mapped: batches are
    read from disk as they are indexed."""
    from .store import map_member

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path} is missing: run `dvc repro prepare`")
    try:
        images = map_member(path, "images.npy")
        with np.load(path) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("a bare array, not an .npz of images and labels")
            if images is None:
                images = z["images"]
            labels = z["labels"]
    except (OSError, ValueError, KeyError, EOFError, TypeError, AttributeError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{path}: not a prepared split ({exc}); run `dvc repro -f prepare`") from exc
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise DatasetError(f"{path}: expected uint8 NHWC images, got {images.dtype} {images.shape}")
    if labels.shape[0] != images.shape[0]:
        raise DatasetError(f"{path}: {images.shape[0]} images but {labels.shape[0]} labels")
    return Split(images, labels.astype(np.int64))


def calibration_indices(n_train: int, size: int, seed: int) -> np.ndarray:
    """A fixed random subset of the *training* split for INT8 calibration."""
    if size > n_train:
        raise DatasetError(f"data.calib_size={size} exceeds the {n_train} training images")
    return np.sort(np.random.default_rng(seed + 1).permutation(n_train)[:size])
