"""The CPU profile end to end with your own model and images, in a temporary git + DVC repo:
MobileNetV3-Large on a CIFAR-10-layout archive (cifar-10-python.tar.gz's batches, few random
images: CI has no CIFAR-10 and no network), and on a generated image-folder dataset of odd
sizes (3 classes, 50x37 and 120x90, JPEG/PNG/WebP). `dvc exp show` lists both runs."""

from __future__ import annotations

import io
import json
import pickle
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.dvcrepo import Repo, make_tiny_repo, ran
from tests.test_folders import make_folder

pytestmark = pytest.mark.slow

MODEL = "mobilenet_v3_large"
SMALL = [
    "train.subset=0",
    "train.batch_size=16",
    "data.calib_size=8",
    "calibrate.num_images=8",
    "calibrate.heldout_images=8",  # training images that are not calibration images (the folder has 18)
    "calibrate.rank_images=4",
    "export.parity_images=16",
    "export.reference_images=30",
    "quality.max_top1_drop=100.0",
    "quality.min_fp32_agreement=0.0",
    "backends=[pytorch,onnxruntime,tensorrt]",
]
COMMON = ["-S", f"model={MODEL}", "-S", "model.image_size=32"]


def _cifar_layout_archive(dest: Path, per_batch: int = 16, n_test: int = 30) -> None:
    rng = np.random.default_rng(0)
    with tarfile.open(dest, "w:gz") as tar:
        for name, n in [*((f"data_batch_{i}", per_batch) for i in range(1, 6)), ("test_batch", n_test)]:
            blob = pickle.dumps(
                {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": rng.integers(0, 10, n).tolist()}
            )
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    r = make_tiny_repo(tmp_path_factory.mktemp("byo"), SMALL)
    _cifar_layout_archive(r.path / "data" / "raw" / "cifar-10-python.tar.gz")
    make_folder(r.path / "data" / "photos")
    r.git("add", "-A")
    r.git("commit", "-q", "-m", "datasets")
    return r


def _summary(repo: Repo) -> dict:
    return repo.json(f"reports/{MODEL}/metrics.json")


def test_mobilenet_on_the_cifar10_layout(repo: Repo) -> None:
    out = repo.dvc("exp", "run", "-n", "mobilenet-cifar10", *COMMON, "-S", "data=cifar10", timeout=3000)
    assert "train" in ran(out) and "report" in ran(out)
    meta = repo.json("data/prepared/meta.json")
    assert meta["source"].startswith("pickle:") and meta["train_images"] == 80 and len(meta["classes"]) == 10
    train = repo.json(f"reports/{MODEL}/train.json")
    assert train["epochs"] == 1 and train["train_images"] == 80
    export = repo.json(f"reports/{MODEL}/export.json")
    assert export["fp32_parity"]["images_beyond_tolerance"] == 0
    print("mobilenet-cifar10 metrics:", json.dumps(_summary(repo)))


def test_mobilenet_on_an_odd_sized_image_folder(repo: Repo) -> None:
    out = repo.dvc(
        "exp",
        "run",
        "-n",
        "mobilenet-folder",
        *COMMON,
        "-S",
        "data=folder",
        "-S",
        "data.raw_dir=data/photos",
        "-S",
        "model.num_classes=3",
        timeout=3000,
    )
    assert "prepare" in ran(out) and "report" in ran(out)
    meta = repo.json("data/prepared/meta.json")
    assert meta["classes"] == ["cat", "dog", "eel"] and meta["image_shape"] == [32, 32, 3]
    assert meta["augment"] == "random-resized-crop" and meta["train_images"] == 18
    labels = sorted((repo.path / f"artifacts/{MODEL}/model_repository").glob("*/labels.txt"))
    assert labels and all(p.read_text().split() == ["cat", "dog", "eel"] for p in labels)
    assert "- Classes (3): cat, dog, eel" in (repo.path / f"reports/{MODEL}/summary.md").read_text()
    print("mobilenet-folder metrics:", json.dumps(_summary(repo)))


def test_exp_show_lists_both(repo: Repo) -> None:
    md = repo.dvc("exp", "show", "--md")
    assert "mobilenet-cifar10" in md and "mobilenet-folder" in md


def test_predict_names_the_folder_classes_on_any_size(repo: Repo, tmp_path: Path) -> None:
    img = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "x.png")
    out = repo.run(
        sys.executable,
        "-m",
        "stages.predict",
        str(tmp_path / "x.png"),
        "--backend",
        "onnxruntime",
    )
    assert out.split("\t")[0] == str(tmp_path / "x.png")
    assert any(name in out for name in ("cat", "dog", "eel"))
