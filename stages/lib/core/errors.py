"""Specific exceptions. Each message says what is wrong and how to fix it.

Only a stage's ``main()`` turns these into a one-line message and an exit code
(see :mod:`stages.lib.core.cli`).
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class: an expected failure with a message meant for the user."""


class ParamsError(PipelineError):
    """params.yaml (or an override) is missing keys, has unknown keys or bad values."""

    def __init__(self, problems: list[str], source: str = "params.yaml") -> None:
        self.problems = list(problems)
        joined = "; ".join(self.problems)
        super().__init__(f"invalid parameters in {source}: {joined}")


class InputFileError(PipelineError):
    """A file a stage reads is missing or unreadable (usually: an earlier stage has not run)."""


class DatasetError(PipelineError):
    """The dataset is missing or malformed."""


class ImageError(DatasetError):
    """An image file is unreadable, not an image, or not the size the model's images have."""


class PretrainedWeightsError(PipelineError):
    """Pretrained weights were asked for but cannot be had."""


class CheckpointError(PipelineError):
    """A checkpoint file is missing, corrupt or was made for another model."""


class OnnxModelError(PipelineError):
    """An ONNX file is missing, corrupt or fails onnx.checker."""


class ParityError(PipelineError):
    """Two backends disagree beyond the configured tolerance."""

    def __init__(self, what: str, mismatches: list[str]) -> None:
        self.mismatches = list(mismatches)
        shown = "; ".join(self.mismatches[:10])
        more = f" (+{len(self.mismatches) - 10} more)" if len(self.mismatches) > 10 else ""
        super().__init__(f"{what}: {len(self.mismatches)} mismatch(es): {shown}{more}")


class BackendUnavailable(PipelineError):
    """A backend or precision cannot run on this machine (no GPU, no TensorRT, ...)."""


class UnsupportedCombination(PipelineError):
    """A backend does not implement a precision at all (e.g. PyTorch INT8)."""


class EngineError(PipelineError):
    """A TensorRT engine failed to build, load or run."""


class EngineMismatchError(EngineError):
    """An engine was built for other hardware or another TensorRT version."""


class GpuLockError(PipelineError):
    """The per-GPU lock files cannot be created or opened."""


class SweepError(PipelineError):
    """A DVC command of a sweep failed, or its experiments did not all succeed in time."""


class QualityGateError(PipelineError):
    """A reduced-precision model lost more accuracy than the budget allows."""


class ChildFailed(PipelineError):
    """A child stage process failed; it has already printed its own one-line error."""

    def __init__(self, exit_code: int, what: str) -> None:
        self.exit_code = exit_code
        super().__init__(f"{what} failed (exit {exit_code})")


class ServingError(PipelineError):
    """A model server failed to start, answer or stop, or its load generator failed."""
