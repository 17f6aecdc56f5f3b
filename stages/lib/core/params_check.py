"""The semantic checks of params.yaml beyond types: names, ranges and consistency.

:func:`stages.lib.core.config.params_from_dict` runs :func:`validate` once the types are right and
reports every problem at once.
"""

from __future__ import annotations

import re

from .params import (
    ARCHS,
    BACKENDS,
    CALIBRATION_METHODS,
    DATA_SOURCES,
    DEVICES,
    HIGH_PRECISIONS,
    PRECISIONS,
    SERVED_BACKENDS,
    CalibrateParams,
    Params,
    ServeParams,
    TargetsParams,
)


def validate(p: Params) -> list[str]:
    """Semantic checks beyond types: names, ranges, consistency; every problem, in order."""
    return [
        *_name_problems(p),
        *_size_problems(p),
        *_train_problems(p),
        *_calibrate_problems(p),
        *_build_bench_quality_problems(p),
        *_targets_problems(p.targets),
        *_serve_problems(p.serve),
        *_serve_vs_build_problems(p),
    ]


def _one_of(where: str, value: str, valid: tuple[str, ...]) -> list[str]:
    return [] if value in valid else [f"{where}: unknown value {value!r}; valid: {', '.join(valid)}"]


def _positive(where: str, value: float) -> list[str]:
    return [] if value > 0 else [f"{where}: must be > 0, got {value}"]


def _name_problems(p: Params) -> list[str]:
    """Names that must be one of a known set."""
    problems = [
        *_one_of("device", p.device, DEVICES),
        *_arch_problems(p),
        *_one_of("data.source", p.data.source, DATA_SOURCES),
        *([] if isinstance(p.data.download, bool) else _one_of("data.download", p.data.download, ("auto",))),
        *_one_of("calibrate.method", p.calibrate.method, CALIBRATION_METHODS),
        *_one_of("calibrate.high_precision", p.calibrate.high_precision, HIGH_PRECISIONS),
        *_one_of("export.exporter", p.export.exporter, ("torchscript", "dynamo")),
    ]
    if p.export.opset < 17:
        problems.append(f"export.opset: must be >= 17, got {p.export.opset}")
    problems += _one_of("build.strongly_typed", p.build.strongly_typed, ("auto", "never"))
    for i, name in enumerate(p.backends):
        problems += _one_of(f"backends[{i}]", name, BACKENDS)
    for i, name in enumerate(p.precisions):
        problems += _one_of(f"precisions[{i}]", name, PRECISIONS)
    if not p.precisions:
        problems.append("precisions: must name at least one of " + ", ".join(PRECISIONS))
    if len(set(p.precisions)) != len(p.precisions):
        problems.append(f"precisions: duplicates in {p.precisions}")
    return problems


def _arch_problems(p: Params) -> list[str]:
    """model.arch must be a torchvision classifier (the closest names are suggested); the CIFAR
    stem exists only for the ResNet family; a user's checkpoint and ONNX file exclude each other."""
    from .archs import closest

    m, problems = p.model, []
    if m.arch not in ARCHS:
        near = ", ".join(closest(m.arch)) or "see torchvision.models.list_models()"
        problems.append(f"model.arch: unknown value {m.arch!r}; closest valid names: {near}")
    if m.cifar_stem and m.arch in ARCHS and not m.arch.startswith(("resnet", "resnext", "wide_resnet")):
        problems.append(f"model.cifar_stem: only ResNets have the stem it replaces, not {m.arch}; set it false")
    for where, values in (("model.mean", m.mean), ("model.std", m.std)):
        if values is not None and len(values) != 3:
            problems.append(f"{where}: must list 3 values (R, G, B) or be null, got {values}")
    if (m.mean is None) != (m.std is None):
        problems.append("model.mean and model.std: set both (the weights' normalisation) or neither")
    if m.checkpoint and m.onnx:
        problems.append("model.checkpoint and model.onnx: give one of the two (a PyTorch or an ONNX model)")
    if m.onnx:
        torch_backends = [b for b in p.backends if b in ("pytorch", "torch_compile")]
        if torch_backends:
            problems.append(
                f"model.onnx: the {', '.join(torch_backends)} backend(s) need a PyTorch model; "
                "set backends=[onnxruntime,tensorrt]"
            )
        if p.export.raw_input:
            problems.append("model.onnx: export.raw_input needs a PyTorch model to wrap; set it false")
    return problems


def _size_problems(p: Params) -> list[str]:
    """Sizes and counts that must be positive."""
    problems: list[str] = []
    for where, sizes in (
        ("bench.batch_sizes", p.bench.batch_sizes),
        ("bench.compile_batch_sizes", p.bench.compile_batch_sizes),
    ):
        for i, b in enumerate(sizes):
            problems += _positive(f"{where}[{i}]", b)
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
        problems += _positive(where, value)
    return problems


def _train_problems(p: Params) -> list[str]:
    t, problems = p.train, []
    if not 0.0 < t.warmup_fraction < 1.0:
        problems.append(f"train.warmup_fraction: must be in (0, 1), got {t.warmup_fraction}")
    if not 0 <= t.cutout <= p.model.image_size:
        problems.append(f"train.cutout: must be 0 (off) .. {p.model.image_size}, got {t.cutout}")
    if not 0.0 <= t.cutmix <= 1.0:
        problems.append(f"train.cutmix: must be a probability in [0, 1], got {t.cutmix}")
    if t.sam_rho < 0:
        problems.append(f"train.sam_rho: must be >= 0 (0 turns SAM off), got {t.sam_rho}")
    if t.epochs < 0:
        problems.append(f"train.epochs: must be >= 0, got {t.epochs}")
    if p.bench.warmup < 0:
        problems.append(f"bench.warmup: must be >= 0, got {p.bench.warmup}")
    if p.model.image_size % 32:
        problems.append(f"model.image_size: must be a multiple of 32, got {p.model.image_size}")
    return problems


def _calibrate_problems(p: Params) -> list[str]:
    c, problems = p.calibrate, []
    if c.num_images > p.data.calib_size:
        problems.append(
            f"calibrate.num_images ({c.num_images}) exceeds data.calib_size "
            f"({p.data.calib_size}): raise data.calib_size or lower calibrate.num_images"
        )
    for i, rx in enumerate(c.float_nodes):
        try:
            re.compile(rx)
        except re.error as exc:
            problems.append(f"calibrate.float_nodes[{i}]: not a regular expression ({exc}): {rx!r}")
    problems += _fallback_problems(c)
    if not 0.0 <= c.min_agreement <= 1.0:
        problems.append(f"calibrate.min_agreement: must be in [0, 1], got {c.min_agreement}")
    if not 0.0 < c.percentile <= 100.0:
        problems.append(f"calibrate.percentile: must be in (0, 100], got {c.percentile}")
    return problems + _budget_problems(c)


def _budget_problems(c: CalibrateParams) -> list[str]:
    """The INT8 budget search's sizes and time cap."""
    problems = []
    for where, value in (
        ("calibrate.heldout_images", c.heldout_images),
        ("calibrate.rank_images", c.rank_images),
        ("calibrate.search_max_s", c.search_max_s),
    ):
        problems += _positive(where, value)
    if c.rank_images > c.heldout_images:
        problems.append(
            f"calibrate.rank_images ({c.rank_images}) exceeds calibrate.heldout_images ({c.heldout_images}): "
            "the groups are ranked on held-out images"
        )
    return problems


def _build_bench_quality_problems(p: Params) -> list[str]:
    problems = []
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
    return problems


def _serve_vs_build_problems(p: Params) -> list[str]:
    """A served request's batch must fit the engines' profiles."""
    profiles_valid = all(1 <= q.min <= q.opt <= q.max for q in p.build.profiles)
    if p.build.profiles and profiles_valid and p.serve.batch_size > max(q.max for q in p.build.profiles):
        return [
            f"serve.batch_size ({p.serve.batch_size}) exceeds the largest build profile max "
            f"({max(q.max for q in p.build.profiles)}), the served models' max_batch_size"
        ]
    return []


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
