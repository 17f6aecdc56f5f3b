"""A Triton Inference Server (PyTriton) serving one model through the project's own runner.

Runs in the serving interpreter ($SERVE_PYTHON; see stages.lib.serving.process):

    python -m stages.lib.serving.server --spec spec.json --params params.yaml --backend B
        --precision P --onnx F --engine-dir D --grpc-port N --http-port M --status S

The bound function hands each dynamic batch to ``Runner.infer``, so preprocessing and
arithmetic are the pipeline's. Triton listens on 127.0.0.1 only, with dynamic batching as
the model spec says. It writes ``--status`` once: ``ready`` when the model answers, or
``skipped`` with the reason when the runner cannot run here. It stops on TERM (or INT).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from ..core.cli import run_main
from ..core.config import load_params
from ..core.errors import BackendUnavailable, ServingError, UnsupportedCombination
from ..core.io import read_json, write_json
from ..runners.base import Artifacts, Runner
from ..runners.registry import create_runner
from .process import TOKEN_ENV
from .spec import ModelSpec

log = logging.getLogger(__name__)


def bound_function(runner: Runner, spec: ModelSpec) -> Any:
    """The PyTriton inference callable: one batch in, the runner's logits out."""
    import numpy as np
    from pytriton.decorators import batch

    if len(spec.inputs) != 1 or len(spec.outputs) != 1:
        raise ServingError(
            f"{spec.name}: a runner serves one input and one output, the model has {spec.inputs} -> {spec.outputs}"
        )
    name_in, out = spec.inputs[0].name, spec.outputs[0]

    @batch  # type: ignore[misc]
    def infer(**inputs: Any) -> dict[str, Any]:
        logits = runner.infer(inputs[name_in])
        return {out.name: np.asarray(logits).astype(out.dtype, copy=False)}

    return infer


def serve(runner: Runner, spec: ModelSpec, args: argparse.Namespace, stop: threading.Event) -> None:
    """Bind the runner, start Triton on loopback, report ready, serve until ``stop`` is set."""
    import numpy as np
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.http_port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        allow_metrics=False,
        log_verbose=0,
    )
    batcher = DynamicBatcher(
        max_queue_delay_microseconds=spec.max_queue_delay_us,
        preferred_batch_size=list(spec.preferred_batch_sizes) or None,
    )
    security = TritonSecurityConfig(access_token=os.environ.get(TOKEN_ENV) or None)
    with Triton(config=config, security_config=security) as triton:
        triton.bind(
            model_name=spec.name,
            infer_func=bound_function(runner, spec),
            inputs=[Tensor(name=t.name, dtype=np.dtype(t.dtype).type, shape=t.dims) for t in spec.inputs],
            outputs=[Tensor(name=t.name, dtype=np.dtype(t.dtype).type, shape=t.dims) for t in spec.outputs],
            config=ModelConfig(max_batch_size=spec.max_batch_size, batcher=batcher),
            strict=True,
        )
        triton.run()
        write_json(
            args.status, {"status": "ready", "model": spec.name, "runtime": runner.describe(), "pid": os.getpid()}
        )
        log.info("serving %s on 127.0.0.1 (gRPC %d, HTTP %d)", spec.name, args.grpc_port, args.http_port)
        while not stop.wait(0.5):
            if not triton.is_alive():
                raise ServingError(f"the Triton server serving {spec.name} stopped by itself")
    log.info("stopped serving %s", spec.name)


def run(args: argparse.Namespace) -> None:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    p = load_params(args.params)
    spec = ModelSpec.from_json(read_json(args.spec))
    try:
        runner = create_runner(args.backend, args.precision, Artifacts(None, args.onnx, args.engine_dir), p)
        runner.open()
    except (BackendUnavailable, UnsupportedCombination) as exc:
        write_json(args.status, {"status": "skipped", "reason": str(exc)})
        return
    except ImportError as exc:  # e.g. no onnxruntime in a TensorRT serving interpreter
        reason = f"{args.backend}: its runtime is not importable in the serving interpreter ({exc})"
        write_json(args.status, {"status": "skipped", "reason": reason})
        return
    try:
        serve(runner, spec, args, stop)
    finally:
        runner.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--spec", type=Path, required=True, help="the model spec (ModelSpec JSON)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--backend", required=True)
    ap.add_argument("--precision", required=True)
    ap.add_argument("--onnx", type=Path)
    ap.add_argument("--engine-dir", type=Path)
    ap.add_argument("--grpc-port", type=int, required=True)
    ap.add_argument("--http-port", type=int, required=True)
    ap.add_argument("--status", type=Path, required=True)
    args = ap.parse_args(argv)
    return run_main(f"server {args.backend} {args.precision}", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
