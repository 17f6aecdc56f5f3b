"""Running stage work in another interpreter (TensorRT in its own venv or container).

When the environment variable ``TRT_PYTHON`` names an interpreter, everything that touches
TensorRT runs there as ``$TRT_PYTHON -m stages.<name> ...``; otherwise in-process.
"""

from __future__ import annotations

import os
import subprocess
import sys

from .errors import PipelineError

TRT_PYTHON = "TRT_PYTHON"
_CHILD = "PIPELINE_CHILD"


class ChildFailed(PipelineError):
    """A child stage process failed; it has already printed its own one-line error."""

    def __init__(self, exit_code: int, what: str) -> None:
        self.exit_code = exit_code
        super().__init__(f"{what} failed (exit {exit_code})")


def trt_python() -> str | None:
    """The interpreter TensorRT work must run in, or None for this one."""
    path = os.environ.get(TRT_PYTHON)
    if not path or os.environ.get(_CHILD) == "trt":
        return None
    return path


def is_child() -> bool:
    return bool(os.environ.get(_CHILD))


def run_module(module: str, args: list[str], python: str | None = None, kind: str = "py") -> None:
    """Run ``python -m module args`` (default: this interpreter); raise ChildFailed on error."""
    exe = python or sys.executable
    env = dict(os.environ, **{_CHILD: kind})
    rc = subprocess.call([exe, "-m", module, *args], env=env)
    if rc != 0:
        raise ChildFailed(rc, f"{module} {' '.join(args)} in {exe}")


def interpreter_for(backend: str) -> tuple[str, str]:
    """(executable, kind) that runs a backend's work."""
    trt = trt_python()
    if backend == "tensorrt" and trt:
        return trt, "trt"
    return sys.executable, "py"
