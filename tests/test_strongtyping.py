"""INT8 under strong typing: which layers of an INT8 engine's profile would run in FP32, their
share of layer time, and the report section (stages/lib/quant/strongtyping.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from stages.lib.quant import strongtyping as st

P1 = " [profile 1]"
# Names, types, precisions and kernels as TensorRT 8.6 reported them for ResNet-50's INT8 engine
# (calibrate.quantize_pools on) on the H100; a few of its layers, times rounded.
TABLE = [
    {"name": "input_QuantizeLinear", "type": "Reformat", "precision": "unknown", "tactic": "0x3e8"},
    {"name": "/fc/Gemm", "type": "CaskGemmConvolution", "precision": "FP32", "tactic": "sm50_xmma_cublas_gemvx_f32f32"},
    {"name": "input_QuantizeLinear" + P1, "type": "Reformat", "precision": "unknown", "tactic": "0x3ea"},
    {
        "name": "onnx::Conv_497 + onnx::Conv_497_QuantizeLinear + /conv1/Conv + /relu/Relu + /maxpool/MaxPool" + P1,
        "type": "CaskConvActPool",
        "precision": "unknown",
        "tactic": "0xc5730a6ceacd8913",
    },
    {
        "name": "onnx::Conv_506 + onnx::Conv_506_QuantizeLinear + /layer1/layer1.0/conv3/Conv + /layer1/layer1.0/Add"
        + P1,
        "type": "CaskConvolution",
        "precision": "INT8",
        "tactic": "sm80_xmma_fprop_implicit_gemm_interleaved_i8i8_i8i32_f32",
    },
    {
        "name": "/avgpool/GlobalAveragePool" + P1,
        "type": "CaskPooling",
        "precision": "unknown",
        "tactic": "sm72_xmma_pooling_IMMA_NCxHW32_generic_kAVERAGE",
    },
    {"name": "/avgpool/GlobalAveragePool_output_0_pool_out_DQ" + P1, "type": "Reformat", "precision": "unknown"},
    {"name": "/fc/Gemm" + P1, "type": "CaskGemmConvolution", "precision": "FP16", "tactic": "sm80_xmma_gemm_f16f16"},
    {"name": "Reformatting CopyNode for Input Tensor 0 to reshape_after_/fc/Gemm" + P1, "type": "Reformat"},
    {"name": "reshape_after_/fc/Gemm" + P1, "type": "NoOp", "precision": "unknown", "tactic": "0x0"},
]
TIMES = [0.6426, 1.8925, 1.8408, 0.1268, 0.0089, 0.0092, 0.0044, 0.0]
FP32_LAYERS = {
    "/avgpool/GlobalAveragePool_output_0_pool_out_DQ" + P1: "dequantizes to float",
    "/fc/Gemm" + P1: "CaskGemmConvolution op left unquantized",
    "Reformatting CopyNode for Input Tensor 0 to reshape_after_/fc/Gemm" + P1: "moves float data",
    "reshape_after_/fc/Gemm" + P1: "moves float data",
}


def _profile(rows: list[dict[str, Any]], total: float | None = None) -> dict[str, Any]:
    layers = [{"layer": r["name"], "precision": r.get("precision", "?"), "ms_mean": t} for r, t in rows]
    total = round(sum(t for _, t in rows), 4) if total is None else total
    return {"tensorrt": {"batch_size": 2048, "layers": sorted(layers, key=lambda r: -r["ms_mean"]), "total_ms": total}}


PROFILE = _profile(list(zip(TABLE[2:], TIMES, strict=True)))


def test_only_what_the_qdq_model_leaves_in_float_would_run_in_fp32() -> None:
    result = st.fp32_share(TABLE, PROFILE)
    assert {r["layer"]: r["why"] for r in result.rows} == FP32_LAYERS
    assert [r["layer"] for r in result.rows][:2] == [
        "/fc/Gemm" + P1,
        "/avgpool/GlobalAveragePool_output_0_pool_out_DQ" + P1,
    ]
    assert result.fp32_ms == pytest.approx(0.0225)
    assert result.total_ms == pytest.approx(4.5252)
    assert result.share == pytest.approx(0.0225 / 4.5252)
    assert result.complete and result.unlisted == [] and result.batch_size == 2048


@pytest.mark.parametrize(
    "name,layer_type,precision,tactic,first,why",
    [
        ("input_QuantizeLinear [profile 1]", "Reformat", "unknown", "", True, None),  # FP32 -> INT8 either way
        ("/layer3/Add_output_0_QuantizeLinear", "Reformat", "unknown", "", False, "quantizes a float tensor"),
        ("onnx::Conv_5 + onnx::Conv_5_QuantizeLinear + /conv1/Conv", "CaskConvolution", "unknown", "", False, None),
        ("/avgpool/GlobalAveragePool", "CaskPooling", "unknown", "sm72_xmma_pooling_IMMA_NCxHW32", False, None),
        ("/avgpool/GlobalAveragePool", "CaskPooling", "FP16", "sm50_xmma_pooling_NCxHW2_kAVERAGE", False, "x"),
        ("/layer4/relu_1/Relu_output_0_DequantizeLinear_clone_1", "Reformat", "unknown", "", False, "x"),
        ("/conv/Conv", "CaskConvolution", "INT8", "", False, None),
        ("/fc/Gemm", "CaskGemmConvolution", "FP32", "sm50_xmma_cublas_gemvx_f32f32", False, "x"),
    ],
)
def test_fp32_reason_by_name_type_and_kernel(
    name: str, layer_type: str, precision: str, tactic: str, first: bool, why: str | None
) -> None:
    got = st.fp32_reason(name, layer_type, precision, tactic, first)
    assert (got is None) == (why is None) and (why in (None, "x") or got == why)


def test_a_truncated_profile_gives_bounds_and_names_what_it_left_out() -> None:
    """A profile of the ten slowest layers only: the FP32 layers outside it are each at most as
    slow as the fastest listed layer, and the unitemized time caps them all."""
    listed = list(zip(TABLE[2:5], TIMES[:3], strict=True))
    result = st.fp32_share(TABLE, _profile(listed, total=4.5252))
    assert result.rows == [] and not result.complete
    assert result.unprofiled_ms == pytest.approx(4.5252 - 4.3759)
    assert result.unlisted == [r["name"] for r in TABLE[6:]]  # the IMMA pool is INT8: not listed
    assert result.share == 0.0
    assert result.share_max == pytest.approx(min(4.5252 - 4.3759, 4 * 0.6426) / 4.5252)
    assert "input_QuantizeLinear" not in " ".join(result.unlisted) and "/fc/Gemm" not in result.unlisted
    alone = st.fp32_share(None, _profile(listed, total=4.5252))  # no table: all unitemized time may be FP32
    assert alone.unlisted is None and alone.share_max == pytest.approx((4.5252 - 4.3759) / 4.5252)
    text = "\n".join(st.render(alone))
    assert "nothing says which of the rest would run in FP32" in text and "needs a profile of every layer" in text


def test_report_section_lists_the_layers_and_says_what_the_share_means() -> None:
    lines = st.render(st.fp32_share(TABLE, PROFILE))
    text = "\n".join(lines)
    assert lines[0] == "## INT8 under strong typing"
    assert "| `/fc/Gemm [profile 1]` | FP16 | 0.0092 | CaskGemmConvolution op left unquantized |" in lines
    assert "**0.50% of layer time** (0.0225 of 4.5252 ms)" in text
    assert "below 2%: an FP16 base for the unquantized parts is not worth offering" in text
    high = "\n".join(st.render(st.fp32_share(TABLE, PROFILE), threshold=0.001))
    assert "above 0%: an FP16 base for the unquantized parts (`calibrate.high_precision: fp16`) is worth" in high
    listed = list(zip(TABLE[2:5], TIMES[:3], strict=True))
    partial = "\n".join(st.render(st.fp32_share(TABLE, _profile(listed, total=4.5252))))
    assert "**0.00% to 3.30% of layer time**: the profile itemizes 4.3759 of 4.5252 ms and it leaves out" in partial
    assert "needs a profile of every layer" in partial and "`/fc/Gemm [profile 1]`" in partial


def test_the_section_and_nothing_when_not_measured() -> None:
    assert st.section(PROFILE, TABLE) == st.render(st.fp32_share(TABLE, PROFILE))
    assert st.section({}) == []  # TensorRT skipped: the benchmark wrote no layer profile
    assert st.section(None) == [] and st.section({"tensorrt": {"layers": []}}) == []


def test_without_the_layer_table_the_profile_rows_own_type_and_kernel_decide() -> None:
    """A profile whose rows carry the table's type and tactic classifies alone; the network
    input's Q is told from a Q inside the network by its tensor name."""
    by_name = {r["name"]: r for r in TABLE}
    enriched = json.loads(json.dumps(PROFILE))
    for row in enriched["tensorrt"]["layers"]:
        row.update({k: by_name[row["layer"]].get(k, "") for k in ("type", "tactic")})
    assert st.fp32_share(None, enriched).rows == st.fp32_share(TABLE, PROFILE).rows
    inner_q = {"layer": "/layer1/Add_output_0_QuantizeLinear [profile 1]", "precision": "unknown", "ms_mean": 0.01}
    enriched["tensorrt"]["layers"].append(inner_q)
    assert inner_q["layer"] in {r["layer"] for r in st.fp32_share(None, enriched).rows}
    bare = st.fp32_share(None, PROFILE)  # no type or kernel anywhere: the INT8 pool is not recognised
    assert "/avgpool/GlobalAveragePool [profile 1]" in {r["layer"] for r in bare.rows}


# -- an INT8 model with an FP16 base (calibrate.high_precision: fp16) ----------------------------

# What a strongly typed build of an FP16-base model could report: the float layers in FP16, the
# Cast to the FP32 graph output in FP32, one layer without a precision. Made up, not measured.
FP16_BASE_TABLE = [
    {"name": "input_to_fp16 + input_fp16_QuantizeLinear" + P1, "type": "Reformat", "precision": "INT8"},
    {
        "name": "onnx::Conv_5 + onnx::Conv_5_QuantizeLinear + /conv1/Conv" + P1,
        "type": "CaskConvolution",
        "precision": "INT8",
    },
    {"name": "/avgpool/GlobalAveragePool_input_DequantizeLinear" + P1, "type": "Reformat", "precision": "FP16"},
    {"name": "/avgpool/GlobalAveragePool" + P1, "type": "CaskPooling", "precision": "FP16"},
    {"name": "/fc/Gemm" + P1, "type": "CaskGemmConvolution", "precision": "FP16", "tactic": "sm90_xmma_gemm_f16f16"},
    {"name": "reshape_after_/fc/Gemm" + P1, "type": "NoOp", "precision": "unknown"},
    {"name": "logits_to_fp32" + P1, "type": "Cast", "precision": "FP32"},
]
FP16_BASE_PROFILE = _profile(list(zip(FP16_BASE_TABLE, [0.5, 1.5, 0.01, 0.02, 0.01, 0.003, 0.002], strict=True)))


def test_with_an_fp16_base_only_layers_reported_in_fp32_count() -> None:
    result = st.fp32_share(FP16_BASE_TABLE, FP16_BASE_PROFILE, base="fp16")
    assert [r["layer"] for r in result.rows] == ["logits_to_fp32" + P1]
    assert result.untyped == ["reshape_after_/fc/Gemm" + P1]  # its precision is not reported
    assert result.share == pytest.approx(0.002 / 2.045) and result.share_max == pytest.approx(0.005 / 2.045)
    assert result.complete and not result.exact
    # the same profile read as an FP32 base: every float layer would run in FP32
    as_fp32 = st.fp32_share(FP16_BASE_TABLE, FP16_BASE_PROFILE)
    assert len(as_fp32.rows) == 5 and as_fp32.exact and as_fp32.untyped == []


def test_the_section_says_which_base_the_int8_model_has() -> None:
    text = "\n".join(st.section(FP16_BASE_PROFILE, FP16_BASE_TABLE, base="fp16"))
    assert "the INT8 model has an FP16 base (`calibrate.high_precision: fp16`)" in text
    assert "| `logits_to_fp32 [profile 1]` | FP32 | 0.0020 | Cast op left unquantized |" in text
    assert "**0.10% to 0.24% of layer time**: the engine does not report the precision of these float layers" in text
    assert "with an FP16 base only Casts to or from FP32 graph I/O are expected among them" in text
    assert "worth" not in text
    fp32 = "\n".join(st.section(PROFILE, TABLE))
    assert "the INT8 model has an FP32 base, `calibrate.high_precision: fp32`" in fp32
    assert "**0.50% of layer time** (0.0225 of 4.5252 ms)" in fp32


def test_an_fp16_base_with_nothing_in_fp32_and_an_86_profile_that_cannot_tell() -> None:
    typed = [dict(r, precision="FP16") if r["precision"] in ("FP32", "unknown") else r for r in FP16_BASE_TABLE]
    none = st.fp32_share(typed, FP16_BASE_PROFILE, base="fp16")
    assert none.rows == [] and none.exact and none.share == 0.0
    assert "**0.00% of layer time** (0.0000 of 2.0450 ms); none, as the FP16 base intends." in st.render(none)
    # TensorRT 8.6's profile of the FP32-base model reports most float layers without a precision
    blind = st.fp32_share(TABLE, PROFILE, base="fp16")
    assert blind.rows == [] and blind.share == 0.0
    assert blind.share_max == pytest.approx((0.0089 + 0.0044 + 0.0) / 4.5252)
    assert "the layers' precisions would tell" in "\n".join(st.render(blind))
