"""The one place that turns exceptions into exit codes and one-line messages."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

from .errors import ChildFailed, PipelineError

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
    except KeyboardInterrupt:
        print(f"error: {stage}: interrupted", file=sys.stderr)
        return 130
    return 0
