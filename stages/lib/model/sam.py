"""Sharpness-aware minimisation (Foret et al., 2021) as two helpers around a plain optimizer.

A SAM step: gradients at w, move to w + rho * g / ||g|| (the nearby worst case), take the
gradients there, come back to w, and let the optimizer step with those gradients. Weight
decay and momentum stay the base optimizer's, applied at w. It costs a second forward and
backward pass per step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn


@torch.no_grad()
def ascend(params: Sequence[nn.Parameter], rho: float) -> list[torch.Tensor | None]:
    """Move ``params`` by ``rho`` along their gradient, normalised over all of them.

    Returns the offsets that :func:`descend` takes back; a parameter without a gradient
    does not move.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return [None] * len(params)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
    scale = rho / (norm + 1e-12)
    offsets: list[torch.Tensor | None] = []
    for p in params:
        if p.grad is None:
            offsets.append(None)
            continue
        e = (p.grad * scale).to(p.dtype)
        p.add_(e)
        offsets.append(e)
    return offsets


@torch.no_grad()
def descend(params: Sequence[nn.Parameter], offsets: Sequence[torch.Tensor | None]) -> None:
    """Undo :func:`ascend`."""
    for p, e in zip(params, offsets, strict=True):
        if e is not None:
            p.sub_(e)


@contextlib.contextmanager
def frozen_batch_norm_stats(model: nn.Module) -> Iterator[None]:
    """Batch-norm running statistics stay as they are (the second pass must not count twice)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch
    try:
        yield
    finally:
        for m, momentum in zip(bns, saved, strict=True):
            m.momentum = momentum
