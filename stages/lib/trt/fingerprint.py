"""What an engine is tied to: GPU model, compute capability, TensorRT and driver version."""

from __future__ import annotations

from typing import Any

from ..core.errors import EngineMismatchError, PipelineError

# Fields that make an engine unusable when they differ (TensorRT engines are not portable
# across GPU models or TensorRT versions); the driver only triggers a rebuild in DVC.
BINDING_FIELDS = ("gpu", "compute_capability", "tensorrt")


def probe() -> dict[str, Any]:
    """Describe this machine; stable across runs (no timestamps), so DVC can compare it."""
    fp: dict[str, Any] = {
        "gpu": None,
        "compute_capability": None,
        "driver": None,
        "cuda_runtime": None,
        "tensorrt": None,
    }
    reasons = []
    try:
        import tensorrt as trt

        fp["tensorrt"] = trt.__version__
    except ImportError as exc:
        reasons.append(f"TensorRT not importable ({exc})")
    try:
        from ..core import cuda

        if cuda.device_count() == 0:
            reasons.append("no CUDA GPU visible")
        else:
            props = cuda.device_properties(0)
            fp.update(
                gpu=props["name"],
                compute_capability=props["compute_capability"],
                driver=props["driver_version"],
                cuda_runtime=props["cuda_runtime_version"],
            )
    except PipelineError as exc:
        reasons.append(str(exc))
    fp["available"] = not reasons
    fp["reason"] = "; ".join(reasons) if reasons else None
    return fp


def describe(fp: dict[str, Any]) -> str:
    return f"{fp.get('gpu')} (sm {fp.get('compute_capability')}), TensorRT {fp.get('tensorrt')}"


def check_compatible(engine_path: str, built_for: dict[str, Any], here: dict[str, Any]) -> None:
    """Raise EngineMismatchError when an engine was built for other hardware or TensorRT."""
    diffs = [f for f in BINDING_FIELDS if built_for.get(f) != here.get(f)]
    if diffs:
        raise EngineMismatchError(
            f"{engine_path} was built for {describe(built_for)} but this machine has "
            f"{describe(here)}: run `dvc repro` to rebuild engines here"
        )
