#!/usr/bin/env python3
"""Install the GPU side (TensorRT, cuda-bindings, onnxruntime-gpu) for this machine's CUDA driver.

    python tools/gpu_extra.py --python .venv/bin/python [--no-tensorrt]

Run by ``make repro`` before the pipeline. It picks the ``gpu-cu13`` extra for an NVIDIA driver
r580+ and ``gpu-cu12`` for r535+ (by ``nvidia-smi``; a PyTorch built for CUDA 12 keeps the CUDA
12 side on a newer driver) and installs it into the virtual environment with NVIDIA's index
(PyPI's TensorRT libraries package only downloads from there). When it cannot (no index
reachable, driver too old, a PyTorch whose CUDA the driver cannot run, pip fails) it stops with
one line saying what to install and from where; ``--no-tensorrt`` (``make repro NO_TENSORRT=1``)
goes on without TensorRT and says so loudly. With ``TRT_PYTHON`` set, TensorRT lives in that
interpreter: nothing is installed, the interpreter must exist. Without an NVIDIA GPU it does
nothing (``make repro`` runs the CPU profile).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

INDEX = "https://pypi.nvidia.com"
ROOT = Path(__file__).resolve().parents[1]
# CUDA major -> (oldest driver branch that runs it, the extra, the TensorRT it pins).
CUDA = {13: (580, "gpu-cu13", "11.4.0.106"), 12: (535, "gpu-cu12", "11.4.0.106")}
PYTORCH_CU12 = "https://download.pytorch.org/whl/cu126"


class Stop(Exception):
    """make repro cannot go on; the message is the one line to show."""


@dataclass(frozen=True)
class Machine:
    driver: str | None  # nvidia-smi's driver version; None: no NVIDIA GPU
    torch_cuda: str | None  # torch.version.cuda of the venv's PyTorch; None: a CPU build or none
    tensorrt: str | None  # the venv's tensorrt.__version__; None: not importable


def driver_version() -> str | None:
    """The NVIDIA driver version ("580.65.06"), or None without a working nvidia-smi."""
    try:
        proc = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    return lines[0] if proc.returncode == 0 and lines and re.match(r"\d+\.", lines[0]) else None


def ask(python: str, code: str) -> str | None:
    """What ``python -c code`` prints, or None when it fails."""
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or None


def inspect_machine(python: str) -> Machine:
    driver = driver_version()
    if driver is None:
        return Machine(None, None, None)
    torch_cuda = ask(python, "import torch; print(torch.version.cuda or '')")
    tensorrt = ask(python, "import tensorrt; print(tensorrt.__version__)")
    return Machine(driver, torch_cuda, tensorrt)


def cuda_major(m: Machine) -> int:
    """The CUDA major whose GPU side to install: what the driver runs, and PyTorch's if older."""
    assert m.driver is not None
    branch = int(m.driver.split(".")[0])
    runs = [major for major, (oldest, _, _) in CUDA.items() if branch >= oldest]
    if not runs:
        raise Stop(
            f"NVIDIA driver {m.driver} is too old for TensorRT (its CUDA 12 build needs r535+, CUDA 13 r580+): "
            "update the driver (https://www.nvidia.com/drivers), or run `make repro NO_TENSORRT=1` to go on without it"
        )
    best = max(runs)
    torch_major = int(m.torch_cuda.split(".")[0]) if m.torch_cuda else None
    if torch_major is not None and torch_major > best:
        raise Stop(
            f"NVIDIA driver {m.driver} runs CUDA {best} but this PyTorch is a CUDA {m.torch_cuda} build "
            f"(PyPI's default): install PyTorch for CUDA {best} "
            f"(pip install torch torchvision --index-url {PYTORCH_CU12}) "
            "or update the driver to r580+, or run `make repro NO_TENSORRT=1`"
        )
    return torch_major if torch_major in CUDA else best


def index_reachable(url: str, timeout: float = 15.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def install(python: str, extra: str, index: str) -> None:
    cmd = [python, "-m", "pip", "install", "--extra-index-url", index, "-e", f"{ROOT}[{extra}]"]
    print("make repro:", " ".join(cmd), flush=True)
    if subprocess.run(cmd).returncode != 0:
        raise Stop(
            f"installing the {extra} extra failed (pip's message is above): install it by hand with "
            f"`pip install --extra-index-url {index} -e '.[{extra}]'` (TensorRT from {index}), "
            "or put TensorRT in its own interpreter and set TRT_PYTHON, or run `make repro NO_TENSORRT=1`"
        )


def run(python: str, no_tensorrt: bool, index: str) -> str:
    """Set up the GPU side; returns the line to show. Raises Stop when make repro must stop."""
    trt_python = os.environ.get("TRT_PYTHON")
    if trt_python:
        if not (os.path.isfile(trt_python) and os.access(trt_python, os.X_OK)):
            raise Stop(f"TRT_PYTHON={trt_python} is not an executable interpreter: fix the path or unset TRT_PYTHON")
        return f"TensorRT runs in TRT_PYTHON={trt_python}; nothing installed"
    m = inspect_machine(python)
    if m.driver is None:
        return "no NVIDIA GPU (nvidia-smi): the GPU side is not installed"
    if no_tensorrt:
        kept = f" (TensorRT {m.tensorrt} is installed and will still be used)" if m.tensorrt else ""
        return f"*** NO_TENSORRT=1: TensorRT is SKIPPED: nothing installed, TensorRT results will be missing{kept} ***"
    major = cuda_major(m)
    _, extra, pinned = CUDA[major]
    if m.tensorrt == pinned:
        return f"TensorRT {m.tensorrt} is installed (driver {m.driver}, {extra})"
    if not index_reachable(index):
        raise Stop(
            f"NVIDIA's package index {index} is not reachable, and TensorRT's libraries come only from there: "
            f"run `pip install --extra-index-url {index} -e '.[{extra}]'` where it is reachable, "
            "or run `make repro NO_TENSORRT=1`"
        )
    install(python, extra, index)
    return f"installed the {extra} extra (TensorRT {pinned}) for driver {m.driver}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default=sys.executable, help="the virtual environment's interpreter")
    ap.add_argument("--no-tensorrt", action="store_true", help="go on without TensorRT (says so loudly)")
    ap.add_argument("--index", default=INDEX, help="NVIDIA's package index")
    args = ap.parse_args(argv)
    try:
        print(f"make repro: {run(args.python, args.no_tensorrt, args.index)}")
    except Stop as exc:
        print(f"error: make repro: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
