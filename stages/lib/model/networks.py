"""Model definitions and checkpoints (PyTorch side only)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

import torch
import torchvision
from torch import nn

from ..core.errors import CheckpointError, PretrainedWeightsError
from ..core.params import ModelParams

log = logging.getLogger(__name__)

# Keyword arguments some constructors need to build a plain classifier: one output, no
# auxiliary heads (GoogLeNet and Inception return a tuple in training mode otherwise).
_CTOR_KWARGS: dict[str, dict[str, Any]] = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}


def build_model(p: ModelParams) -> nn.Module:
    """The torchvision classifier ``p.arch`` with ``p.num_classes`` outputs; with ``pretrained``
    its ImageNet weights and a fresh head; with ``cifar_stem`` (ResNets) a 3x3 stride-1 stem and
    no max-pool."""
    kwargs = _CTOR_KWARGS.get(p.arch, {})
    if p.pretrained:
        model = torchvision.models.get_model(p.arch, weights=None, **kwargs)
        _load_imagenet(model, p)
        replace_head(model, p.num_classes)
    else:
        model = torchvision.models.get_model(p.arch, weights=None, num_classes=p.num_classes, **kwargs)
    if p.cifar_stem:
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    return model


def replace_head(model: nn.Module, num_classes: int) -> None:
    """Replace the classifier's last layer, whatever the family, by a fresh one with
    ``num_classes`` outputs: the last ``nn.Linear`` in module order (SqueezeNet, which has
    none, ends in a 1x1 ``nn.Conv2d``)."""
    layers: list[tuple[str, nn.Module]] = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not layers:
        layers = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not layers:
        raise CheckpointError(f"{type(model).__name__} has no Linear or Conv2d layer to serve as its head")
    name, old = layers[-1]
    if isinstance(old, nn.Linear):
        new: nn.Module = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    else:
        assert isinstance(old, nn.Conv2d)
        size, stride = cast("tuple[int, int]", old.kernel_size), cast("tuple[int, int]", old.stride)
        new = nn.Conv2d(old.in_channels, num_classes, kernel_size=size, stride=stride)
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)


def imagenet_state_dict(p: ModelParams) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights for ``p.arch``: the file ``model.weights`` when set, else
    torch's hub cache (``$TORCH_HOME/hub/checkpoints``), else a download into that cache."""
    if p.weights:
        return _weights_file(Path(p.weights))
    weights = torchvision.models.get_model_weights(p.arch).DEFAULT  # type: ignore[attr-defined]
    try:
        return weights.get_state_dict(progress=False)  # the hub cache first, then the network
    except Exception as exc:  # network errors surface as many types
        raise PretrainedWeightsError(
            f"model.pretrained=true but the ImageNet weights for {p.arch} could not be had "
            f"({type(exc).__name__}: {exc}); put {weights.url.rsplit('/', 1)[-1]} in "
            f"{torch.hub.get_dir()}/checkpoints/, set model.weights=path/to/file.pth, or set model.pretrained=false"
        ) from exc


def _weights_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise PretrainedWeightsError(f"model.weights: {path} does not exist; give the path of a .pth state_dict")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types on corrupt files
        raise PretrainedWeightsError(
            f"model.weights: {path} is not a readable state_dict ({type(exc).__name__})"
        ) from exc
    if isinstance(blob, dict) and isinstance(blob.get("state_dict"), dict):
        blob = blob["state_dict"]
    if not isinstance(blob, dict) or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise PretrainedWeightsError(f"model.weights: {path} holds no state_dict (a mapping of names to tensors)")
    return blob


def _load_imagenet(model: nn.Module, p: ModelParams) -> None:
    """ImageNet weights for the whole network as torchvision built it (1000 classes); the
    caller then replaces the head. Auxiliary heads' weights are ignored."""
    state = {k: v for k, v in imagenet_state_dict(p).items() if not k.startswith(("aux1.", "aux2.", "AuxLogits."))}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        where = p.weights or f"torchvision's {p.arch} weights"
        raise PretrainedWeightsError(f"{where}: do not fit {p.arch} ({state_dict_problem(exc)})") from exc
    log.info("loaded ImageNet weights for %s from %s", p.arch, p.weights or "torchvision")


def state_dict_problem(exc: RuntimeError) -> str:
    """The first specific line of a load_state_dict error, shortened to fit one line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    line = lines[1] if len(lines) > 1 else (lines[0] if lines else type(exc).__name__)
    return line if len(line) <= 160 else line[:157] + "..."


def save_checkpoint(path: Path, model: nn.Module, meta: dict[str, Any]) -> None:
    from ..core.io import atomic_path

    state = model.state_dict()
    with atomic_path(path, need_bytes=sum(t.numel() * t.element_size() for t in state.values())) as tmp:
        torch.save({"state_dict": state, "meta": meta}, tmp)


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
