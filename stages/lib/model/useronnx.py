"""The user's own ONNX classifier (``model.onnx``): checked and adopted as the pipeline's FP32
model. It must have one image input, (N, 3, S, S) float at ``model.image_size`` (N fixed or
dynamic), and one output (N, num_classes); a fixed batch axis is made dynamic, and the model
must then run at batch 2 in ONNX Runtime. Nothing is written unless every check passes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import OnnxModelError
from ..core.io import atomic_path
from ..data.inputs import float_input, model_batches
from ..data.prepared import Split


def adopt_onnx(src: str | Path, dest: Path, image_size: int, num_classes: int) -> dict[str, Any]:
    """Check the ONNX model at ``src`` and write it to ``dest`` with a dynamic batch axis;
    returns what was found (input and output names and shapes, opset)."""
    import onnx

    src = Path(src)
    where = f"model.onnx: {src}"
    if not src.is_file():
        raise OnnxModelError(f"{where} does not exist; give the path of your .onnx file")
    try:
        model = onnx.load(str(src))
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises its own and protobuf's types
        raise OnnxModelError(f"{where}: not a valid ONNX model ({type(exc).__name__}: {exc})".splitlines()[0]) from exc
    graph = model.graph
    weights = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise OnnxModelError(f"{where}: has {len(inputs)} inputs and {len(graph.output)} outputs; expected 1 and 1")
    inp, out = inputs[0], graph.output[0]
    if inp.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise OnnxModelError(f"{where}: input {inp.name!r} is not float32 (NCHW images normalised as data.mean/std)")
    _expect_dims(where, inp, [None, 3, image_size, image_size])
    _expect_dims(where, out, [None, num_classes])
    for value in (inp, out):
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_param = "batch"
    with atomic_path(dest) as tmp:
        onnx.save(model, str(tmp))
        _runs_at_batch_2(tmp, where, inp.name, image_size, num_classes)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return {"source": str(src), "input": inp.name, "output": out.name, "opset": opset}


def _dims(value: Any) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]


def _expect_dims(where: str, value: Any, expected: list[int | None]) -> None:
    got = _dims(value)
    fits = len(got) == len(expected) and all(
        e is None or g is None or g == e for g, e in zip(got, expected, strict=False)
    )
    if not fits:
        shown = ["N" if e is None else e for e in expected]
        raise OnnxModelError(f"{where}: {value.name!r} has shape {got}, expected {shown} (N: any batch)")


def _runs_at_batch_2(path: Path, where: str, name: str, size: int, num_classes: int) -> None:
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (logits,) = sess.run(None, {name: np.zeros((2, 3, size, size), np.float32)})
    except Exception as exc:  # ONNX Runtime raises its own types
        raise OnnxModelError(
            f"{where}: does not run at batch 2 ({type(exc).__name__}); export it with a dynamic batch axis"
        ) from exc
    if logits.shape != (2, num_classes) or not np.isfinite(logits).all():
        raise OnnxModelError(f"{where}: gives logits of shape {logits.shape} or non-finite ones at batch 2")


def onnx_top1(path: str | Path, split: Split, mean: list[float], std: list[float], size: int) -> float:
    """Top-1 (%) of the ONNX model at ``path`` on ``split`` with ONNX Runtime on the CPU."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    correct, start = 0, 0
    for x in model_batches(split.images, float_input(size), mean, std, 64):
        (logits,) = sess.run(None, {name: x})
        correct += int((logits.argmax(1) == split.labels[start : start + len(x)]).sum())
        start += len(x)
    return 100.0 * correct / max(1, len(split))
