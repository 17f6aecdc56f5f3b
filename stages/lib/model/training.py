"""The training loop's pieces: a seeded model/optimizer/schedule, one epoch of augmented
SGD (CutMix, SAM when asked), and test top-1 on the device."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..core.params import Params, TrainParams
from ..core.progress import progress
from ..data.torchdata import DeviceDataset, cutmix
from . import sam
from .networks import build_model


def _batch_loss(
    model: nn.Module,
    loss_fn: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    pasted: tuple[torch.Tensor, float] | None,
    amp: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and loss; ``pasted`` (CutMix's pasted labels and the original's area share)
    mixes the loss of both label sets."""
    with torch.autocast(x.device.type, torch.bfloat16, enabled=amp):
        logits = model(x)
        loss = loss_fn(logits, y)
        if pasted is not None:
            y_pasted, kept = pasted
            loss = kept * loss + (1.0 - kept) * loss_fn(logits, y_pasted)
    return logits, loss


def eval_batch(device: torch.device, size: int) -> int:
    """Test images per forward pass: 1000 on a GPU; on the CPU as many as 1000 at 32x32 hold
    (20 at 224x224), so host memory stays bounded at large inputs."""
    return 1000 if device.type == "cuda" else max(1, 1000 * 32 * 32 // (size * size))


@torch.no_grad()
def evaluate_top1(model: nn.Module, ds: DeviceDataset, batch: int, amp: bool) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(ds), batch):
        x = ds.plain(start, start + batch).contiguous(memory_format=torch.channels_last)
        with torch.autocast(ds.device.type, torch.bfloat16, enabled=amp):
            pred = model(x).argmax(1)
        correct += int((pred == ds.labels[start : start + batch]).sum())
    return 100.0 * correct / len(ds)


@dataclass
class Loop:
    """What a training run carries from step to step, and saves for a resume."""

    model: nn.Module
    params: list[nn.Parameter]
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    gen: torch.Generator  # crops, flips, Cutout, shuffling, CutMix's partners: on the device
    host_gen: torch.Generator  # CutMix decisions and boxes, host side

    def state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "generator": self.gen.get_state(),
            "host_generator": self.host_gen.get_state(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.gen.set_state(state["generator"])
        self.host_gen.set_state(state["host_generator"])


def new_loop(p: Params, device: torch.device, fmt: torch.memory_format, steps_per_epoch: int) -> Loop:
    """Model, SGD (no weight decay on biases and batch norm), OneCycle and seeded generators."""
    t = p.train
    model = build_model(p.model).to(device).to(memory_format=fmt)
    decay = [prm for prm in model.parameters() if prm.ndim > 1]
    no_decay = [prm for prm in model.parameters() if prm.ndim <= 1]
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=t.lr,
        momentum=t.momentum,
        nesterov=t.nesterov,
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=t.lr,
        total_steps=max(1, t.epochs * steps_per_epoch),
        pct_start=t.warmup_fraction,
        div_factor=10.0,
        final_div_factor=100.0,
    )
    gen = torch.Generator(device=device).manual_seed(p.seed)
    return Loop(model, decay + no_decay, opt, sched, gen, torch.Generator().manual_seed(p.seed + 1))


def epoch(
    loop: Loop, ds: DeviceDataset, t: TrainParams, fmt: torch.memory_format, amp: bool, desc: str
) -> tuple[float, int, int]:
    """One pass over ``ds``: returns the summed loss, correct predictions and images seen."""
    loop.model.train()
    loss_fn = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)
    steps = max(1, len(ds) // t.batch_size)
    perm = torch.randperm(len(ds), device=ds.device, generator=loop.gen)
    loss_sum = torch.zeros((), device=ds.device)
    correct = torch.zeros((), device=ds.device, dtype=torch.long)
    for i in progress(range(steps), total=steps, desc=desc):
        idx = perm[i * t.batch_size : (i + 1) * t.batch_size]
        x = ds.augmented(idx, loop.gen, t.cutout)
        y = ds.labels[idx]
        pasted = None
        if t.cutmix > 0 and float(torch.rand(1, generator=loop.host_gen)) < t.cutmix:
            x, y_pasted, kept = cutmix(x, y, loop.gen, loop.host_gen)
            pasted = (y_pasted, kept)
        x = x.contiguous(memory_format=fmt)
        logits, loss = _batch_loss(loop.model, loss_fn, x, y, pasted, amp)
        loop.opt.zero_grad(set_to_none=True)
        loss.backward()
        if t.sam_rho > 0:  # the step's gradients come from the worst point within sam_rho
            offsets = sam.ascend(loop.params, t.sam_rho)
            loop.opt.zero_grad(set_to_none=True)
            with sam.frozen_batch_norm_stats(loop.model):
                _batch_loss(loop.model, loss_fn, x, y, pasted, amp)[1].backward()
            sam.descend(loop.params, offsets)
        loop.opt.step()
        loop.sched.step()
        loss_sum += loss.detach() * len(idx)
        correct += (logits.argmax(1) == y).sum()
    if ds.device.type == "cuda":
        torch.cuda.synchronize()
    return float(loss_sum), int(correct), steps * t.batch_size
