"""The train stage's resume state: what an interrupted training needs to go on.

The state (weights, optimizer, schedule, random generators, history) is saved atomically at
most every ``Resume.every_s`` and carries a fingerprint of the params and data it belongs
to; a state saved for anything else is ignored, so a changed run starts over.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.io import atomic_path
from ..core.params import Params

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resume:
    """Where train() keeps its resume state, and the fingerprint that state must carry."""

    path: Path
    key: str
    every_s: float = 60.0  # saving R18's state takes ~0.2 s; a minute of work is the most lost


def resume_key(p: Params, data_files: list[Path]) -> str:
    """A fingerprint of everything that decides the training run: its params and data."""
    h = hashlib.sha256()
    decided_by = {
        "seed": p.seed,
        "device": p.device,
        "model": dataclasses.asdict(p.model),
        "train": dataclasses.asdict(p.train),
        "mean": p.data.mean,
        "std": p.data.std,
    }
    h.update(json.dumps(decided_by, sort_keys=True).encode())
    for f in data_files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def load(resume: Resume | None) -> dict[str, Any] | None:
    if resume is None or not resume.path.exists():
        return None
    try:
        state: dict[str, Any] = torch.load(resume.path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a state we cannot read costs a restart, not the run
        log.warning("starting over: cannot read the resume state %s (%s)", resume.path, exc)
        return None
    if state.get("key") != resume.key:
        log.info("starting over: %s was saved for other params or data", resume.path)
        return None
    return state


def save(resume: Resume, state: dict[str, Any]) -> None:
    """Write ``state`` with the fingerprint, replacing the previous save only once written."""
    with atomic_path(resume.path) as tmp:
        torch.save({"key": resume.key, **state}, tmp)
