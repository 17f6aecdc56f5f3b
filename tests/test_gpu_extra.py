"""tools/gpu_extra.py, the GPU-side install of `make repro`, with a fake nvidia-smi, a fake
virtual-environment interpreter (its PyTorch, TensorRT and pip) and a local package index:
nothing is installed."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ROOT

TOOL = ROOT / "tools" / "gpu_extra.py"
UNREACHABLE = "http://127.0.0.1:9/"  # the discard port: connection refused at once

Run = Callable[..., tuple[subprocess.CompletedProcess[str], list[str]]]

FAKE_PYTHON = """#!/bin/sh
case "$1" in
  -c) case "$2" in
        *torch*) [ -n "$FAKE_TORCH_CUDA" ] && echo "$FAKE_TORCH_CUDA" && exit 0; exit 1;;
        *tensorrt*) [ -n "$FAKE_TENSORRT" ] && echo "$FAKE_TENSORRT" && exit 0; exit 1;;
      esac;;
  -m) echo "$*" >> "$FAKE_PIP_LOG"
      [ "$FAKE_PIP_OK" = 1 ] && exit 0
      echo "ERROR: ResolutionImpossible: cuda-bindings conflict" >&2; exit 1;;
esac
exit 2
"""
FAKE_SMI = """#!/bin/sh
[ -n "$FAKE_DRIVER" ] || { echo "NVIDIA-SMI has failed because it couldn't communicate with the driver"; exit 9; }
echo "$FAKE_DRIVER"
"""


def _script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def machine(tmp_path: Path) -> Run:
    """Run the tool on a fake machine: ``run(driver=..., torch=..., tensorrt=..., pip_ok=...)``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _script(bin_dir / "nvidia-smi", FAKE_SMI)
    python = _script(tmp_path / "python", FAKE_PYTHON)
    index = tmp_path / "index.html"  # stands in for the index: a URL that answers
    index.write_text("<html></html>")
    pip_log = tmp_path / "pip.log"

    def run(
        *args: str,
        driver: str = "",
        torch: str = "",
        tensorrt: str = "",
        pip_ok: bool = True,
        index_url: str = index.as_uri(),
        trt_python: str = "",
    ) -> tuple[subprocess.CompletedProcess[str], list[str]]:
        env = dict(
            os.environ,
            PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            FAKE_DRIVER=driver,
            FAKE_TORCH_CUDA=torch,
            FAKE_TENSORRT=tensorrt,
            FAKE_PIP_OK="1" if pip_ok else "0",
            FAKE_PIP_LOG=str(pip_log),
            TRT_PYTHON=trt_python,
        )
        cmd = [sys.executable, str(TOOL), "--python", str(python), "--index", index_url, *args]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        return proc, pip_log.read_text().splitlines() if pip_log.exists() else []

    return run


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: make repro: ")
    return lines[0]


@pytest.mark.parametrize(
    "driver,torch,extra",
    [
        ("580.65.06", "13.0", "gpu-cu13"),
        ("590.44.01", "", "gpu-cu13"),  # a CPU PyTorch: the driver decides
        ("550.54.15", "", "gpu-cu12"),
        ("535.104.05", "12.6", "gpu-cu12"),
        ("580.65.06", "12.6", "gpu-cu12"),  # a CUDA 12 PyTorch keeps the CUDA 12 side on a newer driver
    ],
)
def test_the_driver_picks_the_extra_and_installs_it_from_nvidias_index(
    machine: Run, driver: str, torch: str, extra: str
) -> None:
    proc, pip = machine(driver=driver, torch=torch)
    assert proc.returncode == 0, proc.stderr
    assert len(pip) == 1 and f"-e {ROOT}[{extra}]" in pip[0]
    assert pip[0].startswith("-m pip install --extra-index-url file://")
    assert f"installed the {extra} extra (TensorRT 11.4.0.106) for driver {driver}" in proc.stdout


def test_without_an_nvidia_gpu_nothing_is_installed(machine: Run) -> None:
    proc, pip = machine(driver="")
    assert proc.returncode == 0 and "no NVIDIA GPU" in proc.stdout and pip == []


def test_an_old_driver_stops_with_one_line(machine: Run) -> None:
    proc, pip = machine(driver="470.256.02")
    line = _one_error_line(proc)
    assert "driver 470.256.02 is too old" in line and "r535+" in line and "NO_TENSORRT=1" in line
    assert pip == []


def test_a_cuda13_pytorch_on_a_cuda12_driver_stops_with_what_to_install(machine: Run) -> None:
    proc, pip = machine(driver="550.54.15", torch="13.0")
    line = _one_error_line(proc)
    assert "runs CUDA 12 but this PyTorch is a CUDA 13.0 build" in line
    assert "https://download.pytorch.org/whl/cu126" in line and pip == []


def test_an_unreachable_index_stops_with_one_line(machine: Run) -> None:
    proc, pip = machine(driver="580.65.06", torch="13.0", index_url=UNREACHABLE)
    line = _one_error_line(proc)
    assert f"NVIDIA's package index {UNREACHABLE} is not reachable" in line
    assert "-e '.[gpu-cu13]'" in line and pip == []


def test_a_failing_pip_stops_with_one_line_after_pips_own_output(machine: Run) -> None:
    proc, pip = machine(driver="550.54.15", torch="12.6", pip_ok=False)
    assert proc.returncode == 1 and len(pip) == 1
    lines = proc.stderr.strip().splitlines()
    assert "ResolutionImpossible" in lines[0]  # pip's message stays visible
    assert lines[-1].startswith("error: make repro: installing the gpu-cu12 extra failed")
    assert "TRT_PYTHON" in lines[-1] and "NO_TENSORRT=1" in lines[-1]


def test_an_installed_pinned_tensorrt_is_kept(machine: Run) -> None:
    proc, pip = machine(driver="580.65.06", torch="13.0", tensorrt="11.4.0.106", index_url=UNREACHABLE)
    assert proc.returncode == 0 and "TensorRT 11.4.0.106 is installed" in proc.stdout and pip == []


def test_no_tensorrt_goes_on_loudly_without_installing(machine: Run) -> None:
    proc, pip = machine("--no-tensorrt", driver="450.80.02")
    assert proc.returncode == 0 and pip == []
    assert "NO_TENSORRT=1: TensorRT is SKIPPED" in proc.stdout


def test_trt_python_skips_the_install_and_must_exist(machine: Run, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "python3"
    line = _one_error_line(machine(driver="580.65.06", trt_python=str(missing))[0])
    assert f"TRT_PYTHON={missing} is not an executable interpreter" in line
    present = _script(tmp_path / "trt-python", "#!/bin/sh\nexit 0\n")
    proc, pip = machine(driver="580.65.06", trt_python=str(present))
    assert proc.returncode == 0 and f"TensorRT runs in TRT_PYTHON={present}" in proc.stdout and pip == []


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_repro_runs_the_tool_first_and_passes_no_tensorrt(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / ".installed").write_text("")  # newer than pyproject.toml: setup has nothing to do
    env = dict(os.environ, SERVE_PYTHON=str(venv / "bin" / "python"))  # no serving venv to build first
    proc = subprocess.run(
        ["make", "--no-print-directory", "-n", "repro", f"VENV={venv}", "NO_TENSORRT=1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert first == f"{venv}/bin/python tools/gpu_extra.py --python {venv}/bin/python --no-tensorrt"


def test_the_extras_pin_what_the_tool_expects(monkeypatch: pytest.MonkeyPatch) -> None:
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    spec = importlib.util.spec_from_file_location("gpu_extra", TOOL)
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_extra", tool)  # its dataclass looks its module up
    spec.loader.exec_module(tool)
    for major, (_, extra, tensorrt) in tool.CUDA.items():
        pins = extras[extra]
        assert f"tensorrt-cu{major}=={tensorrt}" in pins
        assert any(p.startswith(f"cuda-bindings>={major}.") and f"<{major + 1}" in p for p in pins), pins
        assert any(p.startswith("onnxruntime-gpu") for p in pins)
    assert extras["gpu"] == [f"trt-pipeline[{tool.CUDA[max(tool.CUDA)][1]}]"]
