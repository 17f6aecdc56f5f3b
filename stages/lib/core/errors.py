"""Specific exceptions. Each message says what is wrong and how to fix it.

Only a stage's ``main()`` turns these into a one-line message and an exit code
(see :mod:`stages.lib.core.cli`).
"""

from __future__ import annotations

import errno

# errno values that are faults of the machine, not bugs: main() turns them into one line
FS_FAULTS = (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT)


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


class EngineBuildFailed(EngineError):
    """TensorRT's builder returned no engine (its own errors, such as a failed allocation, say why)."""


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


class OutputWriteError(OSError):
    """A file-system fault (full, read-only, no permission, quota) while writing an output.

    ``filename`` is the output's final path (not its temporary file); ``need_bytes`` the space
    the write needs where known (``at_least``: only a lower bound, what was written before the
    fault), ``free_bytes`` what its file system had left. :mod:`stages.lib.core.cli` turns it
    into one line.
    """

    def __init__(
        self,
        code: int,
        path: str,
        need_bytes: int | None = None,
        free_bytes: int | None = None,
        at_least: bool = False,
    ) -> None:
        import os

        super().__init__(code, os.strerror(code), path)
        self.need_bytes = need_bytes
        self.free_bytes = free_bytes
        self.at_least = at_least


class OutOfMemory(PipelineError):
    """A case needs more memory than the machine has (refused before it runs, or it ran out)."""


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    value, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"


# What the runtimes say when an allocation fails (MemoryError aside): PyTorch's CUDA and CPU
# allocators, ONNX Runtime's arena, the CUDA runtime and driver, TensorRT's builder and context.
_OOM_TEXT = (
    "out of memory",
    "unable to allocate",
    "failed to allocate",
    "cudaerrormemoryallocation",
    "cuda_error_out_of_memory",
    "allocation failed",
    "bad_alloc",
)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure of a runtime (a fault of the machine, not a bug)."""
    return isinstance(exc, MemoryError) or any(t in str(exc).lower() for t in _OOM_TEXT)


def oom_words(exc: BaseException) -> str:
    """The runtime's own words on a failed allocation, from the phrase that says so."""
    text = " ".join(str(exc).split())
    at = min((text.lower().find(t) for t in _OOM_TEXT if t in text.lower()), default=0)
    return text[at : at + 160] or type(exc).__name__
