"""Small ONNX graph edits shared by export and calibrate (onnx only, no runtime)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import OnnxModelError


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


def insert_qdq(graph: Any, tensor: str, amax: float, consumer: Any) -> None:
    """Route ``tensor`` into ``consumer`` through a symmetric INT8 Quantize/Dequantize pair."""
    from onnx import helper, numpy_helper

    scale = numpy_helper.from_array(np.array(max(amax, 1e-8) / 127.0, np.float32), f"{tensor}_skip_scale")
    zero = numpy_helper.from_array(np.array(0, np.int8), f"{tensor}_skip_zero_point")
    graph.initializer.extend([scale, zero])
    q_out, dq_out = f"{tensor}_skip_q", f"{tensor}_skip_dq"
    graph.node.extend(
        [
            helper.make_node("QuantizeLinear", [tensor, scale.name, zero.name], [q_out], name=f"{tensor}_skip_Q"),
            helper.make_node("DequantizeLinear", [q_out, scale.name, zero.name], [dq_out], name=f"{tensor}_skip_DQ"),
        ]
    )
    for i, name in enumerate(consumer.input):
        if name == tensor:
            consumer.input[i] = dq_out
