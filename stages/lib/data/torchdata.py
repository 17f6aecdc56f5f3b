"""GPU-resident training data with on-device augmentation (torch twin of inputs.preprocess)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .prepared import Split


class DeviceDataset:
    """A split held on the device as uint8 NCHW; batches are augmented and normalised there."""

    def __init__(
        self, split: Split, device: torch.device, mean: list[float], std: list[float], size: int, pad: int = 4
    ) -> None:
        x = torch.from_numpy(split.images).permute(0, 3, 1, 2).contiguous()
        self.images = x.to(device)
        self.padded = F.pad(self.images, (pad, pad, pad, pad)) if pad else self.images
        self.labels = torch.from_numpy(split.labels).to(device)
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1)
        self.size, self.pad, self.device = size, pad, device
        self.hw = int(self.images.shape[-1])

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def normalise(self, x_u8: torch.Tensor) -> torch.Tensor:
        """Same arithmetic as inputs.preprocess: /255, -mean, /std, nearest upsampling."""
        x = x_u8.float() * (1 / 255)
        x = (x - self.mean) / self.std
        factor = self.size // self.hw
        if factor > 1:
            x = x.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)
        return x

    def augmented(self, idx: torch.Tensor, generator: torch.Generator, cutout: int = 0) -> torch.Tensor:
        """Random crop (zero padding), horizontal flip and optional Cutout, on the device.

        Cutout (DeVries & Taylor, 2017) zeroes a ``cutout`` x ``cutout`` square at a random
        centre (clipped at the border) of the normalised image, i.e. sets it to the mean.
        """
        b, hw = idx.shape[0], self.hw
        off = torch.randint(0, 2 * self.pad + 1, (2, b), device=self.device, generator=generator)
        ar = torch.arange(hw, device=self.device)
        rows = (off[0][:, None] + ar)[:, None, :, None]
        cols = (off[1][:, None] + ar)[:, None, None, :]
        chan = torch.arange(3, device=self.device)[None, :, None, None]
        crops = self.padded[idx[:, None, None, None], chan, rows, cols]
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

    def plain(self, start: int, stop: int) -> torch.Tensor:
        return self.normalise(self.images[start:stop])


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
