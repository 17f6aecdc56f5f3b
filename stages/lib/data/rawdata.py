"""CIFAR-10 from disk in every layout we accept, counted or loaded, and image decoding.

Torch-free. Accepted raw layouts under ``data.raw_dir`` (searched in this order):
  1. ``cifar-10-batches-py/`` (the official pickled batches, extracted)
  2. ``cifar-10-python.tar.gz`` (the official archive)
  3. an image-folder tree ``train/<class>/*`` and ``test/<class>/*`` or ``val/<class>/*`` (at
     the top, or one folder down), images of any size (:mod:`.folders`)
  4. a ``.tar.gz``/``.tgz`` holding such a tree (e.g. cifar10-jpg.tar.gz)
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from ..core.errors import DatasetError
from ..core.progress import progress
from . import folders
from .folders import IMAGE_SUFFIXES, LAYOUT_HELP  # noqa: F401 - IMAGE_SUFFIXES: re-exported
from .folders import archive_entry as _archive_entry
from .prepared import IMAGE_SIZE, RawDataset, Split

log = logging.getLogger(__name__)

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_TRAIN_IMAGES = 50_000


# -- raw loading ---------------------------------------------------------------------------


def locate(raw_dir: str | Path, source: str = "auto", download: bool | str = False) -> tuple[str, Path]:
    """(layout kind, path) of the dataset in ``raw_dir``, downloading CIFAR-10 when asked and
    nothing is there; kinds: pickle-dir, pickle-tar, folder-tree, folder-tar."""
    raw = Path(raw_dir)
    found = _locate(raw, source)
    if found is not None:
        return found
    if download and source in ("auto", "pickle"):
        return "pickle-tar", _download(raw)
    raise _not_found(raw)


def load_pickle(kind: str, path: Path) -> RawDataset:
    """CIFAR-10's pickled batches (a folder or the official archive) as arrays."""
    return _load_pickle_dir(path) if kind == "pickle-dir" else _load_pickle_tar(path)


def load_raw(
    raw_dir: str | Path, source: str = "auto", download: bool | str = False, image_size: int = IMAGE_SIZE
) -> RawDataset:
    """The dataset in ``raw_dir`` in any accepted layout (see module docstring), in memory;
    an image folder is stored at ``image_size`` as :mod:`.folders` says. The prepare stage
    streams large folders instead (:func:`.folders.batches`)."""
    raw = Path(raw_dir)
    found = _locate(raw, source)
    if found is not None:
        kind, path = found
        if kind.startswith("pickle"):
            return load_pickle(kind, path)
        return _folder_arrays(folders.scan_tree(path) if kind == "folder-tree" else folders.scan_tar(path), image_size)
    if download and source in ("auto", "pickle"):
        return _load_pickle_tar(_download(raw))
    raise _not_found(raw)


def count_train_images(raw_dir: str | Path, source: str = "auto", download: bool | str = False) -> int:
    """How many training images :func:`load_raw` would load, without decoding any image (a
    folder archive's member names are read, not its images)."""
    raw = Path(raw_dir)
    found = _locate(raw, source)
    if found is None:
        if download and source in ("auto", "pickle"):
            return CIFAR10_TRAIN_IMAGES
        raise _not_found(raw)
    kind, path = found
    if kind in ("pickle-dir", "pickle-tar"):
        return CIFAR10_TRAIN_IMAGES  # the official batches: 5 x 10,000
    if kind == "folder-tree":
        return sum(1 for f in (path / "train").glob("*/*") if folders.is_image(f.name))
    try:
        with tarfile.open(path, "r:*") as tar:
            return sum(1 for m in tar if m.isfile() and _archive_entry(m.name)[0] == "train")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DatasetError(f"{path}: not a readable archive ({exc}); {LAYOUT_HELP}") from exc


def _not_found(raw: Path) -> DatasetError:
    found = sorted(p.name for p in raw.iterdir()) if raw.is_dir() else []
    return DatasetError(
        f"no CIFAR-10 found in {raw}/ (it holds: {', '.join(found) or 'nothing'}); "
        f"{LAYOUT_HELP}; or set data.download=auto on a machine with network"
    )


def _locate(raw: Path, source: str) -> tuple[str, Path] | None:
    """(layout kind, path) of the first accepted layout in ``raw`` for ``source``, or None."""
    for kind in ("pickle", "folder") if source == "auto" else (source,):
        if kind == "pickle":
            if (raw / "cifar-10-batches-py").is_dir():
                return "pickle-dir", raw / "cifar-10-batches-py"
            if (raw / "cifar-10-python.tar.gz").is_file():
                return "pickle-tar", raw / "cifar-10-python.tar.gz"
        elif kind == "folder":
            for root in [raw, *sorted(p for p in raw.glob("*") if p.is_dir())]:
                if (root / "train").is_dir() and folders.test_split_of(root):
                    return "folder-tree", root
            archives = sorted(
                p for p in raw.glob("*") if p.name.endswith((".tar.gz", ".tgz")) and p.name != "cifar-10-python.tar.gz"
            )
            if archives:
                return "folder-tar", archives[0]
    return None


def _unpickle(blob: bytes, name: str) -> dict:
    try:
        return pickle.loads(blob, encoding="bytes")
    except Exception as exc:  # pickle raises many types on corrupt input
        raise DatasetError(f"{name}: not a readable CIFAR-10 batch ({exc}); {LAYOUT_HELP}") from exc


def _batches_to_split(batches: list[dict], name: str) -> Split:
    if not all(isinstance(b, dict) for b in batches):
        raise DatasetError(f"{name}: a batch is not a CIFAR-10 dict; {LAYOUT_HELP}")
    try:
        data = np.concatenate([np.asarray(b[b"data"], dtype=np.uint8) for b in batches])
        labels = np.concatenate([np.asarray(b[b"labels"], dtype=np.int64) for b in batches])
    except KeyError as exc:
        raise DatasetError(f"{name}: batch lacks key {exc}; {LAYOUT_HELP}") from exc
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{name}: malformed batch ({exc}); {LAYOUT_HELP}") from exc
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(f"{name}: expected rows of 3072 bytes, got shape {data.shape}")
    if labels.shape != (data.shape[0],):
        raise DatasetError(f"{name}: {data.shape[0]} images but {labels.shape[0]} labels")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()
    return Split(images, labels)


def _load_pickle_dir(folder: Path) -> RawDataset:
    def read(name: str) -> dict:
        path = folder / name
        if not path.is_file():
            raise DatasetError(f"{path} is missing; {LAYOUT_HELP}")
        return _unpickle(path.read_bytes(), str(path))

    train = _batches_to_split([read(f"data_batch_{i}") for i in range(1, 6)], str(folder))
    test = _batches_to_split([read("test_batch")], str(folder))
    return RawDataset(train, test, CIFAR10_CLASSES, f"pickle:{folder}", False)


def _load_pickle_tar(archive: Path) -> RawDataset:
    try:
        with tarfile.open(archive, "r:gz") as tar:
            blobs = {}
            for member in tar.getmembers():
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and (base.startswith("data_batch_") or base == "test_batch"):
                    blobs[base] = tar.extractfile(member).read()  # type: ignore[union-attr]
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DatasetError(f"{archive}: not a readable .tar.gz ({exc}); {LAYOUT_HELP}") from exc
    missing = [n for n in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"] if n not in blobs]
    if missing:
        raise DatasetError(f"{archive}: lacks {', '.join(missing)}; {LAYOUT_HELP}")
    train = _batches_to_split([_unpickle(blobs[f"data_batch_{i}"], str(archive)) for i in range(1, 6)], str(archive))
    test = _batches_to_split([_unpickle(blobs["test_batch"], str(archive))], str(archive))
    return RawDataset(train, test, CIFAR10_CLASSES, f"pickle:{archive}", False)


def decode_image(blob: bytes, name: str, size: int | None = None) -> np.ndarray:
    """An image file's bytes -> uint8 RGB (H, W, 3); with ``size``, an image of another size
    goes through the evaluation transform to ``size`` x ``size`` (what predict does)."""
    from .transforms import eval_transform

    img = folders.decode(blob, name)
    return img if size is None else eval_transform(img, size)


def _folder_arrays(ds: folders.FolderDataset, image_size: int) -> RawDataset:
    size, transform = folders.store_size(ds, image_size)

    def split(items: list[folders.Item], train: bool, where: str) -> Split:
        parts = list(progress(folders.batches(items, size, transform, train), -(-len(items) // 256), f"decode {where}"))
        return Split(np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts]))

    return RawDataset(split(ds.train, True, "train"), split(ds.test, False, "test"), ds.classes, ds.source, False)


def _download(raw: Path, timeout_s: float = 30.0) -> Path:
    """CIFAR-10's official archive into ``raw`` (md5-checked, written atomically); offline, a
    DatasetError that says where to put the file."""
    raw.mkdir(parents=True, exist_ok=True)
    dest = raw / "cifar-10-python.tar.gz"
    part = raw / "cifar-10-python.tar.gz.part"
    log.info("no dataset in %s/: downloading %s", raw, CIFAR10_URL)
    md5 = hashlib.md5()  # noqa: S324 - the published checksum
    try:
        with urllib.request.urlopen(CIFAR10_URL, timeout=timeout_s) as resp, open(part, "wb") as f:  # noqa: S310
            while chunk := resp.read(1 << 20):
                md5.update(chunk)
                f.write(chunk)
    except (urllib.error.URLError, OSError) as exc:
        part.unlink(missing_ok=True)
        raise DatasetError(
            f"no dataset in {raw}/ and {CIFAR10_URL} cannot be reached ({getattr(exc, 'reason', exc)}): "
            f"put cifar-10-python.tar.gz (or cifar10-jpg.tar.gz, or an image-folder tree) in {raw}/"
        ) from exc
    if md5.hexdigest() != CIFAR10_MD5:
        part.unlink()
        raise DatasetError(
            f"the archive downloaded from {CIFAR10_URL} has md5 {md5.hexdigest()}, expected {CIFAR10_MD5}: "
            f"put a good cifar-10-python.tar.gz in {raw}/"
        )
    part.rename(dest)
    return dest
