"""Run one stage's per-backend work in a fresh process each, and merge the results.

A fresh process per backend keeps device-memory readings per backend honest, and lets the
TensorRT part run in $TRT_PYTHON. A backend that crashes is recorded as failed (the quality
gate then fails the run) so the other backends are still measured.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from .errors import BackendUnavailable, UnsupportedCombination
from .interpreter import ChildFailed, interpreter_for, run_module
from .io import read_json

log = logging.getLogger(__name__)


def per_backend(module: str, backends: list[str], args: list[str]) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="fanout.") as tmp:
        for backend in backends:
            part = Path(tmp) / f"{backend}.json"
            exe, kind = interpreter_for(backend)
            try:
                run_module(module, [*args, "--backend", backend, "--part", str(part)], exe, kind)
                results[backend] = read_json(part)
            except ChildFailed as exc:
                log.error("%s: %s", backend, exc)
                results[backend] = {"status": "failed", "reason": str(exc)}
            status = results[backend].get("status")
            if status != "ok":
                log.warning("%s %s: %s", backend, status, results[backend].get("reason"))
    return results


def status_of(exc: Exception) -> dict[str, Any]:
    """The record for a backend that cannot run here, with its reason."""
    if isinstance(exc, UnsupportedCombination):
        return {"status": "unsupported", "reason": str(exc)}
    if isinstance(exc, BackendUnavailable):
        return {"status": "skipped", "reason": str(exc)}
    return {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
