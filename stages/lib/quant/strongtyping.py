"""INT8 under strong typing: the layers of a Q/DQ engine that would run in FP32, and their time.

TensorRT 8.6 builds the Q/DQ model (int8.onnx, quantized from the FP32 model) weakly typed with
the FP16 and INT8 flags, so what the Q/DQ pairs leave unquantized may run in FP16. Strongly
typed (the default on 10.x, the only mode on 11.x) it runs in the model's own type: FP32. This
module takes an INT8 engine's layer table (engines/int8/layers.json, from trt/inspect.py) and
the benchmark's TensorRT layer profile of it (bench/int8_layers.json) and measures that part.

Each profiled layer (its name without the profiler's " [profile N]" suffix) is classified:

1. INT8 in both modes, so unchanged: the table or the profile reads INT8; or the layer fuses a
   weight quantization with its op ("onnx::Conv_7 + onnx::Conv_7_QuantizeLinear + /conv1/Conv +
   ..."): a DQ+Conv+Q fusion reads and computes INT8 even where the inspector says "unknown";
   or its kernel is an INT8 one (i8i8, IMMA), e.g. an average pool between Q/DQ nodes.
2. The network input's QuantizeLinear, a standalone Q that is the first layer of its
   optimization profile: FP32 input to INT8 in both modes, so unchanged.
3. Everything else computes or writes float and would run in FP32: a DequantizeLinear (INT8 to
   float), a standalone Q elsewhere (it reads a float tensor), pooling, Gemm, reformats and
   reshapes left in float.

The share is that FP32 part's time over the total layer time of the profile (8.6's times: an
FP32 layer may be slower than its FP16 self). Below 2% an FP16 base model for the unquantized
parts (``calibrate.high_precision: fp16``) is not worth offering.

With an FP16 base (calibrate.json's ``high_precision``) the unquantized part is FP16 in the
model, so strong typing runs it in FP16 and only Casts to or from FP32 graph I/O are expected
in FP32. The same float layers are then counted only where the engine reports them in FP32
(or TF32); those whose precision it does not report widen the share into a range.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

THRESHOLD = 0.02  # FP32 share of layer time above which an FP16 base is worth measuring
_SUFFIX = re.compile(r"\s*\[profile \d+\]$")
_INT8_KERNEL = re.compile(r"i8i8|i8f16|i8f32|_imma_|int8", re.IGNORECASE)


@dataclass(frozen=True)
class StrongTypingShare:
    """The layers that would run in FP32 under strong typing and their share of layer time."""

    rows: list[dict[str, Any]]  # {"layer", "precision" (as profiled), "ms_mean", "why"}, slowest first
    fp32_ms: float
    total_ms: float
    batch_size: int | None
    unprofiled_ms: float = 0.0  # layer time a truncated profile does not itemize
    base: str = "fp32"  # the INT8 model's float type (calibrate.high_precision)
    untyped: list[str] = field(default_factory=list)  # FP16 base: float layers of unreported precision
    untyped_ms: float = 0.0  # their time
    unlisted: list[str] | None = field(default_factory=list)  # FP32 layers the profile misses; None: no table
    share_max: float = 0.0  # the share if every unlisted layer took as long as the fastest listed one

    @property
    def share(self) -> float:
        return self.fp32_ms / self.total_ms if self.total_ms > 0 else 0.0

    @property
    def complete(self) -> bool:
        """Every layer's time is itemized (total_ms is rounded to 4 decimals)."""
        return self.unprofiled_ms <= 1e-3

    @property
    def exact(self) -> bool:
        """The share is one figure, not a range."""
        return self.complete and not self.untyped


def base_name(layer: str) -> str:
    return _SUFFIX.sub("", layer)


def _profile_of(layer: str) -> str:
    """The profiler's " [profile N]" suffix of a layer name ("" for none)."""
    return layer[len(base_name(layer)) :]


def fp32_reason(name: str, layer_type: str, precision: str, tactic: str, first_in_profile: bool) -> str | None:
    """Why a layer would run in FP32 under strong typing, or None when it would not change."""
    name = base_name(name)
    parts = [p.strip() for p in name.split(" + ")]
    if precision.upper() == "INT8" or (len(parts) > 1 and any(p.endswith("_QuantizeLinear") for p in parts[1:])):
        return None
    if _INT8_KERNEL.search(tactic):
        return None
    if name.endswith("QuantizeLinear") and not name.endswith("DequantizeLinear") and len(parts) == 1:
        return None if first_in_profile else "quantizes a float tensor"
    if "DequantizeLinear" in name or re.search(r"_DQ\b|_DQ$", name):
        return "dequantizes to float"
    if layer_type == "NoOp" or name.startswith("Reformatting CopyNode") or name.startswith("reshape"):
        return "moves float data"
    return f"{layer_type or 'float'} op left unquantized"


_FP32 = ("FP32", "TF32")
_OTHER_TYPES = ("FP16", "BF16", "FP8", "INT8", "INT32", "INT64", "UINT8", "BOOL")


def runs_in_fp32(why: str | None, precision: str, base: str) -> bool | None:
    """Whether a layer that :func:`fp32_reason` classified would run in FP32 under strong
    typing. With an FP32 base every float layer would; with an FP16 base only one the engine
    reports in FP32 or TF32 does, and None says its precision is not reported."""
    if why is None:
        return False
    if base != "fp16" or precision.upper() in _FP32:
        return True
    return False if precision.upper() in _OTHER_TYPES else None


def _table(layers: list[dict[str, Any]] | None) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """The layer table by name, and the names that open their optimization profile."""
    by_name, first, seen = {}, set(), set()
    for row in layers or []:
        name = str(row.get("name", ""))
        by_name[name] = row
        suffix = _profile_of(name)
        if suffix not in seen:
            seen.add(suffix)
            first.add(name)
    return by_name, first


def _reads_network_input(name: str, first: set[str] | None) -> bool:
    """Whether a layer is the first of its profile; without a layer table, whether it quantizes
    a tensor named like a graph input (the ONNX exporter names inner tensors "/module/..._output_0")."""
    if first is not None:
        return name in first
    return "/" not in base_name(name).removesuffix("_QuantizeLinear")


def fp32_share(layers: list[dict[str, Any]] | None, profile: dict[str, Any], base: str = "fp32") -> StrongTypingShare:
    """Classify every profiled layer. ``profile`` is int8_layers.json or its "tensorrt" entry;
    ``layers`` the engine's layer table (type and kernel per layer). Without the table, the
    profile rows' own "type"/"tactic" are used where they have them. ``base`` is the INT8
    model's float type (calibrate.high_precision)."""
    profile = profile.get("tensorrt", profile)
    by_name, first = _table(layers)
    listed = profile.get("layers") or []
    rows, untyped = [], []
    for p in listed:
        t = by_name.get(p["layer"], p)
        precision = str(t.get("precision") or p.get("precision") or "unknown")
        reads_input = _reads_network_input(p["layer"], first if layers else None)
        why = fp32_reason(p["layer"], str(t.get("type", "")), precision, str(t.get("tactic", "")), reads_input)
        fp32 = runs_in_fp32(why, precision, base)
        if fp32:
            rows.append(
                {"layer": p["layer"], "precision": str(p.get("precision")), "ms_mean": p["ms_mean"], "why": why}
            )
        elif fp32 is None:
            untyped.append(p)
    total = float(profile.get("total_ms") or sum(p["ms_mean"] for p in listed))
    unprofiled = max(0.0, total - sum(p["ms_mean"] for p in listed))
    suffixes = {_profile_of(p["layer"]) for p in listed}
    profiled = {p["layer"] for p in listed}
    unlisted = [
        n
        for n, t in by_name.items()
        if n not in profiled
        and _profile_of(n) in suffixes
        and runs_in_fp32(_table_reason(n, t, first), str(t.get("precision", "")), base) is not False
    ]
    fp32_ms = sum(r["ms_mean"] for r in rows)
    untyped_ms = sum(p["ms_mean"] for p in untyped)
    fastest = min((p["ms_mean"] for p in listed), default=0.0)
    if unprofiled <= 1e-3:
        bound = fp32_ms + untyped_ms
    elif layers:  # each left-out FP32 layer is at most as slow as the fastest listed one
        bound = fp32_ms + untyped_ms + min(unprofiled, len(unlisted) * fastest)
    else:  # nothing says which layers the unitemized time belongs to
        bound = fp32_ms + untyped_ms + unprofiled
    return StrongTypingShare(
        rows=sorted(rows, key=lambda r: -r["ms_mean"]),
        fp32_ms=fp32_ms,
        total_ms=total,
        batch_size=profile.get("batch_size"),
        unprofiled_ms=unprofiled,
        unlisted=unlisted if layers else None,
        share_max=bound / total if total > 0 else 0.0,
        base=base,
        untyped=[p["layer"] for p in sorted(untyped, key=lambda r: -r["ms_mean"])],
        untyped_ms=untyped_ms,
    )


def _table_reason(name: str, t: dict[str, Any], first: set[str]) -> str | None:
    return fp32_reason(
        name, str(t.get("type", "")), str(t.get("precision", "")), str(t.get("tactic", "")), name in first
    )


def render(result: StrongTypingShare, threshold: float = THRESHOLD) -> list[str]:
    """The report's markdown section for ``result``."""
    batch = f"the INT8 engine's profile (batch {result.batch_size})"
    if result.base == "fp16":
        base = (
            "FP16 here: the INT8 model has an FP16 base (`calibrate.high_precision: fp16`), so only Casts "
            f"to or from FP32 graph I/O are expected in FP32. These float layers of {batch} are reported in FP32:"
        )
    else:
        base = (
            "FP32 here (the INT8 model has an FP32 base, `calibrate.high_precision: fp32`), where TensorRT "
            f"8.6's weakly typed build may pick FP16. These layers of {batch} would run in FP32:"
        )
    lines = [
        "## INT8 under strong typing",
        "",
        "TensorRT 10.x/11.x build the Q/DQ model strongly typed: what its Q/DQ nodes leave unquantized "
        f"runs in the model's own type, {base}",
        "",
        "| layer | precision now | ms | why |",
        "|---|---|---|---|",
    ]
    lines += [f"| `{r['layer']}` | {r['precision']} | {r['ms_mean']:.4f} | {r['why']} |" for r in result.rows]
    low, high = result.share, (result.share if result.exact else result.share_max)
    if result.exact:
        measured = f"**{100 * low:.2f}% of layer time** ({result.fp32_ms:.4f} of {result.total_ms:.4f} ms)"
    else:
        measured = f"**{100 * low:.2f}% to {100 * high:.2f}% of layer time**: " + "; ".join(_why_a_range(result))
    return [*lines, "", f"{measured}; {_verdict(result.base, low, high, threshold)}.", ""]


def _why_a_range(result: StrongTypingShare) -> list[str]:
    """What leaves the share a range: layers the profile does not itemize, layers of unreported precision."""
    reasons = []
    if not result.complete:
        if result.unlisted is None:
            missing = "without the engine's layer table nothing says which of the rest would run in FP32"
        else:
            names = ", ".join(f"`{n}`" for n in result.unlisted) or "none"
            missing = f"it leaves out these layers that would run in FP32: {names}"
        itemized = result.total_ms - result.unprofiled_ms
        reasons.append(f"the profile itemizes {itemized:.4f} of {result.total_ms:.4f} ms and {missing}")
    if result.untyped:
        names = ", ".join(f"`{n}`" for n in result.untyped)
        reasons.append(
            f"the engine does not report the precision of these float layers ({result.untyped_ms:.4f} ms): {names}"
        )
    return reasons


def _verdict(base: str, low: float, high: float, threshold: float) -> str:
    pct = f"{100 * threshold:.0f}%"
    if base == "fp16":
        if high <= 0:
            return "none, as the FP16 base intends"
        if low > 0:
            return "with an FP16 base only Casts to or from FP32 graph I/O are expected among them"
        return "with an FP16 base only Casts to or from FP32 graph I/O are expected; the layers' precisions would tell"
    if high <= threshold:
        return f"below {pct}: an FP16 base for the unquantized parts is not worth offering"
    if low > threshold:
        return (
            f"above {pct}: an FP16 base for the unquantized parts (`calibrate.high_precision: fp16`) is worth measuring"
        )
    return f"whether it is below {pct} needs a profile of every layer (the benchmark's layer profile)"


def section(
    profile: dict[str, Any] | None, layers: list[dict[str, Any]] | None = None, base: str = "fp32"
) -> list[str]:
    """The report section for an int8_layers.json's content (and the INT8 engine's layer table
    when at hand), for an INT8 model of float type ``base`` (calibrate.json's high_precision);
    nothing when TensorRT's INT8 engine was not profiled."""
    if not (isinstance(profile, dict) and (profile.get("tensorrt") or {}).get("layers")):
        return []
    return render(fp32_share(layers, profile, base))
