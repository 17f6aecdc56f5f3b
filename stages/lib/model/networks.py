"""Model definitions and checkpoints (PyTorch side only)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from ..core.errors import CheckpointError, PretrainedWeightsError
from ..core.params import ModelParams

log = logging.getLogger(__name__)

_WEIGHTS = {
    "resnet18": "ResNet18_Weights",
    "resnet50": "ResNet50_Weights",
}


def build_model(p: ModelParams) -> nn.Module:
    """torchvision ResNet; with ``cifar_stem`` a 3x3 stride-1 stem and no max-pool."""
    ctor = getattr(torchvision.models, p.arch)
    model: nn.Module = ctor(weights=None, num_classes=p.num_classes)
    if p.pretrained:
        _load_imagenet(model, p)
    if p.cifar_stem:
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    return model


def _load_imagenet(model: nn.Module, p: ModelParams) -> None:
    """ImageNet weights for the body; the head (and a CIFAR stem) stay freshly initialised."""
    weights = getattr(torchvision.models, _WEIGHTS[p.arch]).IMAGENET1K_V1
    try:
        state = weights.get_state_dict(progress=False)
    except Exception as exc:  # network errors surface as many types
        raise PretrainedWeightsError(
            f"model.pretrained=true but the ImageNet weights for {p.arch} could not be had "
            f"({type(exc).__name__}: {exc}); put {weights.url.rsplit('/', 1)[-1]} in "
            f"{torch.hub.get_dir()}/checkpoints/ or set model.pretrained=false"
        ) from exc
    skip = {"fc.weight", "fc.bias"}
    if p.cifar_stem:
        skip.add("conv1.weight")
    missing, unexpected = model.load_state_dict({k: v for k, v in state.items() if k not in skip}, strict=False)
    log.info("loaded ImageNet weights for %s (fresh: %s)", p.arch, ", ".join(sorted(missing)))


def save_checkpoint(path: Path, model: nn.Module, meta: dict[str, Any]) -> None:
    from ..core.io import atomic_path

    with atomic_path(path) as tmp:
        torch.save({"state_dict": model.state_dict(), "meta": meta}, tmp)


def load_checkpoint(path: str | Path, p: ModelParams) -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint for the configured model; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: run `dvc repro train`")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        state, meta = blob["state_dict"], blob["meta"]
    except Exception as exc:  # torch.load raises many types on corrupt files
        raise CheckpointError(
            f"{path}: corrupt or not a checkpoint of this pipeline ({type(exc).__name__}); run `dvc repro -f train`"
        ) from exc
    if meta.get("model") != p.name:
        raise CheckpointError(f"{path} holds model {meta.get('model')!r}, params ask for {p.name!r}: run `dvc repro`")
    model = build_model(_without_pretrained(p))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit {p.name} ({str(exc).splitlines()[0]})") from exc
    return model.eval(), meta


def _without_pretrained(p: ModelParams) -> ModelParams:
    import dataclasses

    return dataclasses.replace(p, pretrained=False)


class RawPixels(nn.Module):
    """``model`` taking uint8 NHWC images (raw pixels at the model's size) and doing the input
    preprocessing itself, with the arithmetic of :func:`stages.lib.data.inputs.preprocess`:
    Cast to float first (TensorRT accepts a uint8 input only into a Cast), x/255, -mean,
    /std per channel, then NHWC -> NCHW."""

    def __init__(self, model: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.model = model
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32) * (1 / 255)
        x = (x - self.mean) / self.std
        return self.model(x.permute(0, 3, 1, 2))
