"""tools/gpu-host/session.sh without the GPU host: workspaces, background jobs, A/B steps and
collect, run locally with this interpreter's DVC (a dry run composes the workspace exactly as
on the host)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, TINY

SESSION = ROOT / "tools" / "gpu-host" / "session.sh"
DVC = Path(sys.executable).parent / "dvc"

pytestmark = pytest.mark.skipif(not DVC.exists() or shutil.which("bash") is None, reason="needs bash and dvc")


def _session(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ,
        WS=str(tmp_path / "ws"),
        OUT=str(tmp_path / "out"),
        BG=str(tmp_path / "bg"),
        DVC=str(DVC),
        HOST_PYTHON=sys.executable,
    )
    return subprocess.run(["bash", str(SESSION), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _ab(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`session.sh ab ...` with A/B folders under tmp_path/ab and a TensorRT Python that only
    records the module it was asked to run (in tmp_path/trt-calls) and fails."""
    stub = tmp_path / "trt-python"
    stub.write_text(f'#!/bin/sh\necho "$2" >> {tmp_path / "trt-calls"}\nexit 1\n')
    stub.chmod(0o755)
    env = dict(
        os.environ,
        WS=str(tmp_path / "ws"),
        OUT=str(tmp_path / "out"),
        DVC=str(DVC),
        HOST_PYTHON=sys.executable,
        TRT_PYTHON=str(stub),
        AB_DIR=str(tmp_path / "ab"),
    )
    return subprocess.run(
        ["bash", str(SESSION), "ab", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_a_workspace_gets_its_own_overrides(tmp_path: Path) -> None:
    made = _session(tmp_path, "workspace", "r18-cutmix", "train.cutmix=0.5", "train.cutout=0")
    assert made.returncode == 0, made.stderr
    assert made.stdout.split() == ["train.cutmix=0.5", "train.cutout=0"]
    dry = _session(tmp_path, "repro", "r18-cutmix", "--dry", "validate")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "Running stage 'validate'" in dry.stdout and "PIPELINE COMPLETE" in dry.stdout
    params = yaml.safe_load((tmp_path / "ws" / "r18-cutmix" / "params.yaml").read_text())
    assert params["model"]["name"] == "resnet18_cifar"
    assert params["train"]["cutmix"] == 0.5 and params["train"]["cutout"] == 0
    assert params["train"]["epochs"] == yaml.safe_load((ROOT / "params.yaml").read_text())["train"]["epochs"]


def test_an_experiment_name_is_a_workspace_of_that_experiment(tmp_path: Path) -> None:
    dry = _session(tmp_path, "repro", "resnet50_224", "--dry", "validate")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert (tmp_path / "ws" / "resnet50_224" / "overrides").read_text().split() == ["experiment=resnet50_224"]
    params = yaml.safe_load((tmp_path / "ws" / "resnet50_224" / "params.yaml").read_text())
    assert params["model"]["name"] == "resnet50" and params["model"]["image_size"] == 224
    assert params["train"]["epochs"] == 12


def test_workspace_without_a_name_is_a_usage_error(tmp_path: Path) -> None:
    bad = _session(tmp_path, "workspace")
    assert bad.returncode == 2 and "usage: session.sh" in bad.stderr


def test_background_steps_run_in_order_and_wait_reports_them(tmp_path: Path) -> None:
    started = _session(tmp_path, "bg", "job1", "workspace a train.epochs=1", "repro a --dry validate")
    assert started.returncode == 0 and started.stdout.startswith("started job1"), started.stderr
    waited = _session(tmp_path, "wait", "120")
    assert waited.returncode == 0, waited.stderr
    assert "== job1: finished rc=0" in waited.stdout, waited.stdout
    log = (tmp_path / "bg" / "job1.log").read_text()
    assert log.index("== workspace a train.epochs=1") < log.index("== repro a --dry validate")
    assert "PIPELINE COMPLETE" in log
    # the job's own OUT: a later command's $OUT is emptied when it starts
    assert "Running stage 'validate'" in (tmp_path / "bg" / "job1.out" / "repro-a.log").read_text()


def test_ab_composes_the_workspace_overrides_plus_its_own(tmp_path: Path) -> None:
    """`ab` rebuilds from params the workspace's overrides and the A/B's compose; here the
    build then fails (no ONNX on this machine), which must stop the step before the benchmark."""
    assert _session(tmp_path, "workspace", "resnet50_224", "train.epochs=2").returncode == 0
    assert _session(tmp_path, "repro", "resnet50_224", "--dry", "validate").returncode == 0
    env_dir = tmp_path / "ab"
    ran = _ab(tmp_path, "resnet50_224", "int8", "opt5", "build.opt_level=5", "bench.contexts=1")
    params = yaml.safe_load((env_dir / "ab-opt5-int8" / "params.yaml").read_text())
    assert params["model"]["name"] == "resnet50" and params["train"]["epochs"] == 2  # the workspace's
    assert params["build"]["opt_level"] == 5 and params["bench"]["contexts"] == 1  # the A/B's
    assert not (tmp_path / "out" / "ab-opt5-bench-int8.json").exists()
    calls = (tmp_path / "trt-calls").read_text().split() if (tmp_path / "trt-calls").exists() else []
    assert "stages.benchmark" not in calls and "stages.evaluate" not in calls, ran.stdout  # never started
    bad = _session(tmp_path, "ab", "resnet50_224", "int8", "opt5")
    assert bad.returncode == 2 and "usage: session.sh" in bad.stderr


@pytest.mark.parametrize(
    ("override", "first_step_needs"),
    [
        ("calibrate.quantize_pools=true", "artifacts/resnet50/onnx/fp32.onnx is missing"),  # calibrates first
        ("export.opset=18", "artifacts/resnet50/checkpoint.pt"),  # exports first
    ],
)
def test_ab_redoes_what_its_overrides_change_into_its_folder(
    tmp_path: Path, override: str, first_step_needs: str
) -> None:
    """A calibrate.* override re-calibrates, an export.* one re-exports (and, for INT8,
    re-calibrates) into the A/B folder before the build; here that first step fails (no
    artifacts on this machine), which must stop the A/B before the build."""
    assert _session(tmp_path, "workspace", "resnet50_224").returncode == 0
    assert _session(tmp_path, "repro", "resnet50_224", "--dry", "validate").returncode == 0
    ran = _ab(tmp_path, "resnet50_224", "int8", "x", override)
    key, value = override.split("=")
    section, name = key.split(".")
    params = yaml.safe_load((tmp_path / "ab" / "ab-x-int8" / "params.yaml").read_text())
    assert params[section][name] == yaml.safe_load(value)
    assert first_step_needs in ran.stdout + ran.stderr
    assert not (tmp_path / "out" / "ab-x-build-int8.json").exists()  # the build did not run


def test_collect_brings_back_reports_engine_json_and_the_range_cache(tmp_path: Path) -> None:
    import tarfile

    ws = tmp_path / "ws" / "r50"
    (tmp_path / "bg").mkdir()
    (tmp_path / "bg" / "main.log").write_text("== repro r50")
    for rel, text in {
        "reports/resnet50/summary.md": "# r50",
        "params.yaml": "seed: 0\n",
        "artifacts/resnet50/engines/int8/build.json": "{}",
        "artifacts/resnet50/engines/int8/model.engine": "binary",
        "artifacts/resnet50/calibration/ranges.json": '{"method": "minmax"}',
    }.items():
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws / rel).write_text(text)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "repro-r50.log").write_text("log")
    done = _session(tmp_path, "collect")
    assert done.returncode == 0, done.stderr
    with tarfile.open(tmp_path / "out" / "results.tgz") as tar:
        names = {n.removeprefix("./") for n in tar.getnames()}
    for rel in ("reports/resnet50/summary.md", "params.yaml", "artifacts/resnet50/engines/int8/build.json"):
        assert f"r50/{rel}" in names
    assert "r50/artifacts/resnet50/calibration/ranges.json" in names
    assert "r50/artifacts/resnet50/engines/int8/model.engine" not in names  # no engines come back
    assert "out/repro-r50.log" in names
    assert "bg/main.log" in names


@pytest.mark.slow
def test_the_sweep_check_runs_on_the_cpu_and_resumes(tmp_path: Path) -> None:
    """tools/gpu-host/sweep.sh all with the tiny CPU setup: the baseline, the grid two at a
    time and one at a time, each in its own repository, and the comparison; called again, it
    finds every step done."""
    import tarfile
    import time

    base = dict(o.split("=", 1) for o in TINY)
    base.update({"train.subset": "128", "precision": "int8", "backends": "[onnxruntime]"})
    base.update({"calibrate.min_agreement": "0.0", "quality.max_top1_drop": "100.0"})
    env = dict(
        os.environ,
        OUT=str(tmp_path / "out"),
        DVC=str(DVC),
        HOST_PYTHON=sys.executable,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        DEADLINE=str(int(time.time()) + 1200),  # the script stops itself well before the test's timeout
        DVC_NO_ANALYTICS="1",
        PIPELINE_LOCK_DIR=str(tmp_path / "locks"),
        SWEEP_GPUS="2",
        SWEEP_WS=str(tmp_path / "sweep"),
        SWEEP_REPORT=str(tmp_path / "report"),
        SWEEP_BASE=" ".join(f"{k}={v}" for k, v in base.items()),
        SWEEP_GRID="calibrate.method=minmax,percentile",
        SWEEP_POINT_S="60",
    )
    env.pop("PYTHONPATH", None)
    script = ROOT / "tools" / "gpu-host" / "sweep.sh"
    first = _sweep(script, env, tmp_path / "first.log", timeout=1500)
    assert first.returncode == 0 and "SWEEP CHECK COMPLETE" in first.stdout, first.stdout[-6000:] + _logs(tmp_path)

    report = tmp_path / "report"
    runs = {k: json.loads((report / f"run-{k}gpu" / "sweep.json").read_text()) for k in (1, 2)}
    assert runs[1]["jobs"] == 1 and runs[1]["max_running"] == 1
    assert runs[2]["jobs"] == 2 and runs[2]["max_running"] == 2
    assert all(set(r["states"].values()) == {"success"} for r in runs.values())
    rows = (report / "compare.csv").read_text().splitlines()
    assert rows[0].startswith("label,precision,backend,figure,a,gpu_a,b,gpu_b,diff_pct")
    assert len(rows) == 1 + 2 * 2  # 2 points x (batch-1 latency, best throughput) of onnxruntime INT8
    assert all(",cpu," in r for r in rows[1:])
    md = (report / "compare.md").read_text()
    assert f"| {runs[1]['wall_s']} |" in md and f"| {runs[2]['wall_s']} |" in md
    with tarfile.open(tmp_path / "out" / "sweep-check.tgz") as tar:
        names = set(tar.getnames())
    assert {"report/compare.md", "report/run-2gpu/summary.md", "report/run-1gpu/figures.csv"} <= names

    again = _sweep(script, env, tmp_path / "again.log", timeout=900)
    assert again.returncode == 0, again.stdout[-6000:]
    assert "base: done" in again.stdout and "run 2: done" in again.stdout and "run 1: done" in again.stdout


def _sweep(script: Path, env: dict[str, str], log: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """sweep.sh all, its output in a file: a pipe would keep the call waiting for any
    background process (a DVC queue worker) that inherited it."""
    with open(log, "w") as out:
        proc = subprocess.run(
            ["bash", str(script), "all"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
        )
    return subprocess.CompletedProcess(proc.args, proc.returncode, log.read_text(), "")


def _logs(tmp_path: Path) -> str:
    """The sweeps' own logs and DVC's queue logs, for a failure message."""
    found = sorted((tmp_path / "sweep").glob("run-*gpu/sweep.log"))
    found += sorted((tmp_path / "sweep").glob("run-*gpu/reports/sweep/logs/*.log"))
    return "".join(f"\n--- {f}\n{f.read_text(errors='replace')[-3000:]}" for f in found)
