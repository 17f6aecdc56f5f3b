"""Accuracy metrics (numpy only)."""

from __future__ import annotations

import numpy as np


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows: true class; columns: predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels, preds), 1)
    return cm


def top1(labels: np.ndarray, preds: np.ndarray) -> float:
    """Percent of images whose arg-max matches the label."""
    return 100.0 * float((labels == preds).mean())


def per_class_top1(cm: np.ndarray) -> np.ndarray:
    totals = cm.sum(axis=1)
    return 100.0 * np.diag(cm) / np.maximum(totals, 1)


def agreement(ref_logits: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """How closely ``logits`` follow the reference on the images both cover."""
    n = min(len(ref_logits), len(logits))
    ref, got = ref_logits[:n], logits[:n]
    return {
        "top1_agreement": float((ref.argmax(1) == got.argmax(1)).mean()) if n else float("nan"),
        "max_abs_diff": float(np.abs(ref - got).max()) if n else float("nan"),
        "images": n,
    }
