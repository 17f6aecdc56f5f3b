"""GPU-resident training data with on-device augmentation (torch twin of inputs.preprocess)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .prepared import Split
from .store import release


class DeviceDataset:
    """A split whose batches are augmented and normalised on the device. On a GPU the split is
    held there as uint8 NCHW; on the CPU batches are gathered from the (memory-mapped) host
    array as they are drawn, so host memory stays bounded. ``rows`` picks a subset (in that
    order). ``augment``: CIFAR-style padded random crops, or random-resized crops
    (scale 0.08-1, aspect 3/4-4/3, torchvision's recipe) of images stored at the model size."""

    def __init__(
        self,
        split: Split,
        device: torch.device,
        mean: list[float],
        std: list[float],
        size: int,
        pad: int = 4,
        rows: np.ndarray | None = None,
        augment: str = "pad-crop",
    ) -> None:
        self.rows = rows
        if device.type == "cpu":
            self.host: np.ndarray | None = split.images
            self.images: torch.Tensor | None = None
        else:
            chosen = split.images if rows is None else split.images[rows]
            self.host, self.images = (
                None,
                torch.from_numpy(np.asarray(chosen)).permute(0, 3, 1, 2).contiguous().to(device),
            )
        labels = split.labels if rows is None else split.labels[rows]
        self.labels = torch.from_numpy(np.asarray(labels)).to(device)
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1)
        self.size, self.pad, self.device, self.augment = size, pad, device, augment
        self.hw = int(split.images.shape[2])

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, idx: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW images at positions ``idx`` of this dataset, on the device."""
        if self.images is not None:
            return self.images[idx]
        assert self.host is not None
        pos = idx.cpu().numpy()
        rows = pos if self.rows is None else self.rows[pos]
        order = np.argsort(rows, kind="stable")  # read the mapped file forwards
        batch = np.empty((len(rows), *self.host.shape[1:]), np.uint8)
        batch[order] = self.host[rows[order]]
        release(self.host)
        return torch.from_numpy(batch).permute(0, 3, 1, 2)

    def normalise(self, x_u8: torch.Tensor) -> torch.Tensor:
        """Same arithmetic as inputs.preprocess: /255, -mean, /std, nearest upsampling."""
        x = x_u8.float() * (1 / 255)
        x = (x - self.mean) / self.std
        factor = self.size // self.hw
        if factor > 1:
            x = x.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)
        return x

    def augmented(self, idx: torch.Tensor, generator: torch.Generator, cutout: int = 0) -> torch.Tensor:
        """Random crop (zero padding, or random-resized), horizontal flip and optional Cutout,
        on the device.

        Cutout (DeVries & Taylor, 2017) zeroes a ``cutout`` x ``cutout`` square at a random
        centre (clipped at the border) of the normalised image, i.e. sets it to the mean.
        """
        if self.augment == "random-resized-crop":
            return self._resized_crops(idx, generator)
        b, hw = idx.shape[0], self.hw
        off = torch.randint(0, 2 * self.pad + 1, (2, b), device=self.device, generator=generator)
        ar = torch.arange(hw, device=self.device)
        rows = (off[0][:, None] + ar)[:, None, :, None]
        cols = (off[1][:, None] + ar)[:, None, None, :]
        chan = torch.arange(3, device=self.device)[None, :, None, None]
        padded = F.pad(self.take(idx), (self.pad,) * 4) if self.pad else self.take(idx)
        crops = padded[torch.arange(b, device=self.device)[:, None, None, None], chan, rows, cols]
        flip = torch.rand(b, device=self.device, generator=generator) < 0.5
        crops = torch.where(flip[:, None, None, None], crops.flip(3), crops)
        x = self.normalise(crops)
        if cutout:
            centre = torch.randint(0, hw, (2, b), device=self.device, generator=generator)
            half = cutout // 2
            inside_r = (ar[None, :] >= centre[0][:, None] - half) & (ar[None, :] < centre[0][:, None] - half + cutout)
            inside_c = (ar[None, :] >= centre[1][:, None] - half) & (ar[None, :] < centre[1][:, None] - half + cutout)
            mask = inside_r[:, :, None] & inside_c[:, None, :]  # (B, H, W) at image resolution
            factor = self.size // hw
            if factor > 1:
                mask = mask.repeat_interleave(factor, 1).repeat_interleave(factor, 2)
            x = x.masked_fill(mask[:, None], 0.0)
        return x

    def _resized_crops(self, idx: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Random-resized crops of the batch, resized (bilinear, roi_align) to the model size,
        and flipped half the time."""
        from torchvision.ops import roi_align

        b, hw, dev = idx.shape[0], float(self.hw), self.device
        u = torch.rand(4, b, device=dev, generator=generator)
        area = hw * hw * (0.08 + 0.92 * u[0])
        ratio = torch.exp(math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * u[1])
        w = torch.sqrt(area * ratio).clamp(1.0, hw)
        h = torch.sqrt(area / ratio).clamp(1.0, hw)
        x0, y0 = (hw - w) * u[2], (hw - h) * u[3]
        boxes = torch.stack([torch.arange(b, device=dev, dtype=torch.float32), x0, y0, x0 + w, y0 + h], 1)
        x = self.normalise_only(self.take(idx))
        crops = roi_align(x, boxes, output_size=self.size, spatial_scale=1.0, sampling_ratio=2, aligned=True)
        flip = torch.rand(b, device=dev, generator=generator) < 0.5
        return torch.where(flip[:, None, None, None], crops.flip(3), crops)

    def normalise_only(self, x_u8: torch.Tensor) -> torch.Tensor:
        """/255, -mean, /std at the stored size."""
        return (x_u8.float() * (1 / 255) - self.mean) / self.std

    def plain(self, start: int, stop: int) -> torch.Tensor:
        idx = torch.arange(start, min(stop, len(self)), device=self.device)
        return self.normalise(self.take(idx))


def cutmix(
    x: torch.Tensor, y: torch.Tensor, generator: torch.Generator, host: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """CutMix (Yun et al., 2019) on a batch: one box, from a shuffled copy of the batch.

    The mixing ratio comes from Beta(1, 1), i.e. uniform, and the box side from
    sqrt(1 - ratio); after clipping at the border the ratio is recomputed from the box
    area. Returns (mixed images, the pasted images' labels, the weight of the original
    labels). ``generator`` draws the permutation on the batch's device; ``host`` (a CPU
    generator) draws the box, so nothing waits on the device.
    """
    n, _, h, w = x.shape
    lam, cy, cx = torch.rand(3, generator=host).tolist()
    cut_h, cut_w = int(h * math.sqrt(1.0 - lam)), int(w * math.sqrt(1.0 - lam))
    cy, cx = int(cy * h), int(cx * w)
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h - cut_h // 2, h)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w - cut_w // 2, w)
    perm = torch.randperm(n, device=x.device, generator=generator)
    mixed = x.clone()
    mixed[:, :, top:bottom, left:right] = x[perm, :, top:bottom, left:right]
    kept = 1.0 - (bottom - top) * (right - left) / (h * w)
    return mixed, y[perm], kept
