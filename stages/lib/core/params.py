"""The typed shape of params.yaml: the accepted names and one frozen dataclass per section.

params.yaml is what DVC reads; it is composed from conf/ by DVC's Hydra integration. Stages
read it only through :func:`stages.lib.core.config.load_params`, which maps it onto these
dataclasses and runs the checks of :mod:`.params_check`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .archs import CLASSIFIERS as ARCHS  # noqa: F401 - any torchvision classifier, by name

PRECISIONS = ("fp32", "fp16", "int8")
BACKENDS = ("pytorch", "torch_compile", "onnxruntime", "tensorrt")
CALIBRATION_METHODS = ("entropy", "minmax", "percentile")
HIGH_PRECISIONS = ("fp32", "fp16")  # calibrate.high_precision: the Q/DQ model's float type
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
    # ImageNet weights for pretrained=true: a file, else torch's hub cache, else a download
    weights: str | None = None
    checkpoint: str | None = None  # the user's trained model (state_dict or whole model): train copies it
    onnx: str | None = None  # the user's ONNX classifier: export checks it and takes it as the FP32 model
    # The normalisation the model's weights expect (ImageNet's for torchvision's); when set it
    # replaces data.mean/std for every stage (see stages.lib.core.config). None: the dataset's.
    mean: list[float] | None = None
    std: list[float] | None = None


@dataclass(frozen=True)
class DataParams:
    name: str
    source: str
    raw_dir: str
    download: bool | str  # auto: when raw_dir holds no dataset and the network answers; true; false
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
    high_precision: str  # fp32 | fp16: the float type of what the Q/DQ nodes leave unquantized
    heldout_images: int  # training images (not calibration ones) the INT8 budget is checked on
    rank_images: int  # the worst-hit held-out images the Q/DQ groups are ranked on
    search_max_s: float  # time cap of the ranking and the choice together


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

    def profile_dicts(self) -> list[dict[str, int]]:
        """The profiles as {min, opt, max}, as build reports and served-model specs record them."""
        return [{"min": q.min, "opt": q.opt, "max": q.max} for q in self.profiles]


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
    allow_failed_cases: bool = False  # true: failed build/evaluate/benchmark cases do not fail the gate


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
    max_seconds: float  # per level and served model: perf_analyzer's three measurement windows together
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
