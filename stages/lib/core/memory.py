"""Memory a case needs, what the machine has, and telling an out-of-memory failure apart.

A case (a benchmark batch, an evaluation, training, a served batch) needs its batch's input
and output bytes plus the model's activations, estimated per input pixel from the
architecture. The estimates are lower bounds: a case refused here cannot fit; one that passes
may still run out, and then its child process catches the failure (:func:`is_out_of_memory`)
and records the case as failed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import OutOfMemory, human_bytes, oom_words
from .errors import is_out_of_memory as is_out_of_memory  # re-exported: the stages ask this module

# Activation bytes per input pixel and image, (inference, training), lower bounds: about half
# of resnet18 with the CIFAR stem measured on a CPU (peak RSS over one PyTorch forward at
# batch 256: 1.29 MiB per 32x32 image; forward + backward + SGD step at batch 128: 6.5 MiB),
# the other models scaled by their widths (resnet50's blocks are 4x wider) and strides (the
# ImageNet stem divides the resolution by 4, the activations by 16).
ACTIVATION_BYTES_PER_PIXEL = {
    ("resnet18", True): (600, 3000),
    ("resnet18", False): (40, 200),
    ("resnet50", True): (2400, 12000),
    ("resnet50", False): (100, 750),
}
_UNKNOWN = (40, 200)
PRECISION_SCALE = {"fp32": 1.0, "fp16": 0.5, "int8": 0.25}  # activations' element size vs float32


@dataclass(frozen=True)
class Need:
    """Bytes a case needs: its batch's input and output, and the model's activations."""

    io_bytes: int
    activation_bytes: int

    @property
    def total(self) -> int:
        return self.io_bytes + self.activation_bytes

    def describe(self) -> str:
        return (
            f"about {human_bytes(self.total)} (inputs and outputs {human_bytes(self.io_bytes)}"
            f" + activations at least {human_bytes(self.activation_bytes)})"
        )


def case_need(
    batch: int,
    input_bytes: int,
    output_bytes: int,
    model: tuple[str, bool, int],
    precision: str = "fp32",
    training: bool = False,
) -> Need:
    """What a batch of ``batch`` images needs (``input_bytes``/``output_bytes`` per image) for
    ``model`` = (arch, cifar_stem, image size)."""
    arch, cifar_stem, size = model
    per_pixel = ACTIVATION_BYTES_PER_PIXEL.get((arch, cifar_stem), _UNKNOWN)[1 if training else 0]
    activations = batch * per_pixel * size * size * PRECISION_SCALE.get(precision, 1.0)
    return Need(batch * (input_bytes + output_bytes), int(activations))


def check_fits(case: str, need: Need, device: str, fix: str) -> None:
    """Raise OutOfMemory naming ``case`` when ``need`` exceeds what ``device`` has free
    (host RAM for "cpu", free GPU memory for "cuda" where it can be read)."""
    have, what = (
        (free_gpu_bytes(), "free GPU memory") if device == "cuda" else (available_host_bytes(), "RAM available")
    )
    if have is None or need.total <= have:
        return
    raise OutOfMemory(f"{case}: needs {need.describe()}, this machine has {human_bytes(have)} of {what}: {fix}")


def available_host_bytes() -> int | None:
    """RAM this process may still take: MemAvailable, capped by a cgroup (container) limit."""
    found = []
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            found += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")]
    except OSError:
        pass
    limit = _cgroup_free()
    if limit is not None:
        found.append(limit)
    return min(found) if found else None


def _cgroup_free() -> int | None:
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as f:
            used = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else max(0, int(limit) - used)


def free_gpu_bytes() -> int | None:
    """Free memory on the current CUDA device, or None where it cannot be read."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        return None
    try:
        from . import cuda

        return cuda.mem_free_bytes()
    except Exception:  # no cuda-python, no driver, no device: the case is not checked
        return None


def oom_line(case: str, exc: BaseException, fix: str) -> str:
    """One line for a case that ran out of memory."""
    return f"{case}: out of memory ({oom_words(exc)}): {fix}"
