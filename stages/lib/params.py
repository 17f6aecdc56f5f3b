"""Typed, validated view of params.yaml.

params.yaml is what DVC reads; it is composed from conf/ by DVC's Hydra integration. Stages
read it only through :func:`load_params`, which maps it onto frozen dataclasses, rejects
unknown and missing keys, checks types and values, and reports every problem at once.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import ParamsError

PRECISIONS = ("fp32", "fp16", "int8")
BACKENDS = ("pytorch", "torch_compile", "onnxruntime", "tensorrt")
ARCHS = ("resnet18", "resnet50")
CALIBRATION_METHODS = ("entropy", "minmax", "percentile")
DATA_SOURCES = ("auto", "pickle", "folder", "synthetic")
DEVICES = ("cuda", "cpu")
SERVED_BACKENDS = ("tensorrt", "onnxruntime")  # the runners a Triton server can host


@dataclass(frozen=True)
class ModelParams:
    name: str
    arch: str
    cifar_stem: bool
    image_size: int
    num_classes: int
    pretrained: bool


@dataclass(frozen=True)
class DataParams:
    name: str
    source: str
    raw_dir: str
    download: bool
    calib_size: int
    mean: list[float]
    std: list[float]
    synthetic_train: int
    synthetic_test: int


@dataclass(frozen=True)
class TrainParams:
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    nesterov: bool
    weight_decay: float
    label_smoothing: float
    cutout: int
    cutmix: float
    sam_rho: float
    warmup_fraction: float
    subset: int
    amp: bool
    channels_last: bool


@dataclass(frozen=True)
class ExportParams:
    exporter: str
    opset: int
    parity_images: int
    reference_images: int
    atol: float
    rtol: float
    fp16_atol: float
    fp16_rtol: float
    raw_input: bool  # the models take uint8 NHWC images and normalise inside the graph
    io_fp16: bool  # fp16.onnx and int8.onnx return fp16 (and take fp16 unless raw_input)


@dataclass(frozen=True)
class CalibrateParams:
    method: str
    num_images: int
    percentile: float
    per_channel: bool
    quantize_residual_add: bool
    quantize_pools: bool  # Q/DQ around average pools: an INT8 pool after the last conv
    float_nodes: list[str]  # regexes on Conv node names kept out of INT8
    min_agreement: float  # below it: try fallback_methods, then warn
    fallback_methods: list[str]  # tried in order while agreement stays below min_agreement


@dataclass(frozen=True)
class ProfileShape:
    min: int
    opt: int
    max: int


@dataclass(frozen=True)
class BuildParams:
    workspace_mb: int
    opt_level: int
    profiles: list[ProfileShape]
    timing_cache: bool
    strongly_typed: str
    detailed_profiling: bool


@dataclass(frozen=True)
class BenchParams:
    batch_sizes: list[int]
    warmup: int
    iterations: int
    max_seconds: float
    cuda_graph: bool
    compile_batch_sizes: list[int]
    streams: int
    contexts: int
    layer_profile: bool


@dataclass(frozen=True)
class QualityParams:
    max_top1_drop: float
    min_fp32_agreement: float


@dataclass(frozen=True)
class GpuTargets:
    """Performance targets on one GPU model; None (or an empty mapping) leaves one unchecked."""

    int8_min_ips: float | None  # TensorRT INT8 best GPU-compute img/s over batch sizes
    int8_vs_compile_fp16: float | None  # that over torch_compile FP16's best compute img/s
    batch1_max_ms: dict[str, float]  # precision -> TensorRT batch-1 compute p50 ms
    int8_max_top1_drop: float | None  # points TensorRT INT8 top-1 may fall below TensorRT FP32
    pipelined_within: float | None  # fraction TensorRT pipelined img/s may fall below compute, same batch

    @property
    def configured(self) -> bool:
        """Whether any target is set."""
        singles = (self.int8_min_ips, self.int8_vs_compile_fp16, self.int8_max_top1_drop, self.pipelined_within)
        return bool(self.batch1_max_ms) or any(v is not None for v in singles)


@dataclass(frozen=True)
class TargetsParams:
    """Performance targets the report checks, per GPU model (the probe's GPU name);
    informative, they never fail the run."""

    enabled: bool  # false: the report says the targets are not checked in this profile
    gpus: dict[str, GpuTargets]

    def for_gpu(self, gpu: str | None) -> GpuTargets | None:
        """The targets set for ``gpu`` (None where there are none)."""
        return self.gpus.get(gpu) if gpu else None


@dataclass(frozen=True)
class ServeParams:
    """The served benchmark (a Triton server in $SERVE_PYTHON) and the model repository's batcher."""

    enabled: bool  # false: the serve stage records "skipped" and starts no server
    backends: list[str]  # runners to serve, one server each
    concurrencies: list[int]  # requests in flight from the client, one level each
    batch_size: int  # images per request
    requests: int  # per level at most
    max_seconds: float  # per level at most
    max_queue_delay_us: int  # dynamic batcher: how long a request may wait for others
    startup_timeout_s: float  # server start, model load included


@dataclass(frozen=True)
class Params:
    seed: int
    profile: str
    device: str
    backends: list[str]
    precisions: list[str]
    model: ModelParams
    data: DataParams
    train: TrainParams
    export: ExportParams
    calibrate: CalibrateParams
    build: BuildParams
    bench: BenchParams
    quality: QualityParams
    targets: TargetsParams
    serve: ServeParams


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; raise ParamsError listing every problem."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError([f"file not found: {path} (run from the project root)"], str(path))
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ParamsError([f"not valid YAML: {exc}".replace("\n", " ")], str(path)) from exc
    return params_from_dict(raw, source=str(path))


def params_from_dict(raw: Any, source: str = "params.yaml") -> Params:
    problems: list[str] = []
    params = _build(Params, raw, "", problems)
    if not problems:
        problems.extend(validate(params))
    if problems:
        raise ParamsError(problems, source)
    return params


def validate(p: Params) -> list[str]:
    """Semantic checks beyond types: names, ranges, consistency."""
    problems: list[str] = []

    def one_of(where: str, value: str, valid: tuple[str, ...]) -> None:
        if value not in valid:
            problems.append(f"{where}: unknown value {value!r}; valid: {', '.join(valid)}")

    def positive(where: str, value: float) -> None:
        if value <= 0:
            problems.append(f"{where}: must be > 0, got {value}")

    one_of("device", p.device, DEVICES)
    one_of("model.arch", p.model.arch, ARCHS)
    one_of("data.source", p.data.source, DATA_SOURCES)
    one_of("calibrate.method", p.calibrate.method, CALIBRATION_METHODS)
    one_of("export.exporter", p.export.exporter, ("torchscript", "dynamo"))
    if p.export.opset < 17:
        problems.append(f"export.opset: must be >= 17, got {p.export.opset}")
    one_of("build.strongly_typed", p.build.strongly_typed, ("auto", "never"))
    for i, name in enumerate(p.backends):
        one_of(f"backends[{i}]", name, BACKENDS)
    for i, name in enumerate(p.precisions):
        one_of(f"precisions[{i}]", name, PRECISIONS)
    if not p.precisions:
        problems.append("precisions: must name at least one of " + ", ".join(PRECISIONS))
    if len(set(p.precisions)) != len(p.precisions):
        problems.append(f"precisions: duplicates in {p.precisions}")
    for where, sizes in (
        ("bench.batch_sizes", p.bench.batch_sizes),
        ("bench.compile_batch_sizes", p.bench.compile_batch_sizes),
    ):
        for i, b in enumerate(sizes):
            positive(f"{where}[{i}]", b)
    if not p.bench.batch_sizes:
        problems.append("bench.batch_sizes: must list at least one batch size")
    for where, value in (
        ("model.image_size", p.model.image_size),
        ("model.num_classes", p.model.num_classes),
        ("train.batch_size", p.train.batch_size),
        ("train.lr", p.train.lr),
        ("export.parity_images", p.export.parity_images),
        ("export.reference_images", p.export.reference_images),
        ("calibrate.num_images", p.calibrate.num_images),
        ("data.calib_size", p.data.calib_size),
        ("build.workspace_mb", p.build.workspace_mb),
        ("bench.iterations", p.bench.iterations),
        ("bench.max_seconds", p.bench.max_seconds),
        ("bench.streams", p.bench.streams),
    ):
        positive(where, value)
    if not 0.0 < p.train.warmup_fraction < 1.0:
        problems.append(f"train.warmup_fraction: must be in (0, 1), got {p.train.warmup_fraction}")
    if not 0 <= p.train.cutout <= p.model.image_size:
        problems.append(f"train.cutout: must be 0 (off) .. {p.model.image_size}, got {p.train.cutout}")
    if not 0.0 <= p.train.cutmix <= 1.0:
        problems.append(f"train.cutmix: must be a probability in [0, 1], got {p.train.cutmix}")
    if p.train.sam_rho < 0:
        problems.append(f"train.sam_rho: must be >= 0 (0 turns SAM off), got {p.train.sam_rho}")
    if p.train.epochs < 0:
        problems.append(f"train.epochs: must be >= 0, got {p.train.epochs}")
    if p.bench.warmup < 0:
        problems.append(f"bench.warmup: must be >= 0, got {p.bench.warmup}")
    if p.model.image_size % 32:
        problems.append(f"model.image_size: must be a multiple of 32, got {p.model.image_size}")
    if p.calibrate.num_images > p.data.calib_size:
        problems.append(
            f"calibrate.num_images ({p.calibrate.num_images}) exceeds data.calib_size "
            f"({p.data.calib_size}): raise data.calib_size or lower calibrate.num_images"
        )
    for i, rx in enumerate(p.calibrate.float_nodes):
        try:
            re.compile(rx)
        except re.error as exc:
            problems.append(f"calibrate.float_nodes[{i}]: not a regular expression ({exc}): {rx!r}")
    problems.extend(_fallback_problems(p.calibrate))
    if not 0.0 <= p.calibrate.min_agreement <= 1.0:
        problems.append(f"calibrate.min_agreement: must be in [0, 1], got {p.calibrate.min_agreement}")
    if not 0.0 < p.calibrate.percentile <= 100.0:
        problems.append(f"calibrate.percentile: must be in (0, 100], got {p.calibrate.percentile}")
    if not 0.0 <= p.quality.min_fp32_agreement <= 1.0:
        problems.append(f"quality.min_fp32_agreement: must be in [0, 1], got {p.quality.min_fp32_agreement}")
    if p.quality.max_top1_drop < 0:
        problems.append(f"quality.max_top1_drop: must be >= 0, got {p.quality.max_top1_drop}")
    if not 1 <= p.bench.contexts <= 8:
        problems.append(f"bench.contexts: must be 1..8, got {p.bench.contexts}")
    if not 0 <= p.build.opt_level <= 5:
        problems.append(f"build.opt_level: must be 0..5, got {p.build.opt_level}")
    if len(p.data.mean) != 3 or len(p.data.std) != 3:
        problems.append("data.mean and data.std: need three values (RGB)")
    if any(s <= 0 for s in p.data.std):
        problems.append(f"data.std: must be > 0, got {p.data.std}")
    if not p.build.profiles:
        problems.append("build.profiles: need at least one {min, opt, max} profile")
    for i, prof in enumerate(p.build.profiles):
        if not 1 <= prof.min <= prof.opt <= prof.max:
            problems.append(
                f"build.profiles[{i}]: need 1 <= min <= opt <= max, got min={prof.min} opt={prof.opt} max={prof.max}"
            )
    problems.extend(_targets_problems(p.targets))
    problems.extend(_serve_problems(p.serve))
    profiles_valid = all(1 <= q.min <= q.opt <= q.max for q in p.build.profiles)
    if p.build.profiles and profiles_valid and p.serve.batch_size > max(q.max for q in p.build.profiles):
        problems.append(
            f"serve.batch_size ({p.serve.batch_size}) exceeds the largest build profile max "
            f"({max(q.max for q in p.build.profiles)}), the served models' max_batch_size"
        )
    return problems


def _serve_problems(s: ServeParams) -> list[str]:
    """serve: servable backends, positive sizes and budgets."""
    problems = [
        f"serve.backends[{i}]: unknown value {b!r}; valid: {', '.join(SERVED_BACKENDS)}"
        for i, b in enumerate(s.backends)
        if b not in SERVED_BACKENDS
    ]
    if not s.concurrencies:
        problems.append("serve.concurrencies: must list at least one concurrency")
    for where, value in [(f"serve.concurrencies[{i}]", c) for i, c in enumerate(s.concurrencies)] + [
        ("serve.batch_size", s.batch_size),
        ("serve.requests", s.requests),
        ("serve.max_seconds", s.max_seconds),
        ("serve.startup_timeout_s", s.startup_timeout_s),
    ]:
        if value <= 0:
            problems.append(f"{where}: must be > 0, got {value}")
    if s.max_queue_delay_us < 0:
        problems.append(f"serve.max_queue_delay_us: must be >= 0, got {s.max_queue_delay_us}")
    return problems


def _fallback_problems(c: CalibrateParams) -> list[str]:
    """calibrate.fallback_methods: known methods, no duplicates. One equal to calibrate.method
    is allowed and skipped, so `-S calibrate.method=percentile` works with the defaults."""
    problems: list[str] = []
    for i, method in enumerate(c.fallback_methods):
        where = f"calibrate.fallback_methods[{i}]"
        if method not in CALIBRATION_METHODS:
            problems.append(f"{where}: unknown value {method!r}; valid: {', '.join(CALIBRATION_METHODS)}")
    if len(set(c.fallback_methods)) != len(c.fallback_methods):
        problems.append(f"calibrate.fallback_methods: duplicates in {c.fallback_methods}")
    return problems


def _targets_problems(targets: TargetsParams) -> list[str]:
    """targets.gpus: named GPUs, positive limits, known precisions."""
    problems: list[str] = []
    for gpu, t in targets.gpus.items():
        where = f"targets.gpus[{gpu!r}]"
        if not str(gpu).strip():
            problems.append("targets.gpus: a GPU name is empty (use the probe's name, e.g. 'NVIDIA H200')")
        for name, value in (("int8_min_ips", t.int8_min_ips), ("int8_vs_compile_fp16", t.int8_vs_compile_fp16)):
            if value is not None and value <= 0:
                problems.append(f"{where}.{name}: must be > 0 (or null: not checked), got {value}")
        for prec, ms in t.batch1_max_ms.items():
            if prec not in PRECISIONS:
                problems.append(f"{where}.batch1_max_ms: unknown precision {prec!r}; valid: {', '.join(PRECISIONS)}")
            elif ms <= 0:
                problems.append(f"{where}.batch1_max_ms.{prec}: must be > 0 ms, got {ms}")
        if t.int8_max_top1_drop is not None and t.int8_max_top1_drop < 0:
            problems.append(f"{where}.int8_max_top1_drop: must be >= 0 points, got {t.int8_max_top1_drop}")
        if t.pipelined_within is not None and not 0.0 <= t.pipelined_within < 1.0:
            problems.append(
                f"{where}.pipelined_within: must be a fraction in [0, 1) (0.15: 15%), got {t.pipelined_within}"
            )
    return problems


# -- generic dict -> dataclass mapping ---------------------------------------------------


def _build(cls: type, raw: Any, where: str, problems: list[str]) -> Any:
    label = where or "top level"
    if not isinstance(raw, dict):
        problems.append(f"{label}: expected a mapping, got {type(raw).__name__}")
        return None
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in hints:
            problems.append(f"{_join(where, key)}: unknown key (valid: {', '.join(fields)})")
    values = {}
    for name in fields:
        if name not in raw:
            problems.append(f"{_join(where, name)}: missing")
            continue
        values[name] = _convert(hints[name], raw[name], _join(where, name), problems)
    if len(values) != len(fields):
        return None
    try:
        return cls(**values)
    except TypeError as exc:  # only reachable through a bug in this module
        problems.append(f"{label}: {exc}")
        return None


def _convert(tp: Any, value: Any, where: str, problems: list[str]) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where, problems)  # type: ignore[arg-type]
    if origin in (typing.Union, types.UnionType):  # `X | None`: null is allowed
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _convert(inner, value, where, problems)
    if origin is dict:
        key_tp, item_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a mapping, got {value!r}")
            return {}
        return {
            _convert(key_tp, k, f"{where} key {k!r}", problems): _convert(item_tp, v, f"{where}.{k}", problems)
            for k, v in value.items()
        }
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            problems.append(f"{where}: expected a list, got {value!r}")
            return []
        return [_convert(item_tp, v, f"{where}[{i}]", problems) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            problems.append(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{where}: expected a number, got {value!r}")
            return value
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            problems.append(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported field type {tp!r} at {where}")  # a bug, not user input


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
