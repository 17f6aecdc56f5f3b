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

import numpy as np
import torch
from torch import nn

from .lib.core import memory
from .lib.core.cli import run_main
from .lib.core.config import load_params
from .lib.core.errors import BackendUnavailable, DatasetError
from .lib.core.io import read_json, write_csv, write_json
from .lib.core.params import Params
from .lib.data import prepared as data
from .lib.data.torchdata import DeviceDataset
from .lib.model import resume as resume_state
from .lib.model import training
from .lib.model.networks import save_checkpoint
from .lib.model.resume import Resume
from .lib.model.usermodel import load_user_checkpoint
from .lib.model.useronnx import adopt_onnx, onnx_top1

log = logging.getLogger(__name__)


def pick_device(p: Params) -> torch.device:
    if p.device == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable(
            "params ask for device=cuda but no CUDA GPU is visible; run the CPU profile "
            "with `dvc exp run -S profile=cpu` (what `make repro` does on machines without a GPU)"
        )
    return torch.device(p.device)


def subset_rows(n_images: int, n: int, seed: int) -> np.ndarray | None:
    """The rows of a random ``n``-image training subset (None: all ``n_images``)."""
    if n <= 0 or n >= n_images:
        return None
    return torch.randperm(n_images, generator=torch.Generator().manual_seed(seed)).numpy()[:n]


@dataclass
class Trained:
    model: nn.Module
    history: list[dict[str, Any]]
    images_per_s: float
    resumed_at: list[int] = field(default_factory=list)  # epochs completed before each resume
    earlier_wall_s: float = 0.0  # wall time of interrupted runs, up to their last save


def train(
    p: Params,
    train_split: data.Split,
    test_split: data.Split,
    device: torch.device,
    resume: Resume | None = None,
    rows: np.ndarray | None = None,
    augment: str = "pad-crop",
) -> Trained:
    """Train from scratch, or from ``resume``'s saved state when it matches these params and data."""
    torch.manual_seed(p.seed)
    t = p.train
    amp = t.amp and device.type == "cuda"
    fmt = torch.channels_last if t.channels_last else torch.contiguous_format
    train_ds = DeviceDataset(
        train_split, device, p.data.mean, p.data.std, p.model.image_size, rows=rows, augment=augment
    )
    test_ds = DeviceDataset(test_split, device, p.data.mean, p.data.std, p.model.image_size, pad=0)
    loop = training.new_loop(p, device, fmt, max(1, len(train_ds) // t.batch_size))
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
        loss_sum, correct, n = training.epoch(loop, train_ds, t, fmt, amp, f"epoch {epoch}/{t.epochs}")
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
            row["test_top1"] = round(
                training.evaluate_top1(loop.model, test_ds, training.eval_batch(device, p.model.image_size), amp), 3
            )
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


def fits_in_memory(p: Params, device: str) -> None:
    """Refuse a train.batch_size whose activations cannot fit (OutOfMemory, one line)."""
    size = p.model.image_size
    model = (p.model.arch, p.model.cifar_stem, size)
    need = memory.case_need(p.train.batch_size, 3 * size * size * 4, 4 * p.model.num_classes, model, training=True)
    memory.check_fits(f"train batch {p.train.batch_size}", need, device, "lower train.batch_size")


def run(args: argparse.Namespace) -> None:
    t_start = time.perf_counter()
    p = load_params(args.params)
    device = pick_device(p)
    fits_in_memory(p, device.type)
    meta = read_json(args.data / "meta.json")
    if len(meta["classes"]) != p.model.num_classes:
        raise DatasetError(
            f"{args.data} has {len(meta['classes'])} classes but model "
            f"{p.model.name} has num_classes={p.model.num_classes}"
        )
    train_split = data.load_split(args.data / "train.npz")
    rows = subset_rows(len(train_split), p.train.subset, p.seed)
    test_split = data.load_split(args.data / "test.npz")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    resume = None
    if args.resume_state is not None:
        key = resume_state.resume_key(p, [args.data / "train.npz", args.data / "test.npz"])
        resume = Resume(args.resume_state, key)
    if p.model.onnx:  # the user's ONNX model: export takes it; nothing to train or copy here
        _record_onnx(args, p, test_split, meta, time.perf_counter() - t_start)
        return
    if p.model.checkpoint:  # the user's trained model: checked, then copied instead of training
        done = Trained(load_user_checkpoint(p.model.checkpoint, p.model).to(device), [], 0.0)
        log.info("model.checkpoint: %s fits %s; copied instead of training", p.model.checkpoint, p.model.arch)
    else:
        done = train(p, train_split, test_split, device, resume, rows, meta.get("augment", "pad-crop"))
    model = done.model
    # Final top-1 in fp32 on the full test split: the number the other backends compare to.
    amp_free = training.evaluate_top1(
        model,
        DeviceDataset(test_split, device, p.data.mean, p.data.std, p.model.image_size, pad=0),
        training.eval_batch(device, p.model.image_size),
        False,
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
            "epochs": 0 if p.model.checkpoint else p.train.epochs,
            "from_checkpoint": p.model.checkpoint,
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
            "epochs": 0 if p.model.checkpoint else p.train.epochs,
            "train_images": len(train_split) if rows is None else len(rows),
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


def _record_onnx(args: argparse.Namespace, p: Params, test_split: data.Split, meta: dict, wall: float) -> None:
    """model.onnx: an empty checkpoint that names the ONNX file (the PyTorch backends are
    off, see params_check), and the ONNX model's top-1 as the training top-1."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="user-onnx.") as tmp:  # checked as export will check it
        adopted = Path(tmp) / "fp32.onnx"
        adopt_onnx(p.model.onnx or "", adopted, p.model.image_size, p.model.num_classes)
        top1 = onnx_top1(adopted, test_split, p.data.mean, p.data.std, p.model.image_size)
    info = {"model": p.model.name, "arch": p.model.arch, "classes": meta["classes"], "onnx": p.model.onnx}
    save_checkpoint(args.checkpoint, nn.Module(), {**info, "synthetic": meta["synthetic"], "test_top1_fp32": top1})
    write_csv(args.history, [])
    write_json(
        args.metrics,
        {
            "test_top1": round(top1, 3),
            "epochs": 0,
            "train_images": 0,
            "train_wall_s": round(wall, 1),
            "train_images_per_s": 0.0,
            "resumed": 0,
            "device": "cpu",
            "profile": p.profile,
            "synthetic_data": bool(meta["synthetic"]),
        },
    )
    log.info(
        "model.onnx: %s has test top-1 %.2f%% (ONNX Runtime); export takes it as the FP32 model", p.model.onnx, top1
    )


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
