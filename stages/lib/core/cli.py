"""The one place that turns exceptions into exit codes and one-line messages."""

from __future__ import annotations

import errno
import logging
import os
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

from .errors import FS_FAULTS, ChildFailed, OutputWriteError, PipelineError, human_bytes, is_out_of_memory, oom_words

log = logging.getLogger(__name__)


def configure_logging() -> None:
    level = os.environ.get("PIPELINE_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )
    for noisy in ("onnx_ir", "onnxscript", "torch.onnx", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_main(stage: str, body: Callable[[], None], gpu: bool = False) -> int:
    """Run a stage body: PipelineError -> one line on stderr and exit code 1.

    ``gpu``: the stage may touch a GPU, so it holds one for the whole body (see
    :mod:`stages.lib.core.gpus`; a no-op without a GPU, and in per-backend child processes).
    A file-system fault (:data:`~stages.lib.core.io.FS_FAULTS`: full, read-only, permission,
    quota) is the machine's, not a bug: one line too (:func:`os_error_line`), as is a runtime's
    failed allocation (:func:`~stages.lib.core.errors.is_out_of_memory`).
    Unexpected exceptions keep their traceback: they are bugs, not user errors.
    """
    configure_logging()
    from .gpus import hold_gpu

    held: AbstractContextManager[object] = hold_gpu(stage) if gpu else nullcontext()
    try:
        with held:
            body()
    except ChildFailed as exc:  # the child already printed its one-line error
        return exc.exit_code
    except PipelineError as exc:
        message = " ".join(str(exc).split())  # one line, whatever the cause's text holds
        print(f"error: {stage}: {message}", file=sys.stderr)
        return 1
    except OSError as exc:
        if exc.errno not in FS_FAULTS:
            raise
        print(f"error: {stage}: {os_error_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        print(f"error: {stage}: out of memory ({oom_words(exc)}): {OOM_REMEDY}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"error: {stage}: interrupted", file=sys.stderr)
        return 130
    return 0


OOM_REMEDY = "lower the batch size (train.batch_size, bench.batch_sizes, serve.batch_size) or free memory, then rerun"

CAUSES = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


def os_error_line(exc: OSError) -> str:
    """A file-system fault in words: the cause, the path, the space needed and what to do."""
    path = _shown(exc.filename)
    if not isinstance(exc, OutputWriteError):
        return f"{CAUSES.get(exc.errno or 0, exc.strerror)} at {path}: {_remedy(exc.errno, path, None)}"
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    need = exc.need_bytes if full else None
    sizes = [f"needs {'at least' if exc.at_least else 'about'} {human_bytes(need)}"] if need else []
    if full and exc.free_bytes is not None:
        sizes.append(f"{human_bytes(exc.free_bytes)} free there")
    detail = f" ({', '.join(sizes)})" if sizes else ""
    return f"{CAUSES.get(exc.errno or 0, exc.strerror)} writing {path}{detail}: {_remedy(exc.errno, path, need)}"


def _remedy(code: int | None, path: str, need: int | None) -> str:
    folder = os.path.dirname(path) or "."
    if code == errno.ENOSPC:
        amount = f"at least {human_bytes(need)}" if need else "space"
        return f"free {amount} on that file system (or move the project and its DVC cache to a larger one), then rerun"
    if code == errno.EDQUOT:
        return "free space within your quota (or ask for a larger quota), then rerun"
    if code == errno.EROFS:
        return f"remount {folder} read-write or run from a clone on a writable file system, then rerun"
    return f"give this user write permission on {folder} (or run from a clone it owns), then rerun"


def _shown(filename: object) -> str:
    """A path relative to the working directory when it lies inside it."""
    if filename is None:
        return "an unnamed file"
    text = os.fsdecode(filename) if isinstance(filename, (str, bytes, os.PathLike)) else str(filename)
    rel = os.path.relpath(text) if os.path.isabs(text) else text
    return text if rel.startswith("..") else rel
