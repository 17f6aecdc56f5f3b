"""Backend registry: a backend name -> the module that creates its runner (imported lazily,
so the TensorRT interpreter never imports torch and CPU machines never import tensorrt)."""

from __future__ import annotations

import importlib

from ..core.errors import BackendUnavailable
from ..core.params import BACKENDS, Params
from .base import Artifacts, Runner

_MODULES = {
    "pytorch": "stages.lib.runners.torch_runner",
    "torch_compile": "stages.lib.runners.torch_runner",
    "onnxruntime": "stages.lib.runners.ort_runner",
    "tensorrt": "stages.lib.runners.trt_runner",
}
assert set(_MODULES) == set(BACKENDS)


def create_runner(backend: str, precision: str, artifacts: Artifacts, params: Params) -> Runner:
    """Runner for ``backend`` x ``precision``; raises UnsupportedCombination or
    BackendUnavailable (with the reason) before loading anything heavy."""
    try:
        module = importlib.import_module(_MODULES[backend])
    except ImportError as exc:
        raise BackendUnavailable(f"{backend}: cannot import its runtime ({exc})") from exc
    runner: Runner = module.create(backend, precision, artifacts, params)
    return runner
