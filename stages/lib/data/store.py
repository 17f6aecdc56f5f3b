"""Prepared splits on disk: one uncompressed ``.npz`` per split (``images`` uint8 NHWC and
``labels`` int64), written image batch by image batch and read back memory-mapped, so a
dataset larger than memory is prepared and read in bounded host memory. ``np.load`` reads
these files as well; only the writer and the mapping reader live here.
"""

from __future__ import annotations

import mmap
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

_CHUNK = 64 << 20  # bytes copied at a time into the archive


class SplitWriter:
    """Appends batches of uint8 NHWC images (one size) and their labels; ``close`` writes the
    ``.npz`` at ``dest`` (the caller makes it atomic). Pixels wait in a temporary file beside
    ``dest``, not in memory."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self._raw = tempfile.NamedTemporaryFile(dir=dest.parent, prefix=".pixels-", delete=False)  # noqa: SIM115
        self._labels: list[np.ndarray] = []
        self._shape: tuple[int, ...] | None = None
        self.count = 0

    def __enter__(self) -> SplitWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        """Writes the split, or on an error drops the pixels written so far."""
        if exc_type is None:
            self.close()
        else:
            self._raw.close()
            Path(self._raw.name).unlink(missing_ok=True)

    def append(self, images: np.ndarray, labels: np.ndarray) -> None:
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected uint8 NHWC RGB images, got {images.dtype} {images.shape}")
        if self._shape is not None and images.shape[1:] != self._shape:
            raise ValueError(f"images of shape {images.shape[1:]} after {self._shape}: one size per split")
        self._shape = images.shape[1:]
        self._raw.write(np.ascontiguousarray(images).tobytes())
        self._labels.append(np.asarray(labels, dtype=np.int64))
        self.count += len(images)

    def close(self) -> None:
        self._raw.close()
        raw = Path(self._raw.name)
        try:
            shape = (self.count, *(self._shape or (0, 0, 3)))
            labels = np.concatenate(self._labels) if self._labels else np.zeros(0, np.int64)
            with zipfile.ZipFile(self.dest, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
                with z.open("images.npy", "w", force_zip64=True) as f:
                    header = {"descr": "|u1", "fortran_order": False, "shape": shape}
                    np.lib.format.write_array_header_2_0(f, header)  # type: ignore[no-untyped-call]
                    with open(raw, "rb") as src:
                        shutil.copyfileobj(src, f, _CHUNK)
                with z.open("labels.npy", "w") as f:
                    np.lib.format.write_array(f, labels)
        finally:
            raw.unlink(missing_ok=True)


def write_split(dest: Path, images: np.ndarray, labels: np.ndarray, batch: int = 4096) -> None:
    """An in-memory (or mapped) split to ``dest`` through :class:`SplitWriter`."""
    w = SplitWriter(dest)
    for start in range(0, len(images), batch):
        w.append(images[start : start + batch], labels[start : start + batch])
    if not len(images):
        w.append(np.zeros((0, *images.shape[1:]), np.uint8), np.zeros(0, np.int64))
    w.close()


def map_member(path: Path, member: str) -> np.ndarray | None:
    """``member`` of the .npz at ``path`` memory-mapped read-only, or None where it cannot be
    (a compressed member): the caller then loads it."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
        if info.compress_type != zipfile.ZIP_STORED:
            return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        name_len = int.from_bytes(local[26:28], "little")
        extra_len = int.from_bytes(local[28:30], "little")
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)  # type: ignore[no-untyped-call]
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)  # type: ignore[no-untyped-call]
        offset = f.tell()
    if fortran or dtype.hasobject:
        return None
    if int(np.prod(shape)) == 0:
        return np.zeros(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)


def release(images: np.ndarray) -> None:
    """Drop a memory-mapped split's pages from this process's resident set once a batch has
    been copied out (they stay in the page cache): reading a split batch by batch then keeps
    the process's RSS bounded instead of growing with the file. A no-op for other arrays."""
    mapped = getattr(images, "_mmap", None)
    if mapped is not None and hasattr(mapped, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        mapped.madvise(mmap.MADV_DONTNEED)
