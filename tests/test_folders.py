"""Image-folder datasets of any size: scanning, transforms, the prepared on-disk splits and
their memory-mapped reading, the training batches drawn from them, and the one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stages.lib.core.errors import DatasetError, ImageError
from stages.lib.core.io import read_json
from stages.lib.data import folders
from stages.lib.data import prepared as data
from stages.lib.data.store import SplitWriter, map_member
from stages.lib.data.torchdata import DeviceDataset
from stages.lib.data.transforms import eval_transform, train_transform
from tests.conftest import write_params

SIZES = ((37, 50), (90, 120))  # (height, width): the odd sizes of the CPU proof


def make_folder(root: Path, classes=("cat", "dog", "eel"), n_train=6, n_test=3, held_out="test") -> Path:
    """A tree of RGB PNG, grey JPEG and RGBA WebP images at odd sizes."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), (held_out, n_test)):
        for c, cls in enumerate(classes):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                h, w = SIZES[i % 2]
                base = np.clip(rng.normal(60 + 70 * c, 30, (h, w, 3)), 0, 255).astype(np.uint8)
                kind = i % 3
                if kind == 0:
                    Image.fromarray(base).save(d / f"{i}.png")
                elif kind == 1:
                    Image.fromarray(base[:, :, 0], "L").save(d / f"{i}.jpg", quality=95)
                else:
                    rgba = np.dstack([base, np.full((h, w), 255, np.uint8)])
                    Image.fromarray(rgba, "RGBA").save(d / f"{i}.webp", lossless=True)
    return root


def test_transforms_resize_the_shorter_side_and_crop_the_centre() -> None:
    img = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    assert eval_transform(img, 64).shape == (64, 64, 3)
    assert train_transform(img, 64).shape == (64, 64, 3)
    square = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert eval_transform(square, 64) is square  # already the size: untouched
    # evaluation: shorter side 90 -> 64/0.875 = 73, then the centre 64x64
    expected = np.asarray(Image.fromarray(img).resize((97, 73), Image.Resampling.BILINEAR, reducing_gap=None))
    np.testing.assert_array_equal(eval_transform(img, 64), expected[4:68, 16:80])


def test_scan_takes_val_as_the_test_split_and_classes_from_folders(tmp_path: Path) -> None:
    ds = folders.scan_tree(make_folder(tmp_path, held_out="val"))
    assert ds.classes == ("cat", "dog", "eel")
    assert len(ds.train) == 18 and len(ds.test) == 9
    assert [it.label for it in ds.test] == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_odd_sizes_and_modes_are_stored_at_the_model_size(tmp_path: Path) -> None:
    ds = folders.scan_tree(make_folder(tmp_path))
    assert folders.store_size(ds, 64) == (64, True)
    (x, y), *_ = list(folders.batches(ds.test, 64, True, train=False, batch=4))
    assert x.shape == (4, 64, 64, 3) and x.dtype == np.uint8 and list(y) == [0, 0, 0, 1]
    grey = x[1]  # the grey JPEG became RGB with three equal channels
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()


def test_square_images_dividing_the_model_size_are_kept(tmp_path: Path) -> None:
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / split / cls / "0.png")
    ds = folders.scan_tree(tmp_path)
    assert folders.store_size(ds, 224) == (32, False)
    assert folders.store_size(ds, 48) == (48, True)


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        ("no_classes", "train/ has no class folders (train/<class>/<image>)"),
        ("unreadable", "not a readable image"),
        ("classes_differ", "train/ and test/ class folders differ (cat, dog, eel vs cat, dog)"),
    ],
)
def test_bad_folders_are_one_line_errors(tmp_path: Path, damage: str, needle: str) -> None:
    root = make_folder(tmp_path / "raw")
    if damage == "no_classes":
        for d in (root / "train").iterdir():
            for f in d.iterdir():
                f.rename(root / "train" / f"{d.name}-{f.name}")
            d.rmdir()
    elif damage == "unreadable":
        (root / "train" / "dog" / "1.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    else:
        for f in (root / "test" / "eel").iterdir():
            f.unlink()
        (root / "test" / "eel").rmdir()
    with pytest.raises((DatasetError, ImageError)) as err:
        ds = folders.scan_tree(root)
        list(folders.batches(ds.train, 64, True, train=True))
    assert needle in str(err.value) and "\n" not in str(err.value)
    if damage == "unreadable":
        assert str(root / "train" / "dog" / "1.jpg") in str(err.value)


def test_prepare_streams_an_odd_sized_folder_into_mapped_splits(tmp_path: Path) -> None:
    from stages import prepare

    root = make_folder(tmp_path / "raw")
    params = write_params(
        tmp_path,
        ["data=folder", f"data.raw_dir={root}", "data.calib_size=4", "calibrate.num_images=4", "model.num_classes=3"],
    )
    out = tmp_path / "prepared"
    prepare.prepare(str(params), out)
    meta = read_json(out / "meta.json")
    assert meta["classes"] == ["cat", "dog", "eel"] and meta["augment"] == "random-resized-crop"
    assert meta["image_shape"] == [32, 32, 3] and meta["train_images"] == 18 and meta["test_images"] == 9
    test = data.load_split(out / "test.npz")
    assert isinstance(test.images, np.memmap) and test.images.shape == (9, 32, 32, 3)
    assert sorted(test.labels.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    calib = data.load_split(out / "calib.npz")
    assert calib.images.shape == (4, 32, 32, 3)
    # the test split holds each file through the evaluation transform
    ds = folders.scan_tree(root)
    first = ds.test[int(np.random.default_rng(0).permutation(9)[0])]
    np.testing.assert_array_equal(test.images[0], eval_transform(folders.decode(first.read(), first.name), 32))


def test_split_writer_round_trip_and_one_size_per_split(tmp_path: Path) -> None:
    w = SplitWriter(tmp_path / "s.npz")
    a = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    w.append(a[:3], np.arange(3))
    w.append(a[3:], np.arange(3, 5))
    with pytest.raises(ValueError, match="one size per split"):
        w.append(np.zeros((1, 9, 9, 3), np.uint8), np.zeros(1))
    w.close()
    mapped = map_member(tmp_path / "s.npz", "images.npy")
    assert isinstance(mapped, np.memmap)
    np.testing.assert_array_equal(mapped, a)
    with np.load(tmp_path / "s.npz") as z:  # an ordinary .npz as well
        np.testing.assert_array_equal(z["images"], a)
        np.testing.assert_array_equal(z["labels"], np.arange(5))
    assert not list(tmp_path.glob(".pixels-*"))


def test_cpu_batches_come_from_the_mapped_rows(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (20, 16, 16, 3), dtype=np.uint8)
    data.save_split(tmp_path / "t.npz", data.Split(images, np.arange(20)))
    split = data.load_split(tmp_path / "t.npz")
    rows = np.array([7, 3, 19, 0, 11])
    ds = DeviceDataset(split, torch.device("cpu"), [0.5] * 3, [0.25] * 3, 32, rows=rows)
    assert len(ds) == 5 and ds.labels.tolist() == rows.tolist()
    got = ds.take(torch.tensor([2, 0, 4]))
    np.testing.assert_array_equal(got.permute(0, 2, 3, 1).numpy(), images[[19, 7, 11]])
    assert ds.plain(0, 5).shape == (5, 3, 32, 32)  # upsampled 2x to the model size


def test_random_resized_crops_are_seeded_flipped_crops_at_the_model_size(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (8, 24, 24, 3), dtype=np.uint8)
    split = data.Split(images, np.arange(8))
    ds = DeviceDataset(split, torch.device("cpu"), [0.5] * 3, [0.25] * 3, 24, augment="random-resized-crop")
    idx = torch.arange(8)
    a = ds.augmented(idx, torch.Generator().manual_seed(1))
    b = ds.augmented(idx, torch.Generator().manual_seed(1))
    c = ds.augmented(idx, torch.Generator().manual_seed(2))
    assert a.shape == (8, 3, 24, 24) and torch.equal(a, b) and not torch.equal(a, c)
    lo, hi = (0 - 0.5) / 0.25, (1 - 0.5) / 0.25
    assert a.min() >= lo - 1e-5 and a.max() <= hi + 1e-5  # interpolated pixels stay in range


def test_prepare_restarts_with_transforms_at_the_first_odd_image(tmp_path: Path) -> None:
    from stages import prepare

    root = tmp_path / "raw"
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(root / split / cls / f"{i}.png")
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(root / "train" / "b" / "9.png")  # the odd one, late
    params = write_params(
        tmp_path,
        ["data=folder", f"data.raw_dir={root}", "data.calib_size=4", "calibrate.num_images=4", "model.num_classes=2"],
    )
    prepare.prepare(str(params), tmp_path / "prepared")
    meta = read_json(tmp_path / "prepared" / "meta.json")
    assert meta["image_shape"] == [32, 32, 3] and meta["augment"] == "random-resized-crop"
    assert sorted(p.name for p in (tmp_path / "prepared").iterdir()) == [
        "calib.npz", "meta.json", "test.npz", "train.npz"
    ]  # fmt: skip
    (root / "train" / "b" / "9.png").unlink()
    prepare.prepare(str(params), tmp_path / "kept")
    kept = read_json(tmp_path / "kept" / "meta.json")
    assert kept["image_shape"] == [16, 16, 3] and kept["augment"] == "pad-crop"
