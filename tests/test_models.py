"""stages/lib/model/networks.py: architectures, MAC counts, checkpoints, pretrained weights."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from stages.lib.core.errors import CheckpointError, PretrainedWeightsError
from stages.lib.core.params import ModelParams
from stages.lib.model.networks import build_model, load_checkpoint, save_checkpoint

R18 = ModelParams(
    name="resnet18_cifar", arch="resnet18", cifar_stem=True, image_size=32, num_classes=10, pretrained=False
)
R50 = ModelParams(name="resnet50", arch="resnet50", cifar_stem=False, image_size=224, num_classes=10, pretrained=False)


@pytest.fixture(scope="module")
def resnet50() -> nn.Module:
    torch.manual_seed(0)
    return build_model(R50).eval()


def _meta(name: str = "resnet18_cifar") -> dict:
    return {"model": name, "arch": "resnet18", "classes": [f"c{i}" for i in range(10)], "synthetic": True}


# -- architectures ---------------------------------------------------------------------------


def test_resnet18_cifar_stem() -> None:
    model = build_model(R18).eval()
    conv1 = model.conv1
    assert isinstance(conv1, nn.Conv2d)
    assert conv1.kernel_size == (3, 3) and conv1.stride == (1, 1) and conv1.padding == (1, 1)
    assert conv1.in_channels == 3 and conv1.out_channels == 64 and conv1.bias is None
    assert isinstance(model.maxpool, nn.Identity)
    assert model.fc.out_features == 10
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


def test_resnet18_without_cifar_stem_keeps_imagenet_stem() -> None:
    model = build_model(dataclasses.replace(R18, cifar_stem=False))
    assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)
    assert isinstance(model.maxpool, nn.MaxPool2d)


def test_resnet50_at_224(resnet50: nn.Module) -> None:
    assert resnet50.conv1.kernel_size == (7, 7)
    assert resnet50.fc.in_features == 2048 and resnet50.fc.out_features == 10
    with torch.no_grad():
        out = resnet50(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 10)


# -- checkpoints -----------------------------------------------------------------------------


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = build_model(R18).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics too
        model.bn1.running_mean.uniform_(-1, 1)
        model.bn1.running_var.uniform_(0.5, 2)
    path = tmp_path / "ckpt" / "checkpoint.pt"
    save_checkpoint(path, model, _meta())
    loaded, meta = load_checkpoint(path, R18)
    assert meta == _meta()
    assert not loaded.training
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkpoint.pt"]


def test_load_checkpoint_missing(tmp_path: Path) -> None:
    path = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, R18)
    assert str(path) in str(err.value) and "dvc repro train" in str(err.value)


@pytest.mark.parametrize("content", [b"this is no checkpoint", b""])
def test_load_checkpoint_corrupt(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, R18)
    assert str(path) in str(err.value)
    assert "corrupt" in str(err.value) and "dvc repro -f train" in str(err.value)


def test_load_checkpoint_without_meta(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    torch.save(build_model(R18).state_dict(), path)  # a bare state dict, not ours
    with pytest.raises(CheckpointError, match="not a checkpoint of this pipeline"):
        load_checkpoint(path, R18)


def test_load_checkpoint_for_another_model(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, build_model(R18), _meta("resnet50"))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, R18)
    msg = str(err.value)
    assert str(path) in msg and "'resnet50'" in msg and "'resnet18_cifar'" in msg


def test_load_checkpoint_weights_that_do_not_fit(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    # right name, wrong architecture: an ImageNet stem (7x7 conv1) under the CIFAR model's name
    save_checkpoint(path, build_model(dataclasses.replace(R18, cifar_stem=False)), _meta())
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, R18)
    assert str(path) in str(err.value) and "weights do not fit resnet18_cifar" in str(err.value)


def test_load_checkpoint_ignores_pretrained_flag(tmp_path: Path, monkeypatch) -> None:
    def no_download(self, *a, **k):  # noqa: ANN001
        raise AssertionError("load_checkpoint must not fetch pretrained weights")

    monkeypatch.setattr(torchvision.models.ResNet18_Weights, "get_state_dict", no_download)
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, build_model(R18), _meta())
    model, _ = load_checkpoint(path, dataclasses.replace(R18, pretrained=True))
    assert isinstance(model.maxpool, nn.Identity)


# -- pretrained weights --------------------------------------------------------------------


def test_pretrained_unavailable_raises_with_fix(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))

    def offline(self, *a, **k):  # noqa: ANN001
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.models.ResNet18_Weights, "get_state_dict", offline)
    with pytest.raises(PretrainedWeightsError) as err:
        build_model(dataclasses.replace(R18, pretrained=True))
    msg = str(err.value)
    assert "OSError: network is unreachable" in msg
    assert "resnet18-f37072fd.pth" in msg
    assert f"{tmp_path / 'torch-home' / 'hub'}/checkpoints/" in msg
    assert "model.pretrained=false" in msg


def test_pretrained_loads_body_keeps_fresh_head_and_stem(monkeypatch) -> None:
    torch.manual_seed(123)
    imagenet = torchvision.models.resnet18(weights=None)  # stands in for the downloaded weights
    state = imagenet.state_dict()
    monkeypatch.setattr(torchvision.models.ResNet18_Weights, "get_state_dict", lambda self, *a, **k: state)
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(R18, pretrained=True))
    torch.testing.assert_close(model.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])
    torch.testing.assert_close(model.bn1.running_var, state["bn1.running_var"])
    assert model.fc.weight.shape == (10, 512)  # fresh 10-class head
    assert model.conv1.weight.shape == (64, 3, 3, 3)  # fresh CIFAR stem
