"""prepare: the raw dataset (CIFAR-10 in any accepted layout, any image-folder dataset) or
synthetic data -> data/prepared/{train,test,calib}.npz and meta.json.

Image folders are decoded in batches and written as they go (:mod:`stages.lib.data.store`),
at the model's input size with the standard transforms (:mod:`stages.lib.data.folders`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .lib.core.cli import run_main
from .lib.core.config import load_params
from .lib.core.io import atomic_dir, write_json
from .lib.core.params import Params
from .lib.core.progress import progress
from .lib.data import folders, rawdata
from .lib.data import prepared as data
from .lib.data.store import SplitWriter

log = logging.getLogger(__name__)

# How training images are augmented (meta.json's "augment", read by train): CIFAR-style
# padded random crops at the stored size, or random-resized crops of images stored at the
# model's size.
PAD_CROP, RESIZED_CROP = "pad-crop", "random-resized-crop"


def _test_order(n: int, seed: int) -> np.ndarray:
    # The test split in a fixed shuffled order: image-folder trees come sorted by class, and
    # the checks that use the first N test images (export parity, reference logits) must see
    # every class. Accuracy over the whole split does not depend on the order.
    return np.random.default_rng(seed).permutation(n)


def _write_arrays(tmp: Path, ds: data.RawDataset, p: Params) -> dict[str, Any]:
    """An in-memory dataset (CIFAR-10's batches, synthetic data): the three splits."""
    idx = data.calibration_indices(len(ds.train), p.data.calib_size, p.seed)
    order = _test_order(len(ds.test), p.seed)
    data.save_split(tmp / "train.npz", ds.train)
    data.save_split(tmp / "test.npz", data.Split(ds.test.images[order], ds.test.labels[order]))
    data.save_split(tmp / "calib.npz", data.Split(ds.train.images[idx], ds.train.labels[idx]))
    return {
        "classes": list(ds.classes),
        "source": ds.source,
        "synthetic": ds.synthetic,
        "image_shape": list(ds.train.images.shape[1:]),
        "augment": PAD_CROP,
    }


def _write_splits(tmp: Path, ds: folders.FolderDataset, order: np.ndarray, size: int, transform: bool) -> None:
    for name, items, train in (
        ("train", ds.train, True),
        ("test", [ds.test[i] for i in order], False),
    ):
        steps = -(-len(items) // 256)
        with SplitWriter(tmp / f"{name}.npz") as writer:
            for images, labels in progress(folders.batches(items, size, transform, train), steps, f"decode {name}"):
                writer.append(images, labels)


def _write_folder(tmp: Path, ds: folders.FolderDataset, p: Params) -> dict[str, Any]:
    """An image-folder dataset, streamed: decoded, transformed and written batch by batch.
    Kept at its own size while every image matches the first (square, dividing the model's
    size); at the first that does not, written again at the model's size, transformed."""
    order = _test_order(len(ds.test), p.seed)
    size, transform = folders.native_size(ds, p.model.image_size), False
    try:
        if size is None:
            raise folders.SizeMismatch("the first image is not square at a size dividing the model's")
        _write_splits(tmp, ds, order, size, transform)
    except folders.SizeMismatch as why:
        log.info("images stored at %d px with the standard transforms (%s)", p.model.image_size, why)
        size, transform = p.model.image_size, True
        _write_splits(tmp, ds, order, size, transform)
    train_split = data.load_split(tmp / "train.npz")
    idx = data.calibration_indices(len(train_split), p.data.calib_size, p.seed)
    # calibration sees what evaluation sees: the training images, transformed for evaluation
    # (images kept at their own size are the stored ones)
    with SplitWriter(tmp / "calib.npz") as calib:
        if not transform:
            calib.append(train_split.images[idx], train_split.labels[idx])
        else:
            for images, labels in folders.batches([ds.train[i] for i in idx], size, True, train=False):
                calib.append(images, labels)
    return {
        "classes": list(ds.classes),
        "source": ds.source,
        "synthetic": False,
        "image_shape": [size, size, 3],
        "augment": RESIZED_CROP if transform else PAD_CROP,
    }


def prepare(params_path: str, out: Path) -> None:
    p = load_params(params_path)
    with atomic_dir(out) as tmp:
        if p.data.source == "synthetic":
            ds = data.synthetic(p.data.synthetic_train, p.data.synthetic_test, p.model.num_classes, p.seed)
            log.warning("SYNTHETIC data: every number downstream is labelled synthetic")
            info = _write_arrays(tmp, ds, p)
        else:
            kind, path = rawdata.locate(p.data.raw_dir, p.data.source, p.data.download)
            if kind.startswith("pickle"):
                info = _write_arrays(tmp, rawdata.load_pickle(kind, path), p)
            else:
                scan = folders.scan_tree if kind == "folder-tree" else folders.scan_tar
                info = _write_folder(tmp, scan(path), p)
        counts = {s: len(data.load_split(tmp / f"{s}.npz")) for s in ("train", "test", "calib")}
        write_json(
            tmp / "meta.json",
            {
                "dataset": p.data.name,
                "source": info["source"],
                "synthetic": info["synthetic"],
                "classes": info["classes"],
                "train_images": counts["train"],
                "test_images": counts["test"],
                "test_order": f"shuffled (seed {p.seed})",
                "calib_images": counts["calib"],
                "calib_drawn_from": "train split",
                "image_shape": info["image_shape"],
                "augment": info["augment"],
            },
        )
    log.info(
        "prepared %d train / %d test / %d calibration images (%s) from %s",
        counts["train"],
        counts["test"],
        counts["calib"],
        "x".join(map(str, info["image_shape"])),
        info["source"],
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", type=Path, default=Path("data/prepared"))
    args = ap.parse_args(argv)
    return run_main("prepare", lambda: prepare(args.params, args.out))


if __name__ == "__main__":
    sys.exit(main())
