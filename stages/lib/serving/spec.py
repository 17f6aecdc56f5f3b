"""What a served model is: its name, I/O tensors, batch bounds, dynamic batcher and instances.

One :class:`ModelSpec` describes a model both in the Triton model repository (rendered as
``config.pbtxt`` by :func:`to_pbtxt`) and when the served benchmark puts it behind a Triton
server, so the two cannot drift apart. The I/O is read from the artifact itself: the ONNX
graph (onnx, imported only here) or the ``io`` a TensorRT build recorded in its
build.json (TensorRT is not needed to read it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import BackendUnavailable, InputFileError, OnnxModelError
from ..core.io import read_json

if TYPE_CHECKING:
    from ..core.params import Params

TENSORRT_PLATFORM = "tensorrt_plan"
ONNX_PLATFORM = "onnxruntime_onnx"

# numpy dtype name -> Triton data type (model_config.proto DataType, without "TYPE_")
TRITON_DTYPES = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "bfloat16": "BF16",
}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name (float32, float16, uint8, ...)
    dims: tuple[int, ...]  # one item, without the batch dimension; -1: any size

    @property
    def triton_dtype(self) -> str:
        """The Triton wire type (FP32, UINT8, ...), as tritonclient's InferInput takes it."""
        if self.dtype not in TRITON_DTYPES:
            raise OnnxModelError(f"tensor {self.name!r} has type {self.dtype}, which Triton cannot carry")
        return TRITON_DTYPES[self.dtype]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    platform: str  # tensorrt_plan or onnxruntime_onnx
    max_batch_size: int
    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_us: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    kind: str  # KIND_GPU or KIND_CPU
    profiles: tuple[str, ...] = ()  # TensorRT optimization profiles an instance may use
    parameters: dict[str, str] = field(default_factory=dict)  # what the model is and needs

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ModelSpec:
        fields: dict[str, Any] = dict(raw)
        for key in ("inputs", "outputs"):
            fields[key] = tuple(TensorSpec(t["name"], t["dtype"], tuple(t["dims"])) for t in raw[key])
        fields["preferred_batch_sizes"] = tuple(raw["preferred_batch_sizes"])
        fields["profiles"] = tuple(raw["profiles"])
        return cls(**fields)


def served_name(model: str, precision: str, backend: str) -> str:
    """``<model>_<precision>`` for a TensorRT plan, ``<model>_<precision>_onnx`` for ONNX."""
    return f"{model}_{precision}" if backend == "tensorrt" else f"{model}_{precision}_onnx"


def batching(profiles: list[dict[str, int]]) -> tuple[int, tuple[int, ...]]:
    """(max_batch_size, preferred batch sizes) from the build profiles: the largest profile
    max, and the opt sizes above 1. A preferred size of 1 would make Triton's batcher send
    every lone request at once, since one request then already forms a preferred batch."""
    top = max(int(q["max"]) for q in profiles)
    return top, tuple(sorted({int(q["opt"]) for q in profiles if 1 < int(q["opt"]) <= top}))


def _split_batch(name: str, dtype: str, shape: list[int], where: str) -> TensorSpec:
    if not shape or shape[0] != -1:
        raise InputFileError(
            f"{where}: tensor {name!r} has shape {shape}; serving needs a dynamic batch dimension first"
        )
    return TensorSpec(name, dtype, tuple(int(d) for d in shape[1:]))


def engine_io(build: dict[str, Any], where: str) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """(inputs, outputs) from the I/O a build.json recorded (``io``: the parsed network's
    input and output: name, numpy dtype, shape with -1 for the dynamic batch)."""
    io = build.get("io")
    if not io:
        raise InputFileError(
            f"{where} records no engine I/O (an engine built by an older build stage): run `dvc repro -f build`"
        )
    t_in, t_out = io["input"], io["output"]
    return (
        (_split_batch(t_in["name"], t_in["dtype"], t_in["shape"], where),),
        (_split_batch(t_out["name"], t_out["dtype"], t_out["shape"], where),),
    )


def onnx_io(path: Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """(inputs, outputs) of an ONNX model's graph (initializers excluded)."""
    import onnx
    from onnx import helper

    if not path.is_file():
        raise OnnxModelError(f"{path} is missing: run `dvc repro`")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others from protobuf
        raise OnnxModelError(f"{path}: not a readable ONNX model ({exc})") from exc
    weights = {t.name for t in model.graph.initializer}

    def spec(value: Any) -> TensorSpec:
        t = value.type.tensor_type
        dtype = helper.tensor_dtype_to_np_dtype(t.elem_type).name
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        return _split_batch(value.name, dtype, shape, str(path))

    inputs = tuple(spec(v) for v in model.graph.input if v.name not in weights)
    return inputs, tuple(spec(v) for v in model.graph.output)


def engine_spec(name: str, build: dict[str, Any], where: str, max_queue_delay_us: int) -> ModelSpec:
    """The spec of a built TensorRT engine, from its build.json; BackendUnavailable when the
    engine was not built (no TensorRT or GPU where the build ran)."""
    if build.get("status") != "built":
        raise BackendUnavailable(f"TensorRT engine not built ({build.get('reason')})")
    inputs, outputs = engine_io(build, where)
    top, preferred = batching(build["profiles"])
    fp = build.get("fingerprint") or {}
    params = {
        f"built_for_{k}": str(fp.get(k)) for k in ("gpu", "compute_capability", "tensorrt", "driver", "cuda_runtime")
    }
    params.update(precision=str(build.get("precision")), onnx_sha256=str(build.get("onnx_sha256")))
    profiles = tuple(str(k) for k in range(len(build["profiles"])))
    return ModelSpec(
        name, TENSORRT_PLATFORM, top, preferred, max_queue_delay_us, inputs, outputs, "KIND_GPU", profiles, params
    )


def onnx_spec(
    name: str, path: Path, profiles: list[dict[str, int]], device: str, precision: str, max_queue_delay_us: int
) -> ModelSpec:
    """The spec of an ONNX model: the engines' batch bounds (the build profiles), so every
    model in the repository takes the same requests; GPU instances when params ask for CUDA."""
    inputs, outputs = onnx_io(path)
    top, preferred = batching(profiles)
    kind = "KIND_GPU" if device == "cuda" else "KIND_CPU"
    return ModelSpec(
        name, ONNX_PLATFORM, top, preferred, max_queue_delay_us, inputs, outputs, kind, (), {"precision": precision}
    )


def served_spec(p: Params, precision: str, backend: str, source: Path) -> ModelSpec:
    """The spec of one model of the repository, from ``source``: for ``tensorrt`` the engine's
    build.json, else the ONNX model (with the engines' batch bounds)."""
    name = served_name(p.model.name, precision, backend)
    if backend == "tensorrt":
        return engine_spec(name, read_json(source), str(source), p.serve.max_queue_delay_us)
    return onnx_spec(name, source, p.build.profile_dicts(), p.device, precision, p.serve.max_queue_delay_us)


def to_pbtxt(spec: ModelSpec, header: list[str]) -> str:
    """``config.pbtxt`` in protobuf text format (Triton's model_config.proto); ``header``
    lines become comments at the top."""
    lines = [f"# {h}" for h in header]
    lines += [f'name: "{spec.name}"', f'platform: "{spec.platform}"', f"max_batch_size: {spec.max_batch_size}"]
    for key, tensors in (("input", spec.inputs), ("output", spec.outputs)):
        lines.append(f"{key} [")
        blocks = [
            f'  {{\n    name: "{t.name}"\n    data_type: TYPE_{t.triton_dtype}\n    dims: [ {_ints(t.dims)} ]\n  }}'
            for t in tensors
        ]
        lines += [",\n".join(blocks), "]"]
    lines.append("dynamic_batching {")
    if spec.preferred_batch_sizes:
        lines.append(f"  preferred_batch_size: [ {_ints(spec.preferred_batch_sizes)} ]")
    lines += [f"  max_queue_delay_microseconds: {spec.max_queue_delay_us}", "}"]
    group = ["  {", "    count: 1", f"    kind: {spec.kind}"]
    if spec.profiles:
        group.append("    profile: [ " + ", ".join(f'"{p}"' for p in spec.profiles) + " ]")
    lines += ["instance_group [", *group, "  }", "]"]
    for key, value in spec.parameters.items():
        lines.append(f'parameters {{\n  key: "{key}"\n  value: {{ string_value: "{_escape(value)}" }}\n}}')
    return "\n".join(lines) + "\n"


def _ints(values: tuple[int, ...]) -> str:
    return ", ".join(str(v) for v in values)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
