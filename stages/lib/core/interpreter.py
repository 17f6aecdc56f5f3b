"""Which Python runs a stage's work, and running it there as a child process.

This is the one place the child-process flow is described:

- ``TRT_PYTHON`` (environment) names an interpreter that has TensorRT, when TensorRT lives
  in its own venv or container (TensorRT 8.6 wheels exist for Python <= 3.10 only). Unset,
  everything runs in the current interpreter.
- The TensorRT stages (``probe``, ``build``) re-run themselves there: their ``run()`` starts
  ``$TRT_PYTHON -m stages.<name> <same arguments>`` and returns its exit code.
- The per-backend stages (``evaluate``, ``benchmark``) start one child process per backend
  (:func:`stages.lib.core.fanout.per_backend`): ``python -m stages.<name> ... --backend B --part
  FILE``, the TensorRT child in ``$TRT_PYTHON``, the others in this interpreter. A fresh
  process per backend keeps device-memory readings apart; each child writes its record to
  ``FILE`` and the parent merges them.
- Every child gets ``PIPELINE_CHILD`` (``trt`` in the TensorRT interpreter, ``py`` otherwise),
  so a TensorRT child does not start yet another child. A failed child has printed its own
  one-line error; the parent raises :class:`~stages.lib.core.errors.ChildFailed` with its exit code.
- A child runs on the GPU its stage holds (``CUDA_VISIBLE_DEVICES``, :mod:`stages.lib.core.gpus`)
  and does not lock one again.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .errors import BackendUnavailable, ChildFailed
from .gpus import CHILD_ENV as _CHILD

TRT_PYTHON = "TRT_PYTHON"


def trt_python() -> str | None:
    """The interpreter TensorRT work must run in, or None for this one.

    Raises BackendUnavailable when ``TRT_PYTHON`` names no executable file.
    """
    path = os.environ.get(TRT_PYTHON)
    if not path or os.environ.get(_CHILD) == "trt":
        return None
    exe = Path(path)
    if not exe.is_file() or not os.access(exe, os.X_OK):
        what = "does not exist" if not exe.exists() else "is not an executable file"
        raise BackendUnavailable(
            f"{TRT_PYTHON}={path} {what}: point {TRT_PYTHON} at the python of the environment that has "
            "TensorRT, or unset it to use this interpreter"
        )
    return path


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
