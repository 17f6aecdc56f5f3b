"""A small ONNX conv net for the INT8 budget tests, optionally with one planted intolerant
conv: the conv before it writes one channel at ``outlier`` times the others' scale, so the
planted conv's per-tensor INT8 input range is set by that channel and the rest round to zero.
The net has every kind of Q/DQ group: convs, a downsample block's skip pair and the pool pair."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES = 10
SIZE = 8  # input images are 3 x SIZE x SIZE


def toy_model(path: Path, outlier: float, seed: int = 0) -> Path:
    """x -> conv0 -> relu -> [planted] conv_p -> relu -> {conv_b, conv_d (1x1)} -> add -> relu
    -> global average pool -> flatten -> gemm; saved at ``path`` (opset 17)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def w(name: str, cout: int, cin: int, k: int) -> onnx.TensorProto:
        return numpy_helper.from_array(
            (rng.normal(size=(cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(np.float32), name
        )

    w0 = numpy_helper.to_array(w("w0", 8, 3, 3)).copy()
    w0[0] *= outlier  # channel 0 of conv0's output: the outlier channel
    wp = numpy_helper.to_array(w("wp", 8, 8, 3)).copy()
    wp[:, 0] = 0.0  # the planted conv ignores the outlier channel in FP32
    inits = [
        numpy_helper.from_array(w0, "w0"),
        numpy_helper.from_array(wp, "wp"),
        w("wb", 8, 8, 3),
        w("wd", 8, 8, 1),
        numpy_helper.from_array((rng.normal(size=(CLASSES, 8)) * 3).astype(np.float32), "wfc"),
        numpy_helper.from_array(np.zeros(CLASSES, np.float32), "bfc"),
    ]
    pad = {"pads": [1, 1, 1, 1]}
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], "conv0", **pad),
        helper.make_node("Relu", ["c0"], ["r0"], "relu0"),
        helper.make_node("Conv", ["r0", "wp"], ["cp"], "conv_p", **pad),
        helper.make_node("Relu", ["cp"], ["rp"], "relu_p"),
        helper.make_node("Conv", ["rp", "wb"], ["cb"], "conv_b", **pad),
        helper.make_node("Conv", ["rp", "wd"], ["cd"], "conv_d"),
        helper.make_node("Add", ["cb", "cd"], ["s"], "add"),
        helper.make_node("Relu", ["s"], ["rs"], "relu_s"),
        helper.make_node("GlobalAveragePool", ["rs"], ["g"], "pool"),
        helper.make_node("Flatten", ["g"], ["f"], "flatten"),
        helper.make_node("Gemm", ["f", "wfc", "bfc"], ["logits"], "fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "toy",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def toy_images(n: int, seed: int) -> np.ndarray:
    """``n`` float NCHW inputs for the toy model."""
    return np.random.default_rng(seed).normal(size=(n, 3, SIZE, SIZE)).astype(np.float32)
