"""prepare: raw CIFAR-10 (any accepted layout) or synthetic data -> data/prepared/*.npz."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from .lib.core.cli import run_main
from .lib.core.config import load_params
from .lib.core.io import atomic_dir, write_json
from .lib.data import prepared as data
from .lib.data import rawdata

log = logging.getLogger(__name__)


def prepare(params_path: str, out: Path) -> None:
    p = load_params(params_path)
    if p.data.source == "synthetic":
        ds = data.synthetic(p.data.synthetic_train, p.data.synthetic_test, p.model.num_classes, p.seed)
        log.warning("SYNTHETIC data: every number downstream is labelled synthetic")
    else:
        ds = rawdata.load_raw(p.data.raw_dir, p.data.source, p.data.download)
    idx = data.calibration_indices(len(ds.train), p.data.calib_size, p.seed)
    calib = data.Split(ds.train.images[idx], ds.train.labels[idx])
    # The test split in a fixed shuffled order: image-folder trees come sorted by class, and
    # the checks that use the first N test images (export parity, reference logits) must see
    # every class. Accuracy over the whole split does not depend on the order.
    order = np.random.default_rng(p.seed).permutation(len(ds.test))
    test = data.Split(ds.test.images[order], ds.test.labels[order])
    with atomic_dir(out) as tmp:
        data.save_split(tmp / "train.npz", ds.train)
        data.save_split(tmp / "test.npz", test)
        data.save_split(tmp / "calib.npz", calib)
        write_json(
            tmp / "meta.json",
            {
                "dataset": p.data.name,
                "source": ds.source,
                "synthetic": ds.synthetic,
                "classes": list(ds.classes),
                "train_images": len(ds.train),
                "test_images": len(ds.test),
                "test_order": f"shuffled (seed {p.seed})",
                "calib_images": len(calib),
                "calib_drawn_from": "train split",
                "image_shape": list(ds.train.images.shape[1:]),
            },
        )
    log.info(
        "prepared %d train / %d test / %d calibration images from %s",
        len(ds.train),
        len(ds.test),
        len(calib),
        ds.source,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", type=Path, default=Path("data/prepared"))
    args = ap.parse_args(argv)
    return run_main("prepare", lambda: prepare(args.params, args.out))


if __name__ == "__main__":
    sys.exit(main())
