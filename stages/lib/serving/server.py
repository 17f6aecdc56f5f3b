"""A Triton Inference Server (PyTriton) serving one model through the project's own runner,
and beside it a pass-through model that does no compute.

Runs in the serving interpreter ($SERVE_PYTHON; see stages.lib.serving.process):

    python -m stages.lib.serving.server --spec spec.json --params params.yaml --backend B
        --precision P --onnx F --engine-dir D --grpc-port N --http-port M --status S
        [--instances K] [--decoupled]

The bound function hands each dynamic batch to ``Runner.infer``, so preprocessing and
arithmetic are the pipeline's. ``<name>_passthrough`` has the same inputs, outputs, batcher
and instances and answers zeros: what it costs is the serving path alone (``--backend none``
serves it alone). Triton listens on 127.0.0.1 only. It writes ``--status`` once: ``ready``
when the models answer, or ``skipped`` with the reason when the runner cannot run here. It
stops on TERM (or INT).
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

PASSTHROUGH_SUFFIX = "_passthrough"
NO_RUNNER = "none"  # --backend none: the pass-through model alone


def passthrough_name(model: str) -> str:
    """The name the pass-through model of ``model`` is served under."""
    return model + PASSTHROUGH_SUFFIX


def bound_function(runner: Runner, spec: ModelSpec, decoupled: bool = False) -> Any:
    """The PyTriton inference callable: one batch in, the runner's logits out (one response
    per request; a generator of it when the model is decoupled)."""
    import numpy as np

    if len(spec.inputs) != 1 or len(spec.outputs) != 1:
        raise ServingError(
            f"{spec.name}: a runner serves one input and one output, the model has {spec.inputs} -> {spec.outputs}"
        )
    name_in, out = spec.inputs[0].name, spec.outputs[0]

    def infer(**inputs: Any) -> dict[str, Any]:
        logits = runner.infer(inputs[name_in])
        return {out.name: np.asarray(logits).astype(out.dtype, copy=False)}

    return _wrapped(infer, decoupled)


def passthrough_function(spec: ModelSpec, decoupled: bool = False) -> Any:
    """An inference callable with the model's I/O that computes nothing: zeros of the output
    shape for each batch, through the same ``@batch`` wrapper as the runner's."""
    import numpy as np

    first = spec.inputs[0].name

    def infer(**inputs: Any) -> dict[str, Any]:
        n = len(inputs[first])
        return {t.name: np.zeros((n, *t.dims), dtype=t.dtype) for t in spec.outputs}

    return _wrapped(infer, decoupled)


def _wrapped(infer: Any, decoupled: bool) -> Any:
    from pytriton.decorators import batch

    if not decoupled:
        return batch(infer)

    @batch  # type: ignore[misc]
    def stream(**inputs: Any) -> Any:
        yield infer(**inputs)

    return stream


def triton_version(grpc_port: int) -> str:
    """The version the running Triton server reports (server metadata is not restricted)."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    try:
        return str(client.get_server_metadata(as_json=True).get("version"))
    finally:
        client.close()


def serve(runner: Runner | None, spec: ModelSpec, args: argparse.Namespace, stop: threading.Event) -> None:
    """Bind the runner (when there is one) and the pass-through model, start Triton on
    loopback, report ready, serve until ``stop`` is set."""
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
    models = {passthrough_name(spec.name): [passthrough_function(spec, args.decoupled) for _ in range(args.instances)]}
    if runner is not None:
        if args.instances != 1:  # instances would share the one runner from several threads
            raise ServingError(f"--instances {args.instances}: only the pass-through model (--backend none) takes it")
        models[spec.name] = [bound_function(runner, spec, args.decoupled)]
    model_config = ModelConfig(max_batch_size=spec.max_batch_size, batcher=batcher, decoupled=args.decoupled)
    with Triton(config=config, security_config=security) as triton:
        for name, functions in models.items():
            triton.bind(
                model_name=name,
                infer_func=functions,
                inputs=[Tensor(name=t.name, dtype=np.dtype(t.dtype).type, shape=t.dims) for t in spec.inputs],
                outputs=[Tensor(name=t.name, dtype=np.dtype(t.dtype).type, shape=t.dims) for t in spec.outputs],
                config=model_config,
                strict=True,
            )
        triton.run()
        status = {"status": "ready", "model": spec.name, "models": sorted(models), "pid": os.getpid()}
        status.update(triton=triton_version(args.grpc_port), runtime=runner.describe() if runner else None)
        write_json(args.status, status)
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
    if args.backend == NO_RUNNER:
        serve(None, spec, args, stop)
        return
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
    ap.add_argument("--backend", required=True, help=f"a runner, or {NO_RUNNER!r}: the pass-through model alone")
    ap.add_argument("--precision", required=True)
    ap.add_argument("--onnx", type=Path)
    ap.add_argument("--engine-dir", type=Path)
    ap.add_argument("--grpc-port", type=int, required=True)
    ap.add_argument("--http-port", type=int, required=True)
    ap.add_argument("--status", type=Path, required=True)
    ap.add_argument("--instances", type=int, default=1, help="bound functions (model instances) per model")
    ap.add_argument("--decoupled", action="store_true", help="decoupled models (one streamed response a request)")
    args = ap.parse_args(argv)
    return run_main(f"server {args.backend} {args.precision}", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
