"""One GPU per stage: which GPUs this host has, and an exclusive hold on one of them.

Queued experiments (`dvc exp run --queue`, then `dvc queue start -j N`) run side by side,
each in its own copy of the workspace. Every stage that touches a GPU holds one GPU for the
whole stage: an exclusive ``fcntl.flock`` on a file per GPU in ``$PIPELINE_LOCK_DIR``
(default ``/tmp/trt-pipeline/gpu-locks``, outside every workspace copy, shared by all of
them), with ``CUDA_VISIBLE_DEVICES`` set to that GPU's UUID before anything initialises
CUDA. So a benchmark never shares its GPU, and N experiments on N GPUs never wait. GPUs
are listed with ``nvidia-smi -L``, not CUDA: the holding process must not create a CUDA
context of its own. Per-backend child processes inherit the held GPU and do not lock again.
Without nvidia-smi (or with no GPU visible) holding is a no-op.

Standard library only, Python 3.10: TensorRT-side stages import it. Plumbing (it decides
which GPU, never what is computed on it), so no stage lists it among its DVC deps.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import GpuLockError

log = logging.getLogger(__name__)

CHILD_ENV = "PIPELINE_CHILD"  # set for every child process of a stage (stages.lib.core.interpreter)
LOCK_DIR_ENV = "PIPELINE_LOCK_DIR"
DEFAULT_LOCK_DIR = "/tmp/trt-pipeline/gpu-locks"
# "off": pin the first visible GPU without a lock, so several stages share it (e.g. trainings
# that are meant to run side by side on one GPU, where nothing is timed).
LOCK_SWITCH_ENV = "PIPELINE_GPU_LOCK"
HELD_ENV = "PIPELINE_GPU"  # the held GPU as JSON, for child processes and benchmark records
VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"
POLL_S = 0.5

_SMI_LINE = re.compile(r"^GPU (\d+): (.+?) \(UUID: (GPU-[0-9a-fA-F-]+)\)\s*$")


@dataclass(frozen=True)
class Gpu:
    index: int  # nvidia-smi's index (PCI bus order), not necessarily CUDA's ordinal
    name: str
    uuid: str

    def record(self) -> dict[str, Any]:
        return asdict(self)


def columns(record: dict[str, Any] | None) -> dict[str, Any]:
    """A GPU record ({name, index, uuid}, as in benchmark records) as flat table columns."""
    record = record or {}
    return {"gpu": record.get("name"), "gpu_index": record.get("index"), "gpu_uuid": record.get("uuid")}


def parse_smi_list(text: str) -> list[Gpu]:
    """The GPUs in ``nvidia-smi -L`` output (MIG instances below a GPU are not listed)."""
    gpus = []
    for line in text.splitlines():
        m = _SMI_LINE.match(line.strip())
        if m:
            gpus.append(Gpu(int(m.group(1)), m.group(2), m.group(3)))
    return gpus


def host_gpus(smi: str = "nvidia-smi") -> list[Gpu]:
    """Every GPU of this host according to nvidia-smi; [] without nvidia-smi or a driver."""
    try:
        proc = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return parse_smi_list(proc.stdout) if proc.returncode == 0 else []


def visible_gpus(gpus: list[Gpu], visible: str | None) -> list[Gpu] | None:
    """The GPUs ``CUDA_VISIBLE_DEVICES`` leaves visible, in its order; None when it names a
    device nvidia-smi does not list (e.g. a MIG instance): the caller then leaves it alone."""
    if visible is None:
        return list(gpus)
    chosen = []
    for entry in (e.strip() for e in visible.split(",")):
        if not entry or entry == "-1":
            break  # CUDA stops at the first invalid entry: nothing after it is visible
        if entry.isdigit():
            match = [g for g in gpus if g.index == int(entry)]
        else:
            match = [g for g in gpus if g.uuid.lower().startswith(entry.lower())]
        if len(match) != 1:
            return None
        chosen.append(match[0])
    return chosen


def held_gpu() -> Gpu | None:
    """The GPU this process (or the stage process that started it) holds, if any."""
    raw = os.environ.get(HELD_ENV)
    if not raw:
        return None
    try:
        return Gpu(**json.loads(raw))
    except (TypeError, ValueError):
        return None


def current_gpu() -> Gpu | None:
    """The GPU CUDA's device 0 is in this process: the held one, else the first visible."""
    gpu = held_gpu()
    if gpu is None:  # not started through run_main(gpu=True)
        found = visible_gpus(host_gpus(), os.environ.get(VISIBLE_ENV)) or []
        gpu = found[0] if found else None
    return gpu


def _lock_dir() -> Path:
    path = Path(os.environ.get(LOCK_DIR_ENV) or DEFAULT_LOCK_DIR)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GpuLockError(
            f"cannot create the GPU lock folder {path} ({exc}): set {LOCK_DIR_ENV} to a folder every "
            "experiment on this host can write"
        ) from exc
    return path


def _try_lock(path: Path, holder: str) -> int | None:
    """An open descriptor holding an exclusive lock on ``path``, or None if another has it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise GpuLockError(f"cannot open the GPU lock {path} ({exc}): set {LOCK_DIR_ENV} to a writable folder") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, holder.encode())  # who holds it, for the waiting message of others
    return fd


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "?"
    except OSError:
        return "?"


def acquire(gpus: list[Gpu], lock_dir: Path, stage: str) -> tuple[int, Gpu]:
    """Lock the first free GPU of ``gpus`` (waiting, with one log line, while all are held)."""
    holder = f"{stage} (pid {os.getpid()}, {os.getcwd()})"
    paths = [lock_dir / f"{g.uuid}.lock" for g in gpus]
    waiting = False
    while True:
        for gpu, path in zip(gpus, paths, strict=True):
            fd = _try_lock(path, holder)
            if fd is not None:
                return fd, gpu
        if not waiting:
            held = "; ".join(f"GPU {g.index}: {p} held by {_holder(p)}" for g, p in zip(gpus, paths, strict=True))
            log.info("%s waits for a GPU: every GPU lock is held (%s)", stage, held)
            waiting = True
        time.sleep(POLL_S)


@contextmanager
def _pinned(gpu: Gpu) -> Iterator[Gpu]:
    """CUDA_VISIBLE_DEVICES and PIPELINE_GPU set to ``gpu`` (restored afterwards)."""
    saved = {k: os.environ.get(k) for k in (VISIBLE_ENV, HELD_ENV)}
    os.environ[VISIBLE_ENV] = gpu.uuid  # a UUID: immune to CUDA's own device order
    os.environ[HELD_ENV] = json.dumps(gpu.record())
    try:
        yield gpu
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def hold_gpu(stage: str) -> Iterator[Gpu | None]:
    """Hold one GPU for the duration of the block (see the module docstring)."""
    if os.environ.get(CHILD_ENV):
        yield held_gpu()
        return
    gpus = visible_gpus(host_gpus(), os.environ.get(VISIBLE_ENV))
    if gpus is None:
        shown = os.environ[VISIBLE_ENV]
        log.warning("%s=%s names devices nvidia-smi -L does not list: no GPU lock", VISIBLE_ENV, shown)
        yield None
        return
    if not gpus:
        yield None
        return
    if os.environ.get(LOCK_SWITCH_ENV, "").lower() in ("off", "0", "false", "no"):
        with _pinned(gpus[0]) as gpu:
            yield gpu
        return
    fd, gpu = acquire(gpus, _lock_dir(), stage)
    try:
        log.info("%s holds GPU %d (%s, %s)", stage, gpu.index, gpu.name, gpu.uuid)
        with _pinned(gpu):
            yield gpu
    finally:
        os.close(fd)  # releases the lock (a killed process releases it too)
