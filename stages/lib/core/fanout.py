"""Run one stage's per-backend work in a fresh process each, and merge the results.

The flow (which interpreter, ``PIPELINE_CHILD``) is described in :mod:`stages.lib.core.interpreter`.
A backend whose child fails is recorded as failed (the quality gate then fails the run) so
the other backends are still measured.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from typing import Any

from .errors import BackendUnavailable, ChildFailed, UnsupportedCombination
from .interpreter import interpreter_for, run_module
from .io import read_json
from .params import PRECISIONS

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


def add_arguments(ap: argparse.ArgumentParser, verb: str) -> None:
    """The arguments every per-backend stage takes: params, precision, the artifacts of that
    precision, and the internal --backend/--part pair a child process is started with."""
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--precision", required=True, choices=PRECISIONS)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--onnx", type=Path, required=True)
    ap.add_argument("--engine-dir", type=Path, required=True)
    ap.add_argument("--backend", help=f"(internal) {verb} one backend and write --part")
    ap.add_argument("--part", type=Path)


def passthrough(args: argparse.Namespace) -> list[str]:
    """The add_arguments() values, as arguments for a child process."""
    return [
        "--params",
        str(args.params),
        "--precision",
        args.precision,
        "--checkpoint",
        str(args.checkpoint),
        "--onnx",
        str(args.onnx),
        "--engine-dir",
        str(args.engine_dir),
    ]


def status_of(exc: Exception) -> dict[str, Any]:
    """The record for a backend that cannot run here, with its reason."""
    if isinstance(exc, UnsupportedCombination):
        return {"status": "unsupported", "reason": str(exc)}
    if isinstance(exc, BackendUnavailable):
        return {"status": "skipped", "reason": str(exc)}
    return {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
