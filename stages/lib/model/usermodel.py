"""The user's own trained model: a PyTorch checkpoint (``model.checkpoint``: a state_dict, a
dict holding one under "state_dict"/"model", or a whole saved ``nn.Module``) of the configured
torchvision architecture. It is checked (it loads into ``model.arch`` with ``num_classes``
outputs and returns finite logits) before anything is written."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.errors import CheckpointError
from ..core.params import ModelParams
from .networks import build_model, state_dict_problem


def load_user_checkpoint(path: str | Path, p: ModelParams) -> nn.Module:
    """The model in ``path`` as ``p.arch`` (eval mode); a CheckpointError naming the file and
    what is wrong otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model.checkpoint: {path} does not exist; give the path of your .pt/.pth file")
    state = _state_dict(_read(path), path)
    model = build_model(dataclasses.replace(p, pretrained=False, checkpoint=None))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(
            f"model.checkpoint: {path} does not fit {p.arch} with {p.num_classes} classes ({state_dict_problem(exc)})"
        ) from exc
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, p.image_size, p.image_size))
    if out.shape != (1, p.num_classes) or not torch.isfinite(out).all():
        raise CheckpointError(f"model.checkpoint: {path} gives logits of shape {tuple(out.shape)} or non-finite ones")
    return model


def _read(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a whole pickled module needs the full unpickler (the user's own file)
        pass
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch.load raises many types on corrupt files
        raise CheckpointError(
            f"model.checkpoint: {path} is not a readable PyTorch file ({type(exc).__name__})"
        ) from exc


def _state_dict(blob: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(blob, nn.Module):
        return blob.state_dict()
    if isinstance(blob, dict):
        for key in ("state_dict", "model"):
            if isinstance(blob.get(key), dict):
                blob = blob[key]
                break
        if blob and all(isinstance(v, torch.Tensor) for v in blob.values()):
            return {k.removeprefix("module."): v for k, v in blob.items()}
    raise CheckpointError(
        f"model.checkpoint: {path} holds neither a state_dict nor a saved nn.Module ({type(blob).__name__})"
    )
