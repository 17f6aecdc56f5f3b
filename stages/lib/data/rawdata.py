"""CIFAR-10 from disk in every layout we accept, counted or loaded, and image decoding.

Torch-free. Accepted raw layouts under ``data.raw_dir`` (searched in this order):
  1. ``cifar-10-batches-py/`` (the official pickled batches, extracted)
  2. ``cifar-10-python.tar.gz`` (the official archive)
  3. an image-folder tree ``train/<class>/*`` and ``test/<class>/*`` (at the top, or one
     folder down)
  4. a ``.tar.gz``/``.tgz`` holding such a tree (e.g. cifar10-jpg.tar.gz)
"""

from __future__ import annotations

import hashlib
import io
import logging
import pickle
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from ..core.errors import DatasetError, ImageError
from ..core.progress import progress
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
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
LAYOUT_HELP = (
    "accepted layouts: cifar-10-batches-py/, cifar-10-python.tar.gz, an image-folder tree "
    "train/<class>/*.jpg + test/<class>/*.jpg, or a .tar.gz of such a tree "
    "(e.g. copy cifar10-jpg.tar.gz there)"
)


# -- raw loading ---------------------------------------------------------------------------


def load_raw(raw_dir: str | Path, source: str = "auto", download: bool = False) -> RawDataset:
    """Load CIFAR-10 from ``raw_dir`` in any accepted layout (see module docstring)."""
    raw = Path(raw_dir)
    found = _locate(raw, source)
    if found is not None:
        kind, path = found
        return _LOADERS[kind](path)
    if download and source in ("auto", "pickle"):
        return _load_pickle_tar(_download(raw))
    raise _not_found(raw)


def count_train_images(raw_dir: str | Path, source: str = "auto", download: bool = False) -> int:
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
        return sum(1 for f in (path / "train").glob("*/*") if f.suffix.lower() in IMAGE_SUFFIXES)
    try:
        with tarfile.open(path, "r:*") as tar:
            return sum(1 for m in tar if m.isfile() and _archive_entry(m.name)[0] == "train")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DatasetError(f"{path}: not a readable archive ({exc}); {LAYOUT_HELP}") from exc


def _not_found(raw: Path) -> DatasetError:
    found = sorted(p.name for p in raw.iterdir()) if raw.is_dir() else []
    return DatasetError(
        f"no CIFAR-10 found in {raw}/ (it holds: {', '.join(found) or 'nothing'}); "
        f"{LAYOUT_HELP}; or set data.download=true on a machine with network"
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
                if (root / "train").is_dir() and (root / "test").is_dir():
                    return "folder-tree", root
            archives = sorted(
                p for p in raw.glob("*") if p.name.endswith((".tar.gz", ".tgz")) and p.name != "cifar-10-python.tar.gz"
            )
            if archives:
                return "folder-tar", archives[0]
    return None


def _archive_entry(name: str) -> tuple[str | None, str, str]:
    """(split, class, file) of an archive member path ``.../<split>/<class>/<file>`` that is an
    image, else (None, "", "")."""
    parts = name.strip("./").split("/")
    if len(parts) < 3 or parts[-3] not in ("train", "test") or not parts[-1].lower().endswith(IMAGE_SUFFIXES):
        return None, "", ""
    return parts[-3], parts[-2], parts[-1]


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


def decode_image(blob: bytes, name: str, size: int = IMAGE_SIZE) -> np.ndarray:
    """An image file's bytes -> uint8 RGB (size, size, 3). Grey, palette and RGBA images are
    converted to RGB (alpha dropped); anything else is an ImageError naming ``name``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(blob)) as img:
            arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except UnidentifiedImageError as exc:
        raise ImageError(f"{name}: not a readable image (not an image file, or a format Pillow cannot read)") from exc
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt image data
        raise ImageError(f"{name}: not a readable image ({exc})") from exc
    if arr.shape != (size, size, 3):
        h, w = arr.shape[:2]
        raise ImageError(f"{name}: expected a {size}x{size} RGB image, got {w}x{h} {arr.shape}; resize it first")
    return arr


def _split_from_files(files: dict[str, list[tuple[str, bytes]]] | None, where: str, classes: tuple[str, ...]) -> Split:
    images: list[np.ndarray] = []
    labels: list[int] = []
    items = [(c, name, blob) for c in classes for name, blob in sorted(files.get(c, []))]  # type: ignore[union-attr]
    for cls, name, blob in progress(items, total=len(items), desc=f"decode {where}"):
        images.append(decode_image(blob, name))
        labels.append(classes.index(cls))
    if not images:
        raise DatasetError(f"{where}: no images found; {LAYOUT_HELP}")
    return Split(np.stack(images), np.asarray(labels, dtype=np.int64))


def _check_classes(train: dict, test: dict, where: str) -> tuple[str, ...]:
    classes = tuple(sorted(train))
    if not classes:
        raise DatasetError(f"{where}: train/ has no class folders; {LAYOUT_HELP}")
    if sorted(test) != list(classes):
        raise DatasetError(
            f"{where}: train/ and test/ class folders differ ({', '.join(classes)} vs {', '.join(sorted(test))})"
        )
    return classes


def _load_folder_tree(root: Path) -> RawDataset:
    def scan(split: str) -> dict[str, list[tuple[str, bytes]]]:
        out: dict[str, list[tuple[str, bytes]]] = {}
        for cls_dir in sorted(p for p in (root / split).iterdir() if p.is_dir()):
            out[cls_dir.name] = [
                (str(f), f.read_bytes()) for f in sorted(cls_dir.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES
            ]
        return out

    train_files, test_files = scan("train"), scan("test")
    classes = _check_classes(train_files, test_files, str(root))
    return RawDataset(
        _split_from_files(train_files, f"{root}/train", classes),
        _split_from_files(test_files, f"{root}/test", classes),
        classes,
        f"folder:{root}",
        False,
    )


def _load_folder_tar(archive: Path) -> RawDataset:
    files: dict[str, dict[str, list[tuple[str, bytes]]]] = {"train": {}, "test": {}}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                split, cls, _ = _archive_entry(member.name)
                if member.isfile() and split is not None:
                    blob = tar.extractfile(member).read()  # type: ignore[union-attr]
                    files[split].setdefault(cls, []).append((f"{archive}:{member.name}", blob))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DatasetError(f"{archive}: not a readable archive ({exc}); {LAYOUT_HELP}") from exc
    if not files["train"] or not files["test"]:
        raise DatasetError(f"{archive}: holds no train/<class>/ and test/<class>/ images; {LAYOUT_HELP}")
    classes = _check_classes(files["train"], files["test"], str(archive))
    return RawDataset(
        _split_from_files(files["train"], f"{archive}:train", classes),
        _split_from_files(files["test"], f"{archive}:test", classes),
        classes,
        f"folder-archive:{archive}",
        False,
    )


def _download(raw: Path) -> Path:
    raw.mkdir(parents=True, exist_ok=True)
    dest = raw / "cifar-10-python.tar.gz"
    part = raw / "cifar-10-python.tar.gz.part"
    log.info("downloading %s", CIFAR10_URL)
    try:
        urllib.request.urlretrieve(CIFAR10_URL, part)
    except (urllib.error.URLError, OSError) as exc:
        part.unlink(missing_ok=True)
        raise DatasetError(f"no CIFAR-10 in {raw}/ and the download failed ({exc}); {LAYOUT_HELP}") from exc
    digest = hashlib.md5(part.read_bytes()).hexdigest()  # noqa: S324 - the published checksum
    if digest != CIFAR10_MD5:
        part.unlink()
        raise DatasetError(f"downloaded archive has md5 {digest}, expected {CIFAR10_MD5}")
    part.rename(dest)
    return dest


_LOADERS = {
    "pickle-dir": _load_pickle_dir,
    "pickle-tar": _load_pickle_tar,
    "folder-tree": _load_folder_tree,
    "folder-tar": _load_folder_tar,
}
