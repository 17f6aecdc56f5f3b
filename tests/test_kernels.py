"""Kernel traces by kind (stages/lib/report/kernels.py, kernel_plot.py, tools/kernel_trace.py
report) on traces recorded on an H100: tests/data/kernels/ holds two iterations at batch 1 of
PyTorch eager FP32 (torch.profiler; only its kernel, metadata and four runtime events kept)
and of a TensorRT 8.6 INT8 engine (Nsight Compute CSV, as written)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from stages.lib.core.errors import InputFileError
from stages.lib.report import kernels
from stages.lib.report.kernel_plot import kinds_figure
from tools import kernel_trace

DATA = Path(__file__).parent / "data" / "kernels"

# Real names from the recorded traces (the fixtures above and the report's batch-1024 traces).
NAMES = {
    (
        "sm90_xmma_fprop_implicit_gemm_f32f32_tf32f32_f32_nhwckrsc_nhwc_tilesize64x32x32_warpgroupsize1x1x1_g"
        "1_execute_segment_k_off_kernel__5x_cudnn"
    ): "convolution",
    (
        "void convolve_common_engine_float_NHWC<float, float, 1024, 5, 5, 3, 3, 3, true, false, false, false,"
        " false>(int, int, int, float const*, float const*, int, float*, conv_kernel_common_params, unsigned "
        "long long, unsigned long, float, float, bool, float const*, float const*, bool, bool)"
    ): "convolution",
    (
        "sm90_xmma_fprop_implicit_gemm_i8i8_i8i32_f32_nchw_vect_c_32kcrs_vect_c_32_nchw_vect_c_32_tilesize64x"
        "256x64_cgasize1x1x1_warpgroupsize1x1x1_g1_no_relu_up_beta0_packed_tensor_stride_execute_segment_k_of"
        "f_kernel_trt"
    ): "convolution",
    (
        "sm80_xmma_fprop_first_layer_i8i8_i8i32_f32_nchw_vect_c_4kcrs_vect_c_4_nchw_vect_c_32_tilesize16x16x3"
        "2x32_stage1_warpsize4x1x1_tensor16x8x16_r3s3_u1v1_aligna4_alignc8_execute_kernel_trt"
    ): "convolution",
    (
        "sm50_xmma_cublas_gemvx_f32f32_f32_f32_tn_n_int32_unit_n_launch_param4x32x32_strided_unit_stride_exec"
        "ute_kernel_trt"
    ): "gemm",
    (
        "void cutlass::Kernel2<cutlass_80_simt_sgemm_64x64_8x5_tn_align1>(cutlass_80_simt_sgemm_64x64_8x5_tn_"
        "align1::Params)"
    ): "gemm",
    (
        "sm80_xmma_gemm_f16f16_f16f16_f16_nn_n_tilesize32x32x64_stage6_warpsize2x2x1_tensor16x8x16_execute_kernel_trt"
    ): "gemm",
    (
        "void cublasLt::splitKreduce_kernel<32, 16, int, float, float, float, float, false, float, float, flo"
        "at, true, true, false, false>(cublasLt::cublasSplitKParams<float>, float const*, float const*, float"
        "*, float*, float const*, float const*, float const*, float const*, float*, void*, long, float*, int*"
        ", float*, float*, float const*, float const*, float const*, float const*, float const*)"
    ): "gemm",
    (
        "void at::native::vectorized_elementwise_kernel<4, at::native::(anonymous namespace)::launch_clamp_sc"
        "alar(at::TensorIteratorBase&, c10::Scalar, c10::Scalar, at::native::detail::ClampLimits)::{lambda()#"
        "1}::operator()() const::{lambda()#7}::operator()() const::{lambda(float)#1}, std::array<char*, 2ul> "
        ">(int, at::native::(anonymous namespace)::launch_clamp_scalar(at::TensorIteratorBase&, c10::Scalar, "
        "c10::Scalar, at::native::detail::ClampLimits)::{lambda()#1}::operator()() const::{lambda()#7}::opera"
        "tor()() const::{lambda(float)#1}, std::array<char*, 2ul>)"
    ): "elementwise",
    (
        "void cudnn::bn_fw_inf_1C11_kernel_NHWC<float, float, true, true>(float, float, cudnnTensorStruct, fl"
        "oat const*, cudnnTensorStruct, float*, cudnnTensorStruct, float const*, float const*, float const*, "
        "float const*, float, int, int)"
    ): "elementwise",
    (
        "void genericReformat::copyPackedKernel<float, signed char, 1, 0, genericReformat::IdentityCoordMappe"
        "r<4>, 4>(unsigned int, unsigned int, const void *, genericReformat::ArrayN<T6>, genericReformat::Arr"
        "ayNWithReducedDivisors<T6>, genericReformat::ArrayN<T6>, int, int, int, const float *, void *, gener"
        "icReformat::ArrayN<T6>, genericReformat::ArrayNWithReducedDivisors<T6>, genericReformat::ArrayNWithR"
        "educedDivisors<T6>, genericReformat::ArrayN<T6>, int, int, int, const float *, T5)"
    ): "reformat",
    "void cuInt8::nhwcTonchw<float, 1, 8, 2>(const __half *, T1 *, int, int, int, int, int, int)": "reformat",
    (
        "cuInt8::nchwToNcqhw4(const float *, unsigned int *, int, int, int, int, int, int, int, const float *"
        ", cuInt8::ReducedDivisorParameters)"
    ): "reformat",
    (
        "void cudnn::engines_precompiled::convertTensor_kernel<float, float, float, (cudnnKernelDataType_t)2>"
        "(float, float const*, float, float*, unsigned long)"
    ): "reformat",
    (
        "void at::native::reduce_kernel<128, 4, at::native::ReduceOp<float, at::native::MeanOps<float, float,"
        " float, float>, unsigned int, float, 4, 4> >(at::native::ReduceOp<float, at::native::MeanOps<float, "
        "float, float, float>, unsigned int, float, 4, 4>)"
    ): "pooling",
    "sm50_xmma_pooling_fw_4d_FP32FP32NCHW_Average_FastDiv_execute_kernel_trt": "pooling",
    "sm50_xmma_pooling_CHWPacked_NCxHW2_kAVERAGE_execute_kernel_trt": "pooling",
}


@pytest.mark.parametrize("name,kind", NAMES.items())
def test_real_kernel_names_are_classified(name: str, kind: str) -> None:
    assert kernels.classify(name) == kind


def test_every_name_in_the_fixtures_has_a_kind_other_than_other() -> None:
    for trace in ("pytorch_fp32_b1.json", "tensorrt_int8_b1.csv"):
        found = kernels.names_by_kind(kernels.read_trace(DATA / trace))
        assert found["other"] == [], trace


def test_pytorch_trace_per_kind_totals() -> None:
    found = kernels.read_trace(DATA / "pytorch_fp32_b1.json")
    assert len(found) == 140  # kernel events only; runtime and flow events are skipped
    b = kernels.breakdown(found, "PyTorch eager FP32", 1, 2)
    launches = {r.kind: r.launches for r in b.rows}
    assert launches == {"convolution": 23, "gemm": 1, "elementwise": 45, "reformat": 0, "pooling": 1, "other": 0}
    assert b.row("convolution").gpu_us == pytest.approx(175.799, abs=1e-3)
    assert b.row("elementwise").gpu_us == pytest.approx(134.433, abs=1e-3)
    assert b.gpu_us == pytest.approx(636.369 / 2, abs=1e-3)  # the sum of every kernel's dur, per batch


def test_ncu_trace_per_kind_totals() -> None:
    found = kernels.read_trace(DATA / "tensorrt_int8_b1.csv")
    assert len(found) == 48  # ncu's ==PROF== and ==WARNING== lines before the header are skipped
    b = kernels.breakdown(found, "TensorRT INT8", 1, 2)
    launches = {r.kind: r.launches for r in b.rows}
    assert launches == {"convolution": 20, "gemm": 1, "elementwise": 0, "reformat": 2, "pooling": 1, "other": 0}
    assert b.row("reformat").gpu_us == pytest.approx(6.4, abs=1e-3)  # ns in the CSV, µs here
    assert b.gpu_us == pytest.approx(299.136 / 2, abs=1e-3)


def test_bad_traces_raise_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("==PROF== Connected\n")
    with pytest.raises(InputFileError, match="--log-file"):
        kernels.read_trace(tmp_path / "t.csv")
    (tmp_path / "t.json").write_text("{}")
    with pytest.raises(InputFileError, match="export_chrome_trace"):
        kernels.read_trace(tmp_path / "t.json")
    with pytest.raises(InputFileError, match="unknown trace type"):
        kernels.read_trace(tmp_path / "t.txt")


def test_report_writes_table_records_and_a_readable_plot(tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert kernel_trace.main(["report", "--trace-dir", str(DATA), "--out-dir", str(out)]) == 0
    table = (out / "kernels.md").read_text()
    assert "| PyTorch eager FP32 | 1 | 70 | 318.2 |" in table
    assert "| TensorRT INT8 | 1 | 24 | 149.6 |" in table
    rows = list(csv.DictReader((out / "kernels.csv").open()))
    assert len(rows) == 2 * len(kernels.KINDS)
    trt_conv = next(r for r in rows if r["backend"] == "TensorRT INT8" and r["kind"] == "convolution")
    assert float(trt_conv["launches_per_batch"]) == 20 and float(trt_conv["gpu_us_per_batch"]) == pytest.approx(135.65)
    names = json.loads((out / "kernel_names.json").read_text())
    assert set(names) == {"pytorch_fp32_b1", "tensorrt_int8_b1"}
    with Image.open(out / "kernels.png") as img:
        assert img.format == "PNG" and img.width >= 600 and img.height >= 600


def test_plot_refuses_nothing_to_plot(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="no kernel breakdowns"):
        kinds_figure([], tmp_path / "k.png", "t")
    assert not (tmp_path / "k.png").exists()
