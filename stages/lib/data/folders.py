"""Image-folder datasets: ``train/<class>/*`` plus ``test/<class>/*`` or ``val/<class>/*``, as a
folder tree or a ``.tar.gz`` of one; JPEG, PNG, WebP or BMP at any size, grey, palette or RGBA
converted to RGB. Class names are the folder names, sorted.

A split is a list of items (file name, label, bytes reader) decoded in batches: nothing holds
a split's pixels in memory. Images are stored at the model's input size with the standard
transforms (:mod:`.transforms`), unless every image is square at a size that divides the
model's (CIFAR-10's 32x32): those are kept as they are and upsampled at the model input.
Torch-free.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import DatasetError, ImageError
from .transforms import eval_transform, train_transform

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
TEST_SPLITS = ("test", "val")  # the held-out split's folder, first found
LAYOUT_HELP = (
    "accepted layouts: cifar-10-batches-py/, cifar-10-python.tar.gz, an image-folder tree "
    "train/<class>/*.jpg + test/<class>/*.jpg (or val/<class>/), or a .tar.gz of such a tree "
    "(e.g. copy cifar10-jpg.tar.gz there)"
)


@dataclass(frozen=True)
class Item:
    """One image file: its name (for errors), its label and how to read its bytes."""

    name: str
    label: int
    read: Callable[[], bytes]


@dataclass(frozen=True)
class FolderDataset:
    train: list[Item]
    test: list[Item]
    classes: tuple[str, ...]
    source: str


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def test_split_of(root: Path) -> str | None:
    """The held-out split's folder name under ``root`` (test/ or val/), or None."""
    return next((s for s in TEST_SPLITS if (root / s).is_dir()), None)


def scan_tree(root: Path) -> FolderDataset:
    """Every image of ``root/train/<class>/`` and ``root/{test,val}/<class>/``, sorted by class
    then file name; the folders' bytes are read only when decoded."""
    held_out = test_split_of(root) or "test"

    def scan(split: str) -> dict[str, list[tuple[str, Callable[[], bytes]]]]:
        folder = root / split
        return {
            d.name: [(str(f), f.read_bytes) for f in sorted(d.iterdir()) if f.is_file() and is_image(f.name)]
            for d in sorted(p for p in folder.iterdir() if p.is_dir())
        }

    return _dataset(scan("train"), scan(held_out), f"{root}", f"folder:{root}", held_out)


def archive_entry(name: str) -> tuple[str | None, str, str]:
    """(split, class, file) of an archive member ``.../<split>/<class>/<file>`` that is an
    image (split test/ or val/ named test), else (None, "", "")."""
    parts = name.strip("./").split("/")
    if len(parts) < 3 or parts[-3] not in ("train", *TEST_SPLITS) or not is_image(parts[-1]):
        return None, "", ""
    return ("train" if parts[-3] == "train" else "test"), parts[-2], parts[-1]


def scan_tar(archive: Path) -> FolderDataset:
    """An archive of an image-folder tree; its (compressed) image files are held in memory."""
    files: dict[str, dict[str, list[tuple[str, Callable[[], bytes]]]]] = {"train": {}, "test": {}}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                split, cls, _ = archive_entry(member.name)
                if member.isfile() and split is not None:
                    blob = tar.extractfile(member).read()  # type: ignore[union-attr]
                    files[split].setdefault(cls, []).append((f"{archive}:{member.name}", _const(blob)))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DatasetError(f"{archive}: not a readable archive ({exc}); {LAYOUT_HELP}") from exc
    if not files["train"] or not files["test"]:
        raise DatasetError(f"{archive}: holds no train/<class>/ and test/<class>/ images; {LAYOUT_HELP}")
    for by_class in files.values():
        for cls in by_class:
            by_class[cls].sort(key=lambda f: f[0])
    return _dataset(files["train"], files["test"], str(archive), f"folder-archive:{archive}")


def _const(blob: bytes) -> Callable[[], bytes]:
    return lambda: blob


def _dataset(train: dict, test: dict, where: str, source: str, held_out: str = "test") -> FolderDataset:
    classes = tuple(sorted(train))
    if not classes:
        raise DatasetError(f"{where}: train/ has no class folders (train/<class>/<image>); {LAYOUT_HELP}")
    if sorted(test) != list(classes):
        raise DatasetError(
            f"{where}: train/ and {held_out}/ class folders differ "
            f"({', '.join(classes)} vs {', '.join(sorted(test)) or 'none'}): give both the same classes"
        )

    def items(files: dict, split: str) -> list[Item]:
        out = [Item(name, i, read) for i, c in enumerate(classes) for name, read in files.get(c, [])]
        if not out:
            raise DatasetError(f"{where}/{split}: no images found ({', '.join(IMAGE_SUFFIXES)}); {LAYOUT_HELP}")
        return out

    return FolderDataset(items(train, "train"), items(test, "test"), classes, source)


# -- decoding ------------------------------------------------------------------------------


def decode(blob: bytes, name: str) -> np.ndarray:
    """An image file's bytes -> uint8 RGB (H, W, 3) at its own size; grey, palette and RGBA
    become RGB (alpha dropped); anything else is an ImageError naming ``name``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(blob)) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except UnidentifiedImageError as exc:
        raise ImageError(f"{name}: not a readable image (not an image file, or a format Pillow cannot read)") from exc
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt image data
        raise ImageError(f"{name}: not a readable image ({exc})") from exc


class SizeMismatch(ImageError):
    """An image of another size in a dataset being kept at its images' own size."""


def image_size(item: Item) -> tuple[int, int]:
    """(width, height) of ``item`` from its header; an ImageError naming it if unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(item.read())) as img:
            return img.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{item.name}: not a readable image ({type(exc).__name__}: {exc})") from exc


def native_size(ds: FolderDataset, model_size: int) -> int | None:
    """The side of the first training image when it is square and divides ``model_size``
    (the dataset may then be kept as it is, if every image has that size), else None."""
    w, h = image_size(ds.train[0])
    return w if w == h and model_size % w == 0 else None


def store_size(ds: FolderDataset, model_size: int) -> tuple[int, bool]:
    """(stored image side, whether images are transformed) by reading every image's header:
    the images' own side when every one is square at a size dividing ``model_size``, else
    ``model_size``, transformed. (prepare decides while it writes instead.)"""
    side = native_size(ds, model_size)
    for it in (*ds.train, *ds.test) if side else ():
        if image_size(it) != (side, side):
            side = None
            break
    return (side, False) if side else (model_size, True)


def batches(
    items: list[Item], size: int, transform: bool, train: bool, batch: int = 256
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(uint8 NHWC images at ``size``, labels) of ``items`` in order, ``batch`` at a time;
    with ``transform`` each image goes through the training or evaluation transform."""
    fit = train_transform if train else eval_transform
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        images = []
        for it in chunk:
            img = decode(it.read(), it.name)
            if transform:
                img = fit(img, size)
            elif img.shape != (size, size, 3):
                h, w = img.shape[:2]
                raise SizeMismatch(f"{it.name}: {w}x{h}, not {size}x{size} like the first image")
            images.append(img)
        yield np.stack(images), np.asarray([it.label for it in chunk], dtype=np.int64)
