"""Bad input: a one-line ``error:`` message and exit 1, never a traceback, and no half-written
output. Backends that cannot run are recorded with a status, not a crash."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from stages.lib.core.params import BACKENDS, PRECISIONS
from tests.conftest import run_stage

MODEL = "resnet18_cifar"  # the model of the TINY params the `project` fixture writes
A = f"artifacts/{MODEL}"
R = f"reports/{MODEL}"
TRAIN_ARGS = [  # the train stage's arguments in a project copy, as dvc.yaml gives them
    "--data",
    "data/prepared",
    "--checkpoint",
    f"{A}/checkpoint.pt",
    "--metrics",
    f"{R}/train.json",
    "--history",
    f"{R}/train_history.csv",
]


def edit_params(project: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = project / "params.yaml"
    raw = yaml.safe_load(path.read_text())
    change(raw)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def one_line_error(proc: subprocess.CompletedProcess[str], stage: str, *needles: str) -> str:
    """Exit 1, no traceback, stderr is exactly one line `error: <stage>: ...` holding needles."""
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{proc.stderr}"
    line = lines[0]
    assert line.startswith(f"error: {stage}: "), line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


def leftovers(folder: Path) -> list[str]:
    """Temporary files or folders (atomic writes) left behind."""
    if not folder.exists():
        return []
    return sorted(
        str(p)
        for p in folder.rglob("*")
        if (p.name.startswith(".") and p.name.endswith(".tmp")) or p.name.startswith(".prepared.")
    )


def prepare_synthetic(project: Path) -> None:
    run_stage("prepare", ["--out", "data/prepared"], project)


# -- params that name things that do not exist ---------------------------------------------


BAD_NAMES = {
    "arch": (
        lambda r: r["model"].__setitem__("arch", "resnet99"),
        "model.arch: unknown value 'resnet99'; closest valid names: resnet50, resnet34, resnet18, resnet152, resnet101",
    ),
    "precision": (
        lambda r: r.__setitem__("precisions", ["fp32", "fp99"]),
        f"precisions[1]: unknown value 'fp99'; valid: {', '.join(PRECISIONS)}",
    ),
    "backend": (
        lambda r: r.__setitem__("backends", ["pytorch", "tvm"]),
        f"backends[1]: unknown value 'tvm'; valid: {', '.join(BACKENDS)}",
    ),
}
STAGE_ARGS = {
    "prepare": (["--out", "data/prepared"], "data/prepared"),
    "gate": (["--model-dir", R, "--out", f"{R}/gate.json"], f"{R}/gate.json"),
    "report": (["--model-dir", R], f"{R}/summary.md"),
}


@pytest.mark.parametrize("stage", sorted(STAGE_ARGS))
@pytest.mark.parametrize("bad", sorted(BAD_NAMES))
def test_unknown_name_in_params(project: Path, bad: str, stage: str) -> None:
    change, expected = BAD_NAMES[bad]
    edit_params(project, change)
    args, output = STAGE_ARGS[stage]
    proc = run_stage(stage, args, project, check=False)
    line = one_line_error(
        proc, "quality gate" if stage == "gate" else stage, "invalid parameters in params.yaml", expected
    )
    assert (
        line == f"error: {'quality gate' if stage == 'gate' else stage}: invalid parameters in params.yaml: {expected}"
    )
    assert not (project / output).exists()


def test_unknown_arch_stops_train_before_it_writes_anything(project: Path) -> None:
    edit_params(project, BAD_NAMES["arch"][0])
    proc = run_stage(
        "train",
        TRAIN_ARGS,
        project,
        check=False,
    )
    one_line_error(proc, "train", BAD_NAMES["arch"][1])
    assert not (project / "artifacts").exists() and not (project / "reports").exists()


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [
        ([0], "bench.batch_sizes[0]: must be > 0, got 0"),
        ([4, -1], "bench.batch_sizes[1]: must be > 0, got -1"),
        (["a"], "bench.batch_sizes[0]: expected an integer, got 'a'"),
        ([], "bench.batch_sizes: must list at least one batch size"),
    ],
)
def test_bad_batch_sizes(project: Path, sizes: list[Any], expected: str) -> None:
    edit_params(project, lambda r: r["bench"].__setitem__("batch_sizes", sizes))
    proc = run_stage("prepare", ["--out", "data/prepared"], project, check=False)
    one_line_error(proc, "prepare", expected)
    assert not (project / "data" / "prepared").exists()


def test_several_problems_in_one_line(project: Path) -> None:
    def change(r: dict[str, Any]) -> None:
        r["model"]["arch"] = "resnet99"
        r["bench"]["batch_sizes"] = [0]
        r["precisions"] = ["fp99"]

    edit_params(project, change)
    proc = run_stage("prepare", ["--out", "data/prepared"], project, check=False)
    one_line_error(
        proc,
        "prepare",
        "model.arch: unknown value 'resnet99'",
        "precisions[0]: unknown value 'fp99'",
        "bench.batch_sizes[0]: must be > 0",
    )


def test_unknown_key_in_params(project: Path) -> None:
    edit_params(project, lambda r: r["train"].__setitem__("epoch", 3))
    proc = run_stage("prepare", ["--out", "data/prepared"], project, check=False)
    one_line_error(proc, "prepare", "train.epoch: unknown key (valid: epochs, batch_size,")


def test_invalid_yaml_params(project: Path) -> None:
    (project / "params.yaml").write_text("model:\n  name: [resnet18_cifar\n  arch: resnet18\n")
    proc = run_stage("prepare", ["--out", "data/prepared"], project, check=False)
    one_line_error(proc, "prepare", "invalid parameters in params.yaml: not valid YAML")


def test_missing_params_file(project: Path) -> None:
    (project / "params.yaml").unlink()
    proc = run_stage("prepare", ["--out", "data/prepared"], project, check=False)
    one_line_error(proc, "prepare", "file not found: params.yaml (run from the project root)")


# -- prepare: raw data ---------------------------------------------------------------------


def _auto(project: Path) -> None:
    edit_params(project, lambda r: r["data"].update(source="auto", raw_dir="data/raw"))


def test_prepare_with_empty_raw_dir(project: Path) -> None:
    _auto(project)
    proc = run_stage("prepare", ["--out", "data/prepared"], project, check=False)
    one_line_error(
        proc,
        "prepare",
        "no CIFAR-10 found in data/raw/",
        "(it holds: nothing)",
        "accepted layouts:",
        "cifar-10-batches-py/",
        "cifar-10-python.tar.gz",
        "train/<class>/",
        "test/<class>/",
        ".tar.gz of such a tree",
        "data.download=auto",
    )
    assert not (project / "data" / "prepared").exists()
    assert sorted(p.name for p in (project / "data").iterdir()) == ["raw"]


def test_prepare_names_what_the_raw_dir_holds(project: Path) -> None:
    _auto(project)
    (project / "data" / "raw" / "README.md").write_text("# put CIFAR-10 here\n")
    (project / "data" / "raw" / "notes.txt").write_text("x")
    proc = run_stage("prepare", ["--out", "data/prepared"], project, check=False)
    one_line_error(proc, "prepare", "(it holds: README.md, notes.txt)", "accepted layouts:")
    assert not (project / "data" / "prepared").exists()


def _png(seed: int) -> bytes:
    from PIL import Image

    arr = np.random.default_rng(seed).integers(0, 255, size=(32, 32, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _tree_tar_gz(n_per_class: int = 12) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for split in ("train", "test"):
            for cls in ("cat", "dog"):
                for i in range(n_per_class):
                    blob = _png(hash((split, cls, i)) % 2**32)
                    info = tarfile.TarInfo(f"cifar/{split}/{cls}/{i}.png")
                    info.size = len(blob)
                    tar.addfile(info, io.BytesIO(blob))
    return buf.getvalue()


def test_prepare_with_a_truncated_tar_gz(project: Path) -> None:
    _auto(project)
    blob = _tree_tar_gz()
    (project / "data" / "raw" / "cifar10-jpg.tar.gz").write_bytes(blob[: len(blob) // 2])
    proc = run_stage("prepare", ["--out", "data/prepared"], project, check=False)
    one_line_error(proc, "prepare", "data/raw/cifar10-jpg.tar.gz: not a readable archive", "accepted layouts:")
    assert not (project / "data" / "prepared").exists()
    assert leftovers(project / "data") == []


def test_prepare_with_a_valid_tree_tar_gz_works(project: Path) -> None:
    """Control for the corrupt-archive tests: the same archive, whole, is accepted."""
    _auto(project)
    edit_params(project, lambda r: r["data"].__setitem__("calib_size", 8))
    edit_params(project, lambda r: r["calibrate"].__setitem__("num_images", 8))
    edit_params(project, lambda r: r["model"].__setitem__("num_classes", 2))
    (project / "data" / "raw" / "cifar10-jpg.tar.gz").write_bytes(_tree_tar_gz())
    run_stage("prepare", ["--out", "data/prepared"], project)
    meta = json.loads((project / "data" / "prepared" / "meta.json").read_text())
    assert meta["classes"] == ["cat", "dog"]
    assert (meta["train_images"], meta["test_images"], meta["calib_images"]) == (24, 24, 8)
    assert meta["source"] == "folder-archive:data/raw/cifar10-jpg.tar.gz" and meta["synthetic"] is False


def test_prepare_with_a_garbage_tar_gz(project: Path) -> None:
    _auto(project)
    (project / "data" / "raw" / "cifar10-jpg.tar.gz").write_bytes(b"this is not an archive\n" * 20)
    proc = run_stage("prepare", ["--out", "data/prepared"], project, check=False)
    assert not (project / "data" / "prepared").exists()
    one_line_error(proc, "prepare", "data/raw/cifar10-jpg.tar.gz: not a readable archive")


def test_prepare_with_a_garbage_official_archive(project: Path) -> None:
    _auto(project)
    (project / "data" / "raw" / "cifar-10-python.tar.gz").write_bytes(b"garbage" * 100)
    proc = run_stage("prepare", ["--out", "data/prepared"], project, check=False)
    one_line_error(proc, "prepare", "data/raw/cifar-10-python.tar.gz: not a readable .tar.gz", "accepted layouts:")
    assert not (project / "data" / "prepared").exists()


def test_prepare_with_an_incomplete_official_archive(project: Path) -> None:
    _auto(project)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        blob = b"not a pickle"
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    (project / "data" / "raw" / "cifar-10-python.tar.gz").write_bytes(buf.getvalue())
    proc = run_stage("prepare", ["--out", "data/prepared"], project, check=False)
    one_line_error(
        proc,
        "prepare",
        "data/raw/cifar-10-python.tar.gz: lacks data_batch_2, data_batch_3, data_batch_4, data_batch_5, test_batch",
    )
    assert not (project / "data" / "prepared").exists()


def test_failed_prepare_keeps_the_previous_output(project: Path) -> None:
    """A failing re-run leaves the last good data/prepared as it was (atomic replace)."""
    prepare_synthetic(project)
    before = {p.name: p.read_bytes() for p in (project / "data" / "prepared").iterdir()}
    _auto(project)
    (project / "data" / "raw" / "cifar-10-python.tar.gz").write_bytes(gzip.compress(b"x")[:10])
    proc = run_stage("prepare", ["--out", "data/prepared"], project, check=False)
    one_line_error(proc, "prepare", "cifar-10-python.tar.gz")
    after = {p.name: p.read_bytes() for p in (project / "data" / "prepared").iterdir()}
    assert after == before
    assert leftovers(project / "data") == []


# -- export / calibrate: corrupt artifacts -------------------------------------------------


EXPORT_ARGS = [
    "--checkpoint",
    f"{A}/checkpoint.pt",
    "--test",
    "data/prepared/test.npz",
    "--out-dir",
    f"{A}/onnx",
    "--reference",
    f"{A}/reference_logits.npy",
    "--report",
    f"{R}/export.json",
]


def _no_export_output(project: Path) -> None:
    assert not list(project.rglob("*.onnx"))
    assert not (project / A / "reference_logits.npy").exists()
    assert not (project / R / "export.json").exists()
    assert leftovers(project / "artifacts") == []


def test_export_with_a_corrupt_checkpoint(project: Path) -> None:
    prepare_synthetic(project)
    ckpt = project / A / "checkpoint.pt"
    ckpt.parent.mkdir(parents=True)
    import torch

    buf = io.BytesIO()  # a real checkpoint file, cut short (an interrupted copy)
    torch.save({"state_dict": {"w": torch.zeros(256, 256)}, "meta": {"model": MODEL}}, buf)
    ckpt.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    proc = run_stage("export", EXPORT_ARGS, project, check=False)
    one_line_error(
        proc,
        "export",
        f"{A}/checkpoint.pt: corrupt or not a checkpoint of this pipeline",
        "dvc repro -f train",
    )
    _no_export_output(project)


def test_export_with_a_checkpoint_of_another_model(project: Path) -> None:
    import torch

    prepare_synthetic(project)
    ckpt = project / A / "checkpoint.pt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"state_dict": {}, "meta": {"model": "resnet50"}}, ckpt)
    proc = run_stage("export", EXPORT_ARGS, project, check=False)
    one_line_error(proc, "export", f"{A}/checkpoint.pt holds model 'resnet50', params ask for '{MODEL}'")
    _no_export_output(project)


def test_export_without_a_checkpoint(project: Path) -> None:
    prepare_synthetic(project)
    proc = run_stage("export", EXPORT_ARGS, project, check=False)
    one_line_error(proc, "export", f"{A}/checkpoint.pt is missing: run `dvc repro train`")
    _no_export_output(project)


def _calibrate(project: Path, onnx: str) -> subprocess.CompletedProcess[str]:
    return run_stage(
        "calibrate",
        [
            "--onnx",
            onnx,
            "--calib",
            "data/prepared/calib.npz",
            "--out",
            f"{A}/onnx/int8.onnx",
            "--ranges",
            f"{A}/calibration/ranges.json",
            "--report",
            f"{R}/calibrate.json",
        ],
        project,
        check=False,
    )


def _no_calibrate_output(project: Path) -> None:
    assert not (project / A / "onnx" / "int8.onnx").exists()
    assert not (project / A / "calibration" / "ranges.json").exists()
    assert not (project / R / "calibrate.json").exists()


@pytest.mark.parametrize("content", [b"garbage, not a protobuf\n" * 4, b""], ids=["garbage", "empty"])
def test_calibrate_with_a_garbage_onnx(project: Path, content: bytes) -> None:
    prepare_synthetic(project)
    bad = project / A / "onnx" / "fp32.onnx"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(content)
    proc = _calibrate(project, f"{A}/onnx/fp32.onnx")
    _no_calibrate_output(project)
    one_line_error(proc, "calibrate", f"{A}/onnx/fp32.onnx")


def test_calibrate_without_the_onnx(project: Path) -> None:
    prepare_synthetic(project)
    proc = _calibrate(project, f"{A}/onnx/fp32.onnx")
    one_line_error(proc, "calibrate", f"{A}/onnx/fp32.onnx is missing: run `dvc repro export`")
    _no_calibrate_output(project)


def test_train_on_cuda_without_a_gpu(project: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    prepare_synthetic(project)
    edit_params(project, lambda r: r.__setitem__("device", "cuda"))
    proc = run_stage(
        "train",
        TRAIN_ARGS,
        project,
        check=False,
    )
    one_line_error(
        proc,
        "train",
        "params ask for device=cuda but no CUDA GPU is visible",
        "run the CPU profile",
        "dvc exp run -S profile=cpu",
    )
    assert not (project / "artifacts").exists() and not (project / "reports").exists()


# -- a stage run before the stage it needs ---------------------------------------------------

EVALUATE_INPUTS = [  # the evaluate stage's precision and inputs at FP32, as dvc.yaml gives them
    "--precision",
    "fp32",
    "--test",
    "data/prepared/test.npz",
    "--reference",
    f"{A}/reference_logits.npy",
    "--checkpoint",
    f"{A}/checkpoint.pt",
    "--onnx",
    f"{A}/onnx/fp32.onnx",
    "--engine-dir",
    f"{A}/engines/fp32",
]

MISSING_INPUT = {
    "train": (
        TRAIN_ARGS,
        "data/prepared/meta.json",
    ),
    "evaluate": (
        [*EVALUATE_INPUTS, "--out", f"{R}/eval/fp32.json", "--detail", f"{R}/eval/fp32_detail.json"],
        "data/prepared/meta.json",
    ),
    "gate": (["--model-dir", R, "--out", f"{R}/gate.json"], f"{R}/eval/fp32.json"),
    "build": (
        [
            "--precision",
            "fp32",
            "--onnx",
            f"{A}/onnx/fp32.onnx",
            "--fingerprint",
            "artifacts/fingerprint.json",
            "--out-dir",
            f"{A}/engines/fp32",
            "--report",
            f"{R}/build/fp32.json",
        ],
        "artifacts/fingerprint.json",
    ),
}


@pytest.mark.parametrize("stage", sorted(MISSING_INPUT))
def test_stage_run_before_its_inputs_exist(project: Path, stage: str) -> None:
    args, missing = MISSING_INPUT[stage]
    proc = run_stage(stage, args, project, check=False)
    # per-precision stages name their precision: `error: build fp32: ...`, `error: evaluate fp32: ...`
    label = {"gate": "quality gate", "build": "build fp32", "evaluate": "evaluate fp32"}.get(stage, stage)
    line = one_line_error(proc, label, missing)
    assert f"{missing} is missing" in line, line
    assert not (project / "reports").exists()


@pytest.mark.parametrize(
    ("stage", "args", "message"),
    [
        ("export", EXPORT_ARGS, f"{A}/checkpoint.pt is missing: run `dvc repro train`"),
        (
            "calibrate",
            ["--onnx", f"{A}/onnx/fp32.onnx", "--calib", "data/prepared/calib.npz", "--out", f"{A}/onnx/int8.onnx"]
            + ["--ranges", f"{A}/calibration/ranges.json", "--report", f"{R}/calibrate.json"],
            f"{A}/onnx/fp32.onnx is missing: run `dvc repro export`",
        ),
    ],
)
def test_stage_run_before_its_inputs_exist_says_what_to_run(
    project: Path, stage: str, args: list[str], message: str
) -> None:
    proc = run_stage(stage, args, project, check=False)
    one_line_error(proc, stage, message)


# -- evaluate / benchmark: a backend that fails is recorded, the others still run -----------


def _corrupt_onnx(project: Path) -> Path:
    bad = project / A / "onnx" / "fp32.onnx"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(b"not an onnx model" * 8)
    return bad


def test_evaluate_child_records_a_corrupt_onnx_as_failed(project: Path) -> None:
    prepare_synthetic(project)
    _corrupt_onnx(project)
    proc = run_stage(
        "evaluate",
        [*EVALUATE_INPUTS, "--backend", "onnxruntime", "--part", "part.json"],
        project,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    record = json.loads((project / "part.json").read_text())
    assert record["status"] == "failed"
    assert record["reason"].startswith(f"{A}/onnx/fp32.onnx: ONNX Runtime cannot load it")


def _tiny_inputs(prepared_tiny: Path) -> dict[str, str]:
    return {
        "test": str(prepared_tiny / "data/prepared/test.npz"),
        "reference": str(prepared_tiny / A / "reference_logits.npy"),
        "checkpoint": str(prepared_tiny / A / "checkpoint.pt"),
    }


def test_evaluate_records_a_corrupt_onnx_and_the_gate_fails(project: Path, prepared_tiny: Path) -> None:
    edit_params(project, lambda r: r.update(precisions=["fp32"], backends=["pytorch", "onnxruntime", "tensorrt"]))
    _corrupt_onnx(project)
    src = _tiny_inputs(prepared_tiny)
    proc = run_stage(
        "evaluate",
        [
            "--precision",
            "fp32",
            "--test",
            src["test"],
            "--reference",
            src["reference"],
            "--checkpoint",
            src["checkpoint"],
            "--onnx",
            f"{A}/onnx/fp32.onnx",
            "--engine-dir",
            f"{A}/engines/fp32",
            "--out",
            f"{R}/eval/fp32.json",
            "--detail",
            f"{R}/eval/fp32_detail.json",
        ],
        project,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    summary = json.loads((project / R / "eval" / "fp32.json").read_text())
    assert summary["precision"] == "fp32" and summary["synthetic_data"] is True
    ort = summary["onnxruntime"]
    assert ort["status"] == "failed"
    assert f"{A}/onnx/fp32.onnx: ONNX Runtime cannot load it" in ort["reason"]
    # the other backends are still measured
    assert summary["pytorch"]["status"] == "ok"
    assert summary["pytorch"]["images"] == 128 and 0.0 <= summary["pytorch"]["top1"] <= 100.0
    assert summary["pytorch"]["top1_agreement_vs_ort_fp32"] == 1.0
    assert summary["tensorrt"]["status"] == "skipped" and summary["tensorrt"]["reason"]
    detail = json.loads((project / R / "eval" / "fp32_detail.json").read_text())
    assert len(detail["pytorch"]["confusion"]) == 10
    # ... and the quality gate fails the run on the failed backend, in one line
    gate = run_stage("gate", ["--model-dir", R, "--out", f"{R}/gate.json"], project, check=False)
    one_line_error(gate, "quality gate", "onnxruntime fp32 fails 'backend ran'", "cannot load it")
    result = json.loads((project / R / "gate.json").read_text())
    assert result["passed"] is False and result["failed"] == 1
    assert result["failures"][0].startswith("onnxruntime fp32: ")


def _benchmark(project: Path, checkpoint: str) -> subprocess.CompletedProcess[str]:
    return run_stage(
        "benchmark",
        [
            "--precision",
            "fp32",
            "--checkpoint",
            checkpoint,
            "--onnx",
            f"{A}/onnx/fp32.onnx",
            "--engine-dir",
            f"{A}/engines/fp32",
            "--out",
            f"{R}/bench/fp32.json",
            "--records",
            f"{R}/bench/fp32.csv",
            "--layers",
            f"{R}/bench/fp32_layers.json",
        ],
        project,
        check=False,
    )


def test_benchmark_records_a_corrupt_onnx_and_times_the_rest(project: Path, prepared_tiny: Path) -> None:
    def quick(r: dict[str, Any]) -> None:
        r["backends"] = ["pytorch", "onnxruntime"]
        r["bench"].update(batch_sizes=[1, 2], iterations=3)

    edit_params(project, quick)
    _corrupt_onnx(project)
    proc = _benchmark(project, _tiny_inputs(prepared_tiny)["checkpoint"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    summary = json.loads((project / R / "bench" / "fp32.json").read_text())
    assert summary["onnxruntime"]["status"] == "failed"
    assert f"{A}/onnx/fp32.onnx: ONNX Runtime cannot load it" in summary["onnxruntime"]["reason"]
    pt = summary["pytorch"]
    assert pt["status"] == "ok" and pt["compute_bs1_latency_ms_p50"] > 0
    assert pt["compute_throughput_batch"] in (1, 2)
    rows = (project / R / "bench" / "fp32.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert header[:4] == ["backend", "precision", "batch_size", "mode"]
    assert [r.split(",")[:4] for r in rows[1:]] == [
        ["pytorch", "fp32", "1", "compute"],
        ["pytorch", "fp32", "2", "compute"],
    ]
    assert json.loads((project / R / "bench" / "fp32_layers.json").read_text()) == {}


def test_benchmark_when_every_backend_fails(project: Path) -> None:
    edit_params(project, lambda r: r.update(backends=["onnxruntime"]))
    _corrupt_onnx(project)
    proc = _benchmark(project, f"{A}/checkpoint.pt")
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.returncode == 0
    summary = json.loads((project / R / "bench" / "fp32.json").read_text())
    assert summary["onnxruntime"]["status"] == "failed"
    assert (project / R / "bench" / "fp32.csv").read_text() == "backend\n"


def test_benchmark_when_every_backend_fails_into_an_existing_folder(project: Path) -> None:
    edit_params(project, lambda r: r.update(backends=["onnxruntime"]))
    _corrupt_onnx(project)
    (project / R / "bench").mkdir(parents=True)
    proc = _benchmark(project, f"{A}/checkpoint.pt")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((project / R / "bench" / "fp32.json").read_text())
    assert summary == {
        "precision": "fp32",
        "profile": "cpu",
        "onnxruntime": {
            "status": "failed",
            "reason": summary["onnxruntime"]["reason"],
            "gpu": {"name": "cpu", "index": None, "uuid": None},  # where it was tried
        },
    }
    assert (project / R / "bench" / "fp32.csv").read_text() == "backend\n"


def test_leftovers_helper_finds_temporary_files(tmp_path: Path) -> None:
    """leftovers() finds what an interrupted atomic write leaves."""
    (tmp_path / ".x.json.abc.tmp").write_text("")
    (tmp_path / "ok.json").write_text("")
    assert leftovers(tmp_path) == [str(tmp_path / ".x.json.abc.tmp")]
    shutil.rmtree(tmp_path)
    assert leftovers(tmp_path) == []


# -- validate: bad params fail before any stage deletes anything ------------------------------


@pytest.mark.parametrize(
    ("change", "needles"),
    [
        (lambda r: r["train"].__setitem__("epochs", -1), ["train.epochs: must be >= 0, got -1"]),
        (
            lambda r: r["data"].__setitem__("calib_size", 999999),
            ["data.calib_size: 999999 exceeds the", "training images", "use at most"],
        ),
        (lambda r: r["bench"].__setitem__("batch_sizes", [1, 0]), ["bench.batch_sizes[1]: must be > 0, got 0"]),
    ],
)
def test_validate_rejects_bad_params_in_one_line_and_writes_nothing(
    project: Path, change: Callable[[dict[str, Any]], None], needles: list[str]
) -> None:
    edit_params(project, change)
    proc = run_stage("validate", ["--out", "artifacts/params-valid.json"], project, check=False)
    one_line_error(proc, "validate", "invalid parameters in params.yaml", *needles)
    assert not (project / "artifacts").exists()


def test_validate_counts_the_raw_training_images_without_decoding(project: Path, tmp_path: Path) -> None:
    """A JPEG tree in an archive: names are counted, no image is opened (these are not images)."""
    archive = project / "data" / "raw" / "tree.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for split, n in (("train", 3), ("test", 1)):
            for i in range(n):
                info = tarfile.TarInfo(f"tree/{split}/cat/{i}.jpg")
                info.size = 4
                tar.addfile(info, io.BytesIO(b"junk"))

    def use_archive(r: dict[str, Any]) -> None:
        r["data"].update(source="auto", calib_size=4)
        r["calibrate"]["num_images"] = 4

    edit_params(project, use_archive)
    proc = run_stage("validate", ["--out", "ok.json"], project, check=False)
    one_line_error(proc, "validate", "data.calib_size: 4 exceeds the 3 training images in data/raw", "at most 3")
    edit_params(project, lambda r: r["data"].update(calib_size=3) or r["calibrate"].update(num_images=3))
    proc = run_stage("validate", ["--out", "ok.json"], project, check=False)
    one_line_error(proc, "validate", "calibrate.heldout_images: 256 held-out and 3 calibration images exceed the 3")
    edit_params(project, lambda r: r["data"].update(calib_size=2) or r["calibrate"].update(num_images=2))
    edit_params(project, lambda r: r["calibrate"].update(heldout_images=1, rank_images=1))
    run_stage("validate", ["--out", "ok.json"], project)
    assert json.loads((project / "ok.json").read_text()) == {"params_valid": True}


def test_validate_output_is_the_same_for_any_valid_params(project: Path) -> None:
    run_stage("validate", ["--out", "a.json"], project)
    edit_params(project, lambda r: r["train"].__setitem__("epochs", 7))
    run_stage("validate", ["--out", "b.json"], project)
    assert (project / "a.json").read_bytes() == (project / "b.json").read_bytes()


@pytest.mark.parametrize("stage", ["probe", "build"])
def test_missing_trt_python_is_named_in_one_line(project: Path, tmp_path: Path, stage: str) -> None:
    missing = tmp_path / "no-such-venv" / "bin" / "python"
    args = {
        "probe": ["--out", "fp.json"],
        "build": ["--precision", "fp32", "--onnx", "a.onnx", "--fingerprint", "fp.json", "--out-dir", "e"],
    }[stage] + (["--report", "r.json"] if stage == "build" else [])
    proc = run_stage(stage, args, project, check=False, env={"TRT_PYTHON": str(missing)})
    one_line_error(proc, f"{stage}" if stage == "probe" else "build fp32", f"TRT_PYTHON={missing} does not exist")
    assert not (project / "fp.json").exists() and not (project / "e").exists()


def test_trt_python_that_is_a_folder_is_named_in_one_line(project: Path, tmp_path: Path) -> None:
    proc = run_stage("probe", ["--out", "fp.json"], project, check=False, env={"TRT_PYTHON": str(tmp_path)})
    one_line_error(proc, "probe", f"TRT_PYTHON={tmp_path} is not an executable file")
