"""Small ONNX graph edits and reads shared by export and calibrate (onnx only, no runtime)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..core.errors import OnnxModelError
from ..data.inputs import InputSpec

log = logging.getLogger(__name__)


def topological_sort(graph: Any) -> None:
    """Reorder ``graph.node`` so every node comes after the producers of its inputs."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise OnnxModelError("graph edit produced a cycle or a dangling input")
        for n in ready:
            ordered.append(n)
            available.update(n.output)
        pending = [n for n in pending if all(n is not r for r in ready)]
    del graph.node[:]
    graph.node.extend(ordered)


def insert_qdq(graph: Any, tensor: str, amax: float, consumers: list[Any], tag: str = "skip") -> None:
    """Route ``tensor`` into each of ``consumers`` through one symmetric INT8 Quantize/Dequantize
    pair; ``tag`` goes into the new nodes' and initializers' names."""
    from onnx import helper, numpy_helper

    scale = numpy_helper.from_array(np.array(max(amax, 1e-8) / 127.0, np.float32), f"{tensor}_{tag}_scale")
    zero = numpy_helper.from_array(np.array(0, np.int8), f"{tensor}_{tag}_zero_point")
    graph.initializer.extend([scale, zero])
    q_out, dq_out = f"{tensor}_{tag}_q", f"{tensor}_{tag}_dq"
    graph.node.extend(
        [
            helper.make_node("QuantizeLinear", [tensor, scale.name, zero.name], [q_out], name=f"{tensor}_{tag}_Q"),
            helper.make_node("DequantizeLinear", [q_out, scale.name, zero.name], [dq_out], name=f"{tensor}_{tag}_DQ"),
        ]
    )
    for consumer in consumers:
        for i, name in enumerate(consumer.input):
            if name == tensor:
                consumer.input[i] = dq_out


def quantize_skip_inputs(graph: Any, amax: dict[str, float], float_nodes: set[str] | None = None) -> list[str]:
    """Q/DQ on the skip input of residual Adds left in float; returns the tensors it quantized.

    TensorRT fuses conv + add (+ ReLU) in INT8 when the add's other input is quantized. In
    identity blocks the skip tensor also feeds a Conv, so it already has Q/DQ; in downsample
    blocks the skip is the output of the 1x1 downsample Conv, which feeds only the Add. That
    Conv is recognised by its input being shared with the block's first Conv. ``amax`` holds
    the calibrated range of each tensor; a skip without one stays in float.
    """
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    done = []
    for add in [n for n in graph.node if n.op_type == "Add"]:
        for tensor in list(add.input):
            conv = producer.get(tensor)
            if conv is None or conv.op_type != "Conv" or consumers.get(conv.input[0], 0) < 2:
                continue
            if float_nodes and conv.name in float_nodes:  # its block stays in float: so does the skip
                continue
            if tensor not in amax:
                log.warning("no calibrated range for %s: its skip connection stays in float", tensor)
                continue
            insert_qdq(graph, tensor, amax[tensor], [add])
            done.append(tensor)
    topological_sort(graph)
    return done


POOL_OPS = ("GlobalAveragePool", "AveragePool")


def quantize_pools(graph: Any, amax: dict[str, float]) -> list[str]:
    """Q/DQ on the input and the output of each average pool; returns the pools quantized.

    TensorRT fuses DQ -> pooling -> Q into an INT8 pooling layer, so the conv before it can
    write INT8 and no float reformat sits between them. A pool whose input or output has no
    calibrated range, or whose output is a graph output, stays in float.
    """
    outputs = {o.name for o in graph.output}
    done = []
    for pool in [n for n in graph.node if n.op_type in POOL_OPS]:
        src, dst = pool.input[0], pool.output[0]
        readers = [n for n in graph.node if dst in n.input]
        if src not in amax or dst not in amax or dst in outputs or not readers:
            continue
        insert_qdq(graph, src, amax[src], [pool], tag="pool_in")
        insert_qdq(graph, dst, amax[dst], readers, tag="pool_out")
        done.append(pool.name)
    topological_sort(graph)
    return done


def input_spec(model: Any) -> InputSpec:
    """What an ONNX model takes: raw uint8 NHWC, or float NCHW (float32, or float16 with fp16 I/O)."""
    from onnx import TensorProto, helper

    inp = model.graph.input[0]
    t = inp.type.tensor_type
    if t.elem_type not in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.UINT8):
        kind = TensorProto.DataType.Name(t.elem_type)
        raise OnnxModelError(f"input {inp.name!r} has type {kind}; expected FLOAT, FLOAT16 or UINT8")
    dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim]
    return InputSpec.from_dims(helper.tensor_dtype_to_np_dtype(t.elem_type), dims[1:], where=f"input {inp.name!r}")


def cast_io_to_fp16(model: Any) -> list[str]:
    """fp16 graph inputs and outputs wherever they are float32, through a Cast at each edge
    (TensorRT fuses them with their neighbours); returns the tensors changed. A uint8 input
    (raw pixels) stays as it is."""
    from onnx import TensorProto

    return cast_float_io(model, outer=TensorProto.FLOAT16, inner=TensorProto.FLOAT)


def cast_float_io(model: Any, outer: int, inner: int) -> list[str]:
    """Graph inputs and outputs of type ``inner`` become ``outer`` (ONNX float types), with a
    Cast at each edge so the graph inside keeps ``inner``; returns the tensors changed. Other
    types (a uint8 input) stay as they are."""
    from onnx import TensorProto, helper

    g, changed = model.graph, []
    tag: dict[int, str] = {TensorProto.FLOAT: "fp32", TensorProto.FLOAT16: "fp16"}
    for inp in [i for i in g.input if i.type.tensor_type.elem_type == inner]:
        inside = f"{inp.name}_{tag[inner]}"
        _rename(g, inp.name, inside, outputs=False)
        g.node.append(helper.make_node("Cast", [inp.name], [inside], f"{inp.name}_to_{tag[inner]}", to=inner))
        inp.type.tensor_type.elem_type = outer
        changed.append(inp.name)
    for out in [o for o in g.output if o.type.tensor_type.elem_type == inner]:
        inside = f"{out.name}_{tag[inner]}"
        _rename(g, out.name, inside, outputs=True)
        g.node.append(helper.make_node("Cast", [inside], [out.name], f"{out.name}_to_{tag[outer]}", to=outer))
        out.type.tensor_type.elem_type = outer
        changed.append(out.name)
    topological_sort(g)
    return changed


def check_onnx(path: Any, name: str | None = None) -> None:
    """onnx.checker's full check (types and shapes) of the model file at ``path``, as one
    OnnxModelError line naming ``name`` (the path by default)."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.onnx_cpp2py_export.shape_inference.InferenceError, OSError) as exc:
        raise OnnxModelError(f"{name or path}: fails onnx.checker ({str(exc).splitlines()[0]})") from exc


FP16_QDQ_OPSET = 19  # QuantizeLinear/DequantizeLinear take float16 scales from opset 19 on


def default_opset(model: Any) -> int:
    """The model's opset of the default (ai.onnx) domain."""
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def raise_opset(model: Any, opset: int) -> Any:
    """``model`` at default-domain opset ``opset`` at least (onnx's version converter); the
    model itself when it is there already."""
    from onnx import version_converter

    if default_opset(model) >= opset:
        return model
    try:
        return version_converter.convert_version(model, opset)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise OnnxModelError(f"cannot raise the model from opset {default_opset(model)} to {opset} ({first})") from exc


def float_to_fp16(model: Any) -> int:
    """Every float32 tensor of ``model`` becomes float16, in place: initializers, Constant
    values, Casts to float, value_info and graph I/O (integer tensors such as zero points and
    shapes stay). Values beyond float16's range are clamped to it, and non-zero ones below its
    smallest subnormal become that subnormal (so no scale turns 0); returns how many values
    were clamped. Type-checking the result (onnx.checker, full) catches an op that needs float32."""
    from onnx import TensorProto, numpy_helper

    fp32, fp16 = TensorProto.FLOAT, TensorProto.FLOAT16
    g, clamped = model.graph, 0

    def convert(tensor: Any) -> None:
        nonlocal clamped
        array, n = _fp16_values(numpy_helper.to_array(tensor))
        tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
        clamped += n

    for init in [t for t in g.initializer if t.data_type == fp32]:
        convert(init)
    for node in g.node:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == fp32:
                attr.i = fp16
            elif node.op_type == "Constant" and attr.name == "value" and attr.t.data_type == fp32:
                convert(attr.t)
    for value in [*g.input, *g.output, *g.value_info]:
        if value.type.tensor_type.elem_type == fp32:
            value.type.tensor_type.elem_type = fp16
    return clamped


def _fp16_values(array: np.ndarray) -> tuple[np.ndarray, int]:
    """``array`` in float16, clamped as :func:`float_to_fp16` says, and how many values were."""
    info = np.finfo(np.float16)
    tiny = float(info.smallest_subnormal)
    big = np.abs(array) > float(info.max)
    small = (array != 0) & (np.abs(array) < tiny)
    out = np.where(small, np.copysign(tiny, array), np.clip(array, -float(info.max), float(info.max)))
    return out.astype(np.float16), int(big.sum() + small.sum())


def _rename(graph: Any, old: str, new: str, outputs: bool) -> None:
    """Every node input (or output) named ``old`` becomes ``new``."""
    for node in graph.node:
        names = node.output if outputs else node.input
        for i, name in enumerate(names):
            if name == old:
                names[i] = new
