"""PyTorch eager and torch.compile runners."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from ..core.errors import BackendUnavailable, UnsupportedCombination
from ..core.params import Params
from ..core.timing import TimedOp
from ..model.networks import load_checkpoint
from .base import Artifacts, Runner

log = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def create(backend: str, precision: str, artifacts: Artifacts, params: Params) -> Runner:
    if precision not in _DTYPES:
        raise UnsupportedCombination(
            f"{backend} has no {precision.upper()} path here; INT8 runs from the Q/DQ ONNX "
            "model on ONNX Runtime and TensorRT"
        )
    cuda = params.device == "cuda" and torch.cuda.is_available()
    if params.device == "cuda" and not cuda:
        raise BackendUnavailable(f"{backend}: params ask for device=cuda but no CUDA GPU is visible")
    if precision == "fp16" and not cuda:
        raise BackendUnavailable(f"{backend}: FP16 inference is run on CUDA only (device=cpu)")
    if backend == "torch_compile" and precision != "fp16":
        raise UnsupportedCombination(
            "torch_compile is run in FP16 only, its strongest setting (each batch shape costs a compilation)"
        )
    if backend == "torch_compile" and not cuda:
        raise BackendUnavailable("torch_compile: benchmarked on CUDA only (device=cpu)")
    if artifacts.checkpoint is None:
        raise BackendUnavailable(f"{backend}: no checkpoint given")
    return TorchRunner(backend, precision, params, artifacts.checkpoint, compiled=backend == "torch_compile")


class TorchRunner(Runner):
    def __init__(self, backend: str, precision: str, params: Params, checkpoint: Any, compiled: bool) -> None:
        super().__init__(precision, "cuda" if params.device == "cuda" else "cpu")
        self.backend = backend
        self.params = params
        self.checkpoint = checkpoint
        self.compiled = compiled
        self.dtype = _DTYPES[precision]
        self.model: Any = None
        self.memory_format = torch.channels_last if self.device == "cuda" else torch.contiguous_format

    def open(self) -> None:
        module, _ = load_checkpoint(self.checkpoint, self.params.model)
        module = module.to(self.device, self.dtype).to(memory_format=self.memory_format).eval()
        self.model = torch.compile(module, dynamic=False) if self.compiled else module
        if self.device == "cuda":
            torch.backends.cudnn.benchmark = True

    def close(self) -> None:
        self.model = None
        if self.device == "cuda":
            torch.cuda.empty_cache()

    def input_shape(self) -> tuple[int, int, int]:
        s = self.params.model.image_size
        return (3, s, s)

    @torch.inference_mode()
    def infer(self, x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(x).to(self.device, non_blocking=False)
        t = t.to(self.dtype).contiguous(memory_format=self.memory_format)
        return self.model(t).float().cpu().numpy()

    def _device_input(self, batch_size: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(batch_size)
        x = torch.randn(batch_size, *self.input_shape(), generator=gen)
        return x.to(self.device, self.dtype).contiguous(memory_format=self.memory_format)

    def compute_op(self, batch_size: int, cuda_graph: bool) -> TimedOp:
        x = self._device_input(batch_size)
        model = self.model
        if self.device != "cuda":

            def step() -> None:
                with torch.inference_mode():
                    model(x)

            return TimedOp(step, lambda: None, None, "host clock around forward() on CPU tensors")

        step, graphed = _cuda_step(model, x, cuda_graph)
        stream = torch.cuda.current_stream().cuda_stream
        what = "forward() on a device-resident input" + (", replayed as a CUDA graph" if graphed else "")
        return TimedOp(step, torch.cuda.synchronize, stream, what, cuda_graph=graphed)

    def end_to_end_op(self, batch_size: int) -> TimedOp:
        if self.device != "cuda":
            return super().end_to_end_op(batch_size)
        host = torch.randn(batch_size, *self.input_shape()).pin_memory()
        dev = torch.empty_like(host, device="cuda")
        out_host = torch.empty(batch_size, self.params.model.num_classes).pin_memory()
        model = self.model

        def step() -> None:
            with torch.inference_mode():
                dev.copy_(host, non_blocking=True)
                y = model(dev.to(self.dtype).contiguous(memory_format=self.memory_format))
                out_host.copy_(y.float(), non_blocking=True)

        return TimedOp(
            step,
            torch.cuda.synchronize,
            None,
            "host clock: pinned fp32 host input -> H2D -> forward -> D2H, synchronised",
        )

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"torch": torch.__version__, "device": self.device, "compiled": self.compiled}
        if self.device == "cuda":
            info["memory_format"] = "channels_last"
            info["torch_cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return info


def _cuda_step(model: Any, x: torch.Tensor, cuda_graph: bool) -> tuple[Any, bool]:
    """A step that runs ``model(x)``; captured as a CUDA graph when asked and possible."""

    def eager() -> None:
        with torch.inference_mode():
            model(x)

    if not cuda_graph:
        return eager, False
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.inference_mode():
        for _ in range(3):
            model(x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.inference_mode(), torch.cuda.graph(graph):
            model(x)
    except RuntimeError as exc:
        log.warning("CUDA graph capture failed (%s); timing without a graph", str(exc).splitlines()[0])
        return eager, False
    return graph.replay, True
