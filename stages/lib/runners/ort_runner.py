"""ONNX Runtime runner (CPU or CUDA execution provider)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import BackendUnavailable, OnnxModelError
from ..core.params import Params
from ..core.timing import TimedOp
from ..data.inputs import InputSpec
from .base import Artifacts, Runner

# ONNX Runtime's type strings for the input types models here have
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8}


def create(backend: str, precision: str, artifacts: Artifacts, params: Params) -> Runner:
    import onnxruntime as ort

    cuda = params.device == "cuda"
    if cuda and "CUDAExecutionProvider" not in ort.get_available_providers():
        raise BackendUnavailable(
            "onnxruntime: no CUDA execution provider (install onnxruntime-gpu); "
            f"available: {', '.join(ort.get_available_providers())}"
        )
    if precision == "fp16" and not cuda:
        raise BackendUnavailable("onnxruntime: FP16 convolutions run on the CUDA provider only")
    if artifacts.onnx is None:
        raise BackendUnavailable(f"onnxruntime: no ONNX model given for {precision}")
    return OrtRunner(precision, params, artifacts.onnx)


def available_device(p: Params) -> str:
    """ "cuda" when params ask for it and ONNX Runtime has the CUDA provider, else "cpu"."""
    import onnxruntime as ort

    if p.device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return "cuda"
    return "cpu"


def reference_runner(p: Params, precision: str, path: Path, device: str) -> OrtRunner:
    """ONNX Runtime in true FP32 (TF32 off on CUDA): the reference everything is checked against."""
    return OrtRunner(precision, dataclasses.replace(p, device=device), path, tf32=False)


class OrtRunner(Runner):
    backend = "onnxruntime"

    def __init__(self, precision: str, params: Params, onnx_path: Path, tf32: bool = True) -> None:
        super().__init__(precision, params.device)
        self.params = params
        self.onnx_path = Path(onnx_path)
        self.tf32 = tf32  # ORT's CUDA default; off for reference logits in true FP32
        self.session: Any = None

    def open(self) -> None:
        import onnxruntime as ort

        if not self.onnx_path.is_file():
            raise OnnxModelError(f"{self.onnx_path} is missing: run `dvc repro`")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        providers: list[Any] = ["CPUExecutionProvider"]
        if self.device == "cuda":
            providers = [
                ("CUDAExecutionProvider", {"cudnn_conv_algo_search": "EXHAUSTIVE", "use_tf32": int(self.tf32)}),
                "CPUExecutionProvider",
            ]
        try:
            self.session = ort.InferenceSession(str(self.onnx_path), opts, providers=providers)
        except Exception as exc:  # ORT raises its own exception types from C++
            raise OnnxModelError(f"{self.onnx_path}: ONNX Runtime cannot load it ({exc})") from exc
        active = self.session.get_providers()
        if self.device == "cuda" and active[0] != "CUDAExecutionProvider":
            raise BackendUnavailable(
                f"onnxruntime: the CUDA provider failed to initialise (active: {', '.join(active)}); "
                "check that onnxruntime-gpu matches this CUDA/cuDNN"
            )
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = self.session.get_outputs()[0].name
        if inp.type not in _ORT_TYPES:
            raise OnnxModelError(f"{self.onnx_path}: input of type {inp.type}; expected one of {', '.join(_ORT_TYPES)}")
        self.spec = InputSpec.from_dims(_ORT_TYPES[inp.type], inp.shape[1:], where=str(self.onnx_path))

    def close(self) -> None:
        self.session = None

    def input_shape(self) -> tuple[int, int, int]:
        return self.input_spec().shape

    def input_spec(self) -> InputSpec:
        """Read from the model's input (raw uint8 NHWC, float16 or float32 NCHW) once open."""
        if self.session is None:
            raise OnnxModelError(f"{self.onnx_path}: the runner is not open, so its input is not known yet")
        return self.spec

    def infer(self, x: np.ndarray) -> np.ndarray:
        out = self.session.run([self.output_name], {self.input_name: x})[0]
        return np.asarray(out, dtype=np.float32)

    def compute_op(self, batch_size: int, cuda_graph: bool) -> TimedOp:
        x = self.bench_batch(batch_size)
        if self.device != "cuda":
            return TimedOp(
                lambda: self.infer(x),
                lambda: None,
                None,
                "host clock around session.run() on host arrays (CPU provider)",
            )
        import onnxruntime as ort

        x_dev = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_name, x_dev)
        binding.bind_output(self.output_name, "cuda", 0)
        sess = self.session

        def step() -> None:
            sess.run_with_iobinding(binding)

        return TimedOp(
            step,
            lambda: None,
            None,
            "host clock around run_with_iobinding() on device-resident input and "
            "output (ORT synchronises its CUDA stream at the end of each run)",
        )

    def end_to_end_op(self, batch_size: int) -> TimedOp:
        op = super().end_to_end_op(batch_size)
        op.timed = "host clock around session.run(): host input -> host logits (ORT copies)"
        return op

    def describe(self) -> dict[str, Any]:
        import onnxruntime as ort

        providers = self.session.get_providers() if self.session else []
        return {
            "onnxruntime": ort.__version__,
            "providers": providers,
            "model": str(self.onnx_path),
            "tf32": self.tf32 if self.device == "cuda" else None,
            "input": self.spec.describe() if self.session else None,
        }
