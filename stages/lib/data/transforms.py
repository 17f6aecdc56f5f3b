"""The standard image transforms, on decoded uint8 RGB arrays of any size (torch-free).

* evaluation (test split, calibration, predict): resize the shorter side to size/0.875
  (256 for 224, torchvision's ImageNet recipe), then centre-crop size x size;
* training storage: resize the shorter side to size, centre-crop size x size; the random-
  resized crop and the flip are drawn per batch while training
  (:mod:`stages.lib.data.torchdata`).

An image already at the target size passes unchanged.
"""

from __future__ import annotations

import numpy as np

EVAL_CROP_FRACTION = 0.875  # 224 of 256


def resize_shorter_and_crop(img: np.ndarray, shorter: int, crop: int) -> np.ndarray:
    """Bilinear (antialiased) resize so the shorter side is ``shorter``, then the centre
    ``crop`` x ``crop``."""
    from PIL import Image

    h, w = img.shape[:2]
    if (h, w) == (crop, crop):
        return img
    scale = shorter / min(h, w)
    nh, nw = max(crop, round(h * scale)), max(crop, round(w * scale))
    if (nh, nw) != (h, w):
        img = np.asarray(Image.fromarray(img).resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=None))
    top, left = (nh - crop) // 2, (nw - crop) // 2
    return np.ascontiguousarray(img[top : top + crop, left : left + crop])


def eval_transform(img: np.ndarray, size: int) -> np.ndarray:
    """Evaluation: shorter side to size/0.875, centre crop ``size``."""
    return resize_shorter_and_crop(img, round(size / EVAL_CROP_FRACTION), size)


def train_transform(img: np.ndarray, size: int) -> np.ndarray:
    """What training images are stored as: shorter side to ``size``, centre crop ``size``."""
    return resize_shorter_and_crop(img, size, size)
