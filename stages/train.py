"""train: ResNet on the prepared split; GPU-side augmentation, bf16 autocast, fixed seed.

An interrupted run is not lost: with ``--resume-state`` the loop saves everything it needs
to go on (weights, optimizer, schedule, random generators, history) at most every minute,
and the next run with the same params and data continues from the last save.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .lib import data, sam
from .lib import resume as resume_state
from .lib.cli import run_main
from .lib.errors import BackendUnavailable, DatasetError
from .lib.io import read_json, write_csv, write_json
from .lib.models import build_model, save_checkpoint
from .lib.params import Params, TrainParams, load_params
from .lib.progress import progress
from .lib.resume import Resume
from .lib.torchdata import DeviceDataset, cutmix

log = logging.getLogger(__name__)


def pick_device(p: Params) -> torch.device:
    if p.device == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable(
            "params ask for device=cuda but no CUDA GPU is visible; run the CPU profile "
            "with `dvc exp run -S profile=cpu` (what `make repro` does on machines without a GPU)"
        )
    return torch.device(p.device)


def subset(split: data.Split, n: int, seed: int) -> data.Split:
    if n <= 0 or n >= len(split):
        return split
    idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed)).numpy()[:n]
    return data.Split(split.images[idx], split.labels[idx])


@dataclass
class Trained:
    model: nn.Module
    history: list[dict[str, Any]]
    images_per_s: float
    resumed_at: list[int] = field(default_factory=list)  # epochs completed before each resume
    earlier_wall_s: float = 0.0  # wall time of interrupted runs, up to their last save


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
class _Loop:
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


def _loop(p: Params, device: torch.device, fmt: torch.memory_format, steps_per_epoch: int) -> _Loop:
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
    return _Loop(model, decay + no_decay, opt, sched, gen, torch.Generator().manual_seed(p.seed + 1))


def _epoch(
    loop: _Loop, ds: DeviceDataset, t: TrainParams, fmt: torch.memory_format, amp: bool, desc: str
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


def train(
    p: Params, train_split: data.Split, test_split: data.Split, device: torch.device, resume: Resume | None = None
) -> Trained:
    """Train from scratch, or from ``resume``'s saved state when it matches these params and data."""
    torch.manual_seed(p.seed)
    t = p.train
    amp = t.amp and device.type == "cuda"
    fmt = torch.channels_last if t.channels_last else torch.contiguous_format
    train_ds = DeviceDataset(train_split, device, p.data.mean, p.data.std, p.model.image_size)
    test_ds = DeviceDataset(test_split, device, p.data.mean, p.data.std, p.model.image_size, pad=0)
    loop = _loop(p, device, fmt, max(1, len(train_ds) // t.batch_size))
    done = Trained(loop.model, [], 0.0)
    images_seen, train_time, first_epoch = 0, 0.0, 1
    state = resume_state.load(resume)
    if state is not None:
        loop.restore(state)
        done.history.extend(state["history"])
        images_seen, train_time = state["images_seen"], state["train_seconds"]
        first_epoch = state["epoch"] + 1
        done.resumed_at = [*state["resumed_at"], state["epoch"]]
        done.earlier_wall_s = state["wall_s"]
        log.info("resuming after epoch %d of %d from %s", state["epoch"], t.epochs, resume and resume.path)
    attempt_start = last_save = time.perf_counter()
    for epoch in range(first_epoch, t.epochs + 1):
        t0 = time.perf_counter()
        loss_sum, correct, n = _epoch(loop, train_ds, t, fmt, amp, f"epoch {epoch}/{t.epochs}")
        epoch_s = time.perf_counter() - t0
        train_time += epoch_s
        images_seen += n
        row = {
            "epoch": epoch,
            "train_loss": round(loss_sum / n, 5),
            "train_top1": round(100.0 * correct / n, 3),
            "test_top1": None,
            "lr": round(float(loop.sched.get_last_lr()[0]), 6),
            "epoch_seconds": round(epoch_s, 2),
        }
        if device.type == "cuda" or epoch == t.epochs:  # on a CPU, only the last epoch
            row["test_top1"] = round(evaluate_top1(loop.model, test_ds, 1000, amp), 3)
        done.history.append(row)
        log.info("epoch %d: %s", epoch, row)
        now = time.perf_counter()
        if resume is not None and (now - last_save >= resume.every_s or epoch == t.epochs):
            progress_so_far = {
                "epoch": epoch,
                "history": done.history,
                "images_seen": images_seen,
                "train_seconds": train_time,
                "resumed_at": done.resumed_at,
                "wall_s": done.earlier_wall_s + now - attempt_start,
            }
            resume_state.save(resume, {**loop.state(), **progress_so_far})
            last_save = now
    done.model, done.images_per_s = loop.model.eval(), images_seen / max(train_time, 1e-9)
    return done


def run(args: argparse.Namespace) -> None:
    t_start = time.perf_counter()
    p = load_params(args.params)
    device = pick_device(p)
    meta = read_json(args.data / "meta.json")
    if len(meta["classes"]) != p.model.num_classes:
        raise DatasetError(
            f"{args.data} has {len(meta['classes'])} classes but model "
            f"{p.model.name} has num_classes={p.model.num_classes}"
        )
    train_split = subset(data.load_split(args.data / "train.npz"), p.train.subset, p.seed)
    test_split = data.load_split(args.data / "test.npz")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    resume = None
    if args.resume_state is not None:
        key = resume_state.resume_key(p, [args.data / "train.npz", args.data / "test.npz"])
        resume = Resume(args.resume_state, key)
    done = train(p, train_split, test_split, device, resume)
    model = done.model
    # Final top-1 in fp32 on the full test split: the number the other backends compare to.
    amp_free = evaluate_top1(
        model, DeviceDataset(test_split, device, p.data.mean, p.data.std, p.model.image_size, pad=0), 1000, False
    )
    wall = time.perf_counter() - t_start + done.earlier_wall_s
    save_checkpoint(
        args.checkpoint,
        model.cpu(),
        {
            "model": p.model.name,
            "arch": p.model.arch,
            "classes": meta["classes"],
            "dataset_source": meta["source"],
            "synthetic": meta["synthetic"],
            "epochs": p.train.epochs,
            "seed": p.seed,
            "test_top1_fp32": amp_free,
            "torch": str(torch.__version__),
        },
    )
    write_csv(args.history, done.history)
    write_json(
        args.metrics,
        {
            "test_top1": round(amp_free, 3),
            "epochs": p.train.epochs,
            "train_images": len(train_split),
            "train_wall_s": round(wall, 1),  # with interrupted runs' time up to their last save
            "train_images_per_s": round(done.images_per_s, 1),
            "resumed": len(done.resumed_at),
            "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            "profile": p.profile,
            "synthetic_data": bool(meta["synthetic"]),
        },
    )
    if resume is not None:
        resume.path.unlink(missing_ok=True)  # the checkpoint now holds what it was for
    resumed = f" (resumed after epochs {done.resumed_at})" if done.resumed_at else ""
    log.info("trained %s: test top-1 %.2f%% in %.0f s%s", p.model.name, amp_free, wall, resumed)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--history", type=Path, required=True)
    ap.add_argument(
        "--resume-state",
        type=Path,
        help="where to save the training state while it runs; an interrupted run goes on from it",
    )
    args = ap.parse_args(argv)
    return run_main("train", lambda: run(args), gpu=True)


if __name__ == "__main__":
    sys.exit(main())
