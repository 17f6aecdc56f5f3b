"""Any torchvision classifier by name: the registry, the generic head, the close-name error,
and build -> ONNX export -> onnx.checker -> ONNX Runtime parity on CPU for each family."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from stages.export import export_fp32
from stages.lib.core.archs import CLASSIFIERS, closest
from stages.lib.core.params import ModelParams
from stages.lib.model.networks import build_model, replace_head

BASE = ModelParams(name="m", arch="resnet18", cifar_stem=False, image_size=64, num_classes=7, pretrained=False)

# One architecture per family the pipeline promises (small members where a family has them).
FAMILIES = [
    "resnet18",
    "resnext50_32x4d",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "efficientnet_v2_s",
    "regnet_x_400mf",
    "regnet_y_400mf",
    "convnext_tiny",
    "densenet121",
    "shufflenet_v2_x0_5",
    "mnasnet0_5",
    "squeezenet1_1",
    "googlenet",
]


def test_the_list_is_torchvisions_classification_registry() -> None:
    assert tuple(torchvision.models.list_models(module=torchvision.models)) == CLASSIFIERS


def test_closest_names_come_first() -> None:
    assert set(closest("mobilenet_v3")[:2]) == {"mobilenet_v3_large", "mobilenet_v3_small"}
    assert closest("efficientnet_b9")[0].startswith("efficientnet_b")
    assert "resnet18" in closest("resnet19")


@pytest.mark.parametrize("arch", FAMILIES)
def test_family_builds_exports_and_matches_onnxruntime(arch: str, tmp_path: Path) -> None:
    import onnxruntime as ort

    torch.manual_seed(0)
    model = build_model(dataclasses.replace(BASE, arch=arch)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x).numpy()
    assert ref.shape == (2, 7)
    dest = tmp_path / "fp32.onnx"
    export_fp32(model, 64, 17, "torchscript", dest)  # onnx.checker runs inside
    sess = ort.InferenceSession(str(dest), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": np.concatenate([x.numpy()] * 2)})[0]  # dynamic batch of 4
    assert got.shape == (4, 7)
    np.testing.assert_allclose(got[:2], ref, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize(
    ("arch", "head"),
    [
        ("resnet18", "fc"),
        ("mobilenet_v3_large", "classifier.3"),
        ("convnext_tiny", "classifier.2"),
        ("squeezenet1_1", "classifier.1"),
    ],
)
def test_head_is_the_last_linear_whatever_the_family(arch: str, head: str) -> None:
    model = torchvision.models.get_model(arch, weights=None)
    body = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith(head + ".")}
    replace_head(model, 3)
    layer = model.get_submodule(head)
    assert (layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels) == 3
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in body.items())
    assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 3)
