"""Shared fixtures; GPU/TensorRT tests skip themselves where the hardware or library is missing."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = ("conf", "stages", "dvc.yaml", ".dvcignore")

# Small and fast: synthetic data, the CPU profile, tiny benchmark.
TINY = [
    "data=synthetic",
    "profile=cpu",
    "train.subset=0",
    "export.parity_images=64",
    "export.reference_images=128",
    "calibrate.num_images=128",
    "bench.batch_sizes=[1,4]",
    "bench.iterations=5",
    "bench.warmup=1",
    "bench.max_seconds=0.2",
]


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _tensorrt() -> bool:
    return bool(os.environ.get("TRT_PYTHON")) or importlib.util.find_spec("tensorrt") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    cuda, trt = _cuda(), _tensorrt()
    for item in items:
        if "gpu" in item.keywords and not cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        if "tensorrt" in item.keywords and not (cuda and trt):
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU and TensorRT (or TRT_PYTHON)"))


def compose(overrides: list[str] | None = None) -> dict[str, Any]:
    """params.yaml content for ``overrides``, composed exactly as `dvc exp run -S` does."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(ROOT / "conf"), version_base=None):
        cfg = hydra_compose(config_name="config", overrides=list(overrides or []))
    OmegaConf.resolve(cfg)
    return OmegaConf.to_container(cfg)  # type: ignore[return-value]


def write_params(dest: Path, overrides: list[str] | None = None) -> Path:
    path = dest / "params.yaml"
    path.write_text(yaml.safe_dump(compose(overrides), sort_keys=False))
    return path


def run_stage(
    module: str, args: list[str], cwd: Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m stages.<module> args`` in ``cwd`` (a project copy), output captured."""
    path = os.pathsep.join(p for p in (str(cwd), os.environ.get("PYTHONPATH", "")) if p)
    full_env = dict(os.environ, PYTHONPATH=path, **(env or {}))
    proc = subprocess.run(
        [sys.executable, "-m", f"stages.{module}", *args], cwd=cwd, env=full_env, capture_output=True, text=True
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"stages.{module} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def copy_files(dest: Path, names: tuple[str, ...] = PROJECT_FILES) -> None:
    """Copy these project files and folders (no __pycache__) into ``dest``."""
    for name in names:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)


def copy_project(dest: Path) -> Path:
    """The project's code and config copied into ``dest``, with tiny params and an empty data/raw."""
    copy_files(dest)
    (dest / "data" / "raw").mkdir(parents=True)
    write_params(dest, TINY)
    return dest


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the project's code and config in a temporary folder, with tiny params."""
    return copy_project(tmp_path)


@pytest.fixture(scope="session")
def prepared_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project copy that has run prepare, a random-init checkpoint, export and calibrate
    (shared by the tests that need real artifacts; treat it as read-only)."""
    root = copy_project(tmp_path_factory.mktemp("tiny"))
    run_stage("prepare", ["--out", "data/prepared"], root)
    _random_checkpoint(root)
    m = "artifacts/resnet18_cifar"
    run_stage(
        "export",
        [
            "--checkpoint",
            f"{m}/checkpoint.pt",
            "--test",
            "data/prepared/test.npz",
            "--out-dir",
            f"{m}/onnx",
            "--reference",
            f"{m}/reference_logits.npy",
            "--report",
            "reports/export.json",
        ],
        root,
    )
    run_stage(
        "calibrate",
        [
            "--onnx",
            f"{m}/onnx/fp32.onnx",
            "--calib",
            "data/prepared/calib.npz",
            "--out",
            f"{m}/onnx/int8.onnx",
            "--ranges",
            f"{m}/calibration/ranges.json",
            "--report",
            "reports/calibrate.json",
        ],
        root,
    )
    return root


def _random_checkpoint(root: Path) -> None:
    import torch

    from stages.lib.core.config import load_params
    from stages.lib.model.networks import build_model, save_checkpoint

    p = load_params(root / "params.yaml")
    torch.manual_seed(0)
    model = build_model(p.model).eval()
    with torch.no_grad():  # make the random model's logits spread out, like a trained one
        model.fc.weight.mul_(20.0)
    save_checkpoint(
        root / "artifacts" / p.model.name / "checkpoint.pt",
        model,
        {
            "model": p.model.name,
            "arch": p.model.arch,
            "classes": [f"c{i}" for i in range(10)],
            "dataset_source": "synthetic",
            "synthetic": True,
            "epochs": 0,
            "seed": 0,
            "test_top1_fp32": 0.0,
            "torch": str(torch.__version__),
        },
    )
