"""The Q/DQ groups of a quantized ONNX model, and the model with some of them back in float.

A group is what TensorRT quantizes together: a conv's input and weight quantizers, a residual
Add's quantized inputs (the skip pair), an average pool's input and output pair. Every
quantizer here is a QuantizeLinear -> DequantizeLinear pair on a float tensor (the calibrate
stage adds Q/DQ pairs to float weights too), so reverting a group routes each of its consumers
back to the float tensor the pair quantizes. The pair stays where other consumers still read
it; a pair nobody reads any more is removed. Works on an FP32 or an FP16 base alike: the
reverted node then runs in the base's float type.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import OnnxModelError
from .onnxgraph import POOL_OPS

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


@dataclass(frozen=True)
class Edge:
    """One quantized input: ``node``'s input ``index`` reads a DQ output whose pair quantizes ``source``."""

    node: str
    index: int
    source: str


@dataclass
class Group:
    """Quantized inputs reverted together: ``kind`` is conv, skip, pool or the consumer's op."""

    name: str
    kind: str
    node: str
    edges: list[Edge] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        """The group as the ranking and the report record it."""
        return {"group": self.name, "kind": self.kind, "node": self.node, "quantized_inputs": len(self.edges)}


def _pairs(graph: Any) -> dict[str, str]:
    """DQ output -> the float tensor its Q/DQ pair quantizes, for every Q -> DQ pair."""
    producer = {o: n for n in graph.node for o in n.output}
    out = {}
    for dq in [n for n in graph.node if n.op_type == "DequantizeLinear"]:
        q = producer.get(dq.input[0])
        if q is not None and q.op_type == "QuantizeLinear":
            out[dq.output[0]] = q.input[0]
    return out


def find_groups(model: Any) -> list[Group]:
    """The model's Q/DQ groups, in graph order."""
    graph = model.graph
    pairs = _pairs(graph)
    producer = {o: n for n in graph.node for o in n.output}
    groups: dict[str, Group] = {}
    for node in graph.node:
        for i, tensor in enumerate(node.input):
            if tensor not in pairs:
                continue
            source = pairs[tensor]
            owner, kind = _owner(node, producer.get(source))
            key = f"{kind}:{owner.name}"
            groups.setdefault(key, Group(key, kind, owner.name)).edges.append(Edge(node.name, i, source))
    return list(groups.values())


def _owner(consumer: Any, source_producer: Any) -> tuple[Any, str]:
    """The node whose group a quantized input of ``consumer`` belongs to, and the group's kind:
    a pool's output pair belongs to the pool, as its input pair does."""
    if consumer.op_type == "Conv":
        return consumer, "conv"
    if consumer.op_type in POOL_OPS:
        return consumer, "pool"
    if source_producer is not None and source_producer.op_type in POOL_OPS:
        return source_producer, "pool"
    if consumer.op_type == "Add":
        return consumer, "skip"
    return consumer, consumer.op_type.lower()


def revert(model: Any, groups: Iterable[Group]) -> Any:
    """A copy of ``model`` with ``groups`` back in float; unused Q/DQ pairs and initializers removed."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    by_name = {n.name: n for n in out.graph.node}
    for group in groups:
        for e in group.edges:
            node = by_name.get(e.node)
            if node is None or e.index >= len(node.input):
                raise OnnxModelError(f"group {group.name}: node {e.node!r} is not in the model; rank it again")
            node.input[e.index] = e.source
    _prune(out.graph)
    return out


def _prune(graph: Any) -> None:
    """Remove Q/DQ nodes whose outputs nobody reads, then initializers nobody reads."""
    outputs = {o.name for o in graph.output}
    while True:
        read = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if n.op_type in QDQ_OPS and not any(o in read for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    read = {i for n in graph.node for i in n.input} | outputs
    keep = [t for t in graph.initializer if t.name in read]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def select(groups: list[Group], names: Iterable[str]) -> list[Group]:
    """The groups called ``names``, in that order; an unknown name is an error."""
    by_name = {g.name: g for g in groups}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise OnnxModelError(
            f"groups {', '.join(missing)} are not in the Q/DQ model: the ranking is stale, run `dvc repro rank`"
        )
    return [by_name[n] for n in names]
