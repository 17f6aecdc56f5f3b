"""stages/lib/data/prepared.py and its torch twin stages/lib/data/torchdata.py, on tiny fake data."""

from __future__ import annotations

import io
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stages.lib.data import inputs, rawdata
from stages.lib.data import prepared as data
from stages.lib.data.prepared import DatasetError

MEAN = [0.4914, 0.4822, 0.4465]
STD = [0.2470, 0.2435, 0.2616]


# -- builders for every accepted layout ----------------------------------------------------


def _fake_batches(seed: int = 0) -> dict[str, dict]:
    """data_batch_1..5 (3 images each) and test_batch (4 images), CIFAR's own format."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, n in [*((f"data_batch_{i}", 3) for i in range(1, 6)), ("test_batch", 4)]:
        out[name] = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"batch_label": name.encode(),
        }
    return out


def _expected_nhwc(rows: np.ndarray) -> np.ndarray:
    # CIFAR rows: 1024 red, then 1024 green, then 1024 blue, each row-major 32x32
    n = rows.shape[0]
    out = np.empty((n, 32, 32, 3), np.uint8)
    for c in range(3):
        out[..., c] = rows[:, c * 1024 : (c + 1) * 1024].reshape(n, 32, 32)
    return out


def _write_pickle_dir(folder: Path, batches: dict[str, dict]) -> None:
    folder.mkdir(parents=True)
    for name, batch in batches.items():
        (folder / name).write_bytes(pickle.dumps(batch))


def _add_to_tar(tar: tarfile.TarFile, name: str, blob: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(blob)
    tar.addfile(info, io.BytesIO(blob))


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="PNG")
    return buf.getvalue()


CLASSES = ("zebra", "apple", "moose")  # deliberately not in sorted order


def _tree_images(seed: int = 1) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """{split: {class: {filename: image}}}: 2 train / 1 test image per class."""
    rng = np.random.default_rng(seed)
    tree: dict[str, dict[str, dict[str, np.ndarray]]] = {"train": {}, "test": {}}
    for split, n in (("train", 2), ("test", 1)):
        for cls in CLASSES:
            # file names out of order too: b before a
            names = [f"{'ba'[i]}_{cls}.png" for i in range(n)]
            tree[split][cls] = {nm: rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for nm in names}
    return tree


def _write_tree(root: Path, tree) -> None:
    for split, classes in tree.items():
        for cls, files in classes.items():
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for name, arr in files.items():
                (root / split / cls / name).write_bytes(_png(arr))


def _expected_split(tree, split: str) -> tuple[np.ndarray, np.ndarray]:
    classes = sorted(tree[split])
    images, labels = [], []
    for k, cls in enumerate(classes):
        for name in sorted(tree[split][cls]):
            images.append(tree[split][cls][name])
            labels.append(k)
    return np.stack(images), np.array(labels)


def _check_tree_dataset(ds: data.RawDataset, tree) -> None:
    assert ds.classes == ("apple", "moose", "zebra")
    assert ds.synthetic is False
    for split in ("train", "test"):
        want_images, want_labels = _expected_split(tree, split)
        got: data.Split = getattr(ds, split)
        assert got.images.dtype == np.uint8 and got.images.shape == want_images.shape
        np.testing.assert_array_equal(got.images, want_images)
        np.testing.assert_array_equal(got.labels, want_labels)
        assert got.labels.dtype == np.int64


# -- load_raw: pickled batches -------------------------------------------------------------


def test_load_raw_pickle_folder(tmp_path: Path) -> None:
    batches = _fake_batches()
    _write_pickle_dir(tmp_path / "cifar-10-batches-py", batches)
    ds = rawdata.load_raw(tmp_path)
    train_rows = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    train_labels = sum((batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    assert ds.train.images.shape == (15, 32, 32, 3)
    assert ds.train.images.dtype == np.uint8
    np.testing.assert_array_equal(ds.train.images, _expected_nhwc(train_rows))
    np.testing.assert_array_equal(ds.train.labels, train_labels)
    np.testing.assert_array_equal(ds.test.images, _expected_nhwc(batches["test_batch"][b"data"]))
    np.testing.assert_array_equal(ds.test.labels, batches["test_batch"][b"labels"])
    assert ds.classes == rawdata.CIFAR10_CLASSES
    assert ds.source.startswith("pickle:") and ds.synthetic is False
    # spot check one pixel against the raw layout: image 0 of test, row 5, column 7, green
    assert ds.test.images[0, 5, 7, 1] == batches["test_batch"][b"data"][0, 1024 + 5 * 32 + 7]


def test_load_raw_pickle_tar(tmp_path: Path) -> None:
    batches = _fake_batches(seed=7)
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        for name, batch in batches.items():
            _add_to_tar(tar, f"cifar-10-batches-py/{name}", pickle.dumps(batch))
        _add_to_tar(tar, "cifar-10-batches-py/readme.html", b"<html/>")
    ds = rawdata.load_raw(tmp_path)
    train_rows = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    np.testing.assert_array_equal(ds.train.images, _expected_nhwc(train_rows))
    np.testing.assert_array_equal(ds.test.labels, batches["test_batch"][b"labels"])
    assert ds.source == f"pickle:{tmp_path / 'cifar-10-python.tar.gz'}"


def test_pickle_folder_takes_precedence_over_image_tree(tmp_path: Path) -> None:
    _write_pickle_dir(tmp_path / "cifar-10-batches-py", _fake_batches())
    _write_tree(tmp_path, _tree_images())
    assert rawdata.load_raw(tmp_path).source.startswith("pickle:")
    assert rawdata.load_raw(tmp_path, source="folder").source.startswith("folder:")


def test_corrupt_pickle_raises_dataset_error_naming_file(tmp_path: Path) -> None:
    batches = _fake_batches()
    _write_pickle_dir(tmp_path / "cifar-10-batches-py", batches)
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(b"\x80\x04this is not a pickle")
    with pytest.raises(DatasetError) as err:
        rawdata.load_raw(tmp_path)
    assert str(bad) in str(err.value)
    assert "not a readable CIFAR-10 batch" in str(err.value)


def test_truncated_pickle_raises_dataset_error(tmp_path: Path) -> None:
    _write_pickle_dir(tmp_path / "cifar-10-batches-py", _fake_batches())
    f = tmp_path / "cifar-10-batches-py" / "test_batch"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(DatasetError, match="test_batch"):
        rawdata.load_raw(tmp_path)


def test_missing_batch_file_is_named(tmp_path: Path) -> None:
    _write_pickle_dir(tmp_path / "cifar-10-batches-py", _fake_batches())
    (tmp_path / "cifar-10-batches-py" / "data_batch_5").unlink()
    with pytest.raises(DatasetError, match="data_batch_5 is missing"):
        rawdata.load_raw(tmp_path)


def test_pickle_rows_of_wrong_length(tmp_path: Path) -> None:
    batches = _fake_batches()
    batches["test_batch"][b"data"] = np.zeros((4, 100), np.uint8)
    _write_pickle_dir(tmp_path / "cifar-10-batches-py", batches)
    with pytest.raises(DatasetError, match="expected rows of 3072 bytes"):
        rawdata.load_raw(tmp_path)


def test_pickle_batch_lacking_labels(tmp_path: Path) -> None:
    batches = _fake_batches()
    del batches["data_batch_2"][b"labels"]
    _write_pickle_dir(tmp_path / "cifar-10-batches-py", batches)
    with pytest.raises(DatasetError, match="lacks key"):
        rawdata.load_raw(tmp_path)


def test_pickle_that_is_not_a_dict_raises_dataset_error(tmp_path: Path) -> None:
    batches = _fake_batches()
    _write_pickle_dir(tmp_path / "cifar-10-batches-py", batches)
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DatasetError, match="cifar-10-batches-py"):
        rawdata.load_raw(tmp_path)


def test_pickle_label_count_mismatch_raises(tmp_path: Path) -> None:
    batches = _fake_batches()
    batches["test_batch"][b"labels"] = batches["test_batch"][b"labels"][:-1]
    _write_pickle_dir(tmp_path / "cifar-10-batches-py", batches)
    with pytest.raises(DatasetError, match="label"):
        rawdata.load_raw(tmp_path)


def test_pickle_tar_lacking_batches(tmp_path: Path) -> None:
    batches = _fake_batches()
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        _add_to_tar(tar, "cifar-10-batches-py/data_batch_1", pickle.dumps(batches["data_batch_1"]))
    with pytest.raises(DatasetError) as err:
        rawdata.load_raw(tmp_path)
    msg = str(err.value)
    assert "cifar-10-python.tar.gz" in msg
    assert "data_batch_2" in msg and "test_batch" in msg and "data_batch_1," not in msg


def test_pickle_tar_that_is_not_a_tar(tmp_path: Path) -> None:
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"definitely not gzip")
    with pytest.raises(DatasetError, match="cifar-10-python.tar.gz: not a readable .tar.gz"):
        rawdata.load_raw(tmp_path)


# -- load_raw: image-folder trees ----------------------------------------------------------


def test_load_raw_image_tree_at_top(tmp_path: Path) -> None:
    tree = _tree_images()
    _write_tree(tmp_path, tree)
    ds = rawdata.load_raw(tmp_path)
    _check_tree_dataset(ds, tree)
    assert ds.source == f"folder:{tmp_path}"


def test_load_raw_image_tree_one_folder_down(tmp_path: Path) -> None:
    tree = _tree_images(seed=3)
    _write_tree(tmp_path / "cifar10", tree)
    (tmp_path / "notes.txt").write_text("ignored")
    ds = rawdata.load_raw(tmp_path, source="folder")
    _check_tree_dataset(ds, tree)
    assert ds.source == f"folder:{tmp_path / 'cifar10'}"


def test_image_tree_ignores_non_image_files(tmp_path: Path) -> None:
    tree = _tree_images()
    _write_tree(tmp_path, tree)
    (tmp_path / "train" / "apple" / "README.txt").write_text("not an image")
    _check_tree_dataset(rawdata.load_raw(tmp_path), tree)


@pytest.mark.parametrize("top", ["", "cifar10-jpg/", "./"])
def test_load_raw_image_tree_archive(tmp_path: Path, top: str) -> None:
    tree = _tree_images(seed=5)
    archive = tmp_path / "cifar10-png.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        # add in reverse order: the loader must sort, not rely on the archive's order
        for split in ("test", "train"):
            for cls in reversed(CLASSES):
                for name, arr in tree[split][cls].items():
                    _add_to_tar(tar, f"{top}{split}/{cls}/{name}", _png(arr))
    ds = rawdata.load_raw(tmp_path)
    _check_tree_dataset(ds, tree)
    assert ds.source == f"folder-archive:{archive}"


def test_images_of_other_sizes_are_transformed_to_the_model_size(tmp_path: Path) -> None:
    tree = _tree_images()
    odd = np.random.default_rng(1).integers(0, 256, (28, 40, 3), dtype=np.uint8)
    tree["train"]["moose"]["a_moose.png"] = odd
    _write_tree(tmp_path, tree)
    ds = rawdata.load_raw(tmp_path, image_size=32)
    assert ds.train.images.shape[1:] == (32, 32, 3) and ds.test.images.shape[1:] == (32, 32, 3)
    # training storage: the shorter side (28) to 32, then the centre 32x32
    from stages.lib.data.transforms import train_transform

    moose = ds.classes.index("moose")
    first_moose = int(np.flatnonzero(ds.train.labels == moose)[0])
    np.testing.assert_array_equal(ds.train.images[first_moose], train_transform(odd, 32))


def test_unreadable_image_is_named(tmp_path: Path) -> None:
    tree = _tree_images()
    _write_tree(tmp_path, tree)
    (tmp_path / "test" / "apple" / "b_apple.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"test/apple/b_apple\.png: not a readable image"):
        rawdata.load_raw(tmp_path)


def test_prepare_shuffles_a_class_sorted_test_split_the_same_way_every_time(tmp_path: Path) -> None:
    from stages import prepare
    from tests.conftest import write_params

    rng = np.random.default_rng(0)
    tree: dict[str, dict[str, dict[str, np.ndarray]]] = {"train": {}, "test": {}}
    for cls in CLASSES:
        for split, n in (("train", 2), ("test", 8)):
            tree[split][cls] = {f"{i}.png": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for i in range(n)}
    _write_tree(tmp_path / "raw", tree)
    params = write_params(
        tmp_path, ["data=cifar10", f"data.raw_dir={tmp_path / 'raw'}", "data.calib_size=4", "calibrate.num_images=4"]
    )
    outs = []
    for k in range(2):
        prepare.prepare(str(params), tmp_path / f"out{k}")
        outs.append(data.load_split(tmp_path / f"out{k}" / "test.npz"))
    sorted_images, sorted_labels = _expected_split(tree, "test")  # the tree's own (class-sorted) order
    got = outs[0]
    assert not np.array_equal(got.labels, sorted_labels)
    assert len(set(got.labels[:6].tolist())) > 1  # a prefix holds more than one class
    # the same images with the same labels, only reordered
    pairs = sorted((lbl, img.tobytes()) for img, lbl in zip(got.images, got.labels, strict=True))
    expected = sorted((lbl, img.tobytes()) for img, lbl in zip(sorted_images, sorted_labels, strict=True))
    assert pairs == expected
    np.testing.assert_array_equal(outs[1].images, got.images)  # deterministic (params.seed)
    meta = json.loads((tmp_path / "out0" / "meta.json").read_text())
    assert meta["test_order"].startswith("shuffled")


def test_grayscale_image_is_converted_to_rgb(tmp_path: Path) -> None:
    tree = _tree_images()
    _write_tree(tmp_path, tree)
    gray = np.arange(1024, dtype=np.uint16).reshape(32, 32).astype(np.uint8)
    Image.fromarray(gray, "L").save(tmp_path / "test" / "zebra" / "b_zebra.png")  # replaces it
    ds = rawdata.load_raw(tmp_path)
    np.testing.assert_array_equal(ds.test.images[-1], np.repeat(gray[..., None], 3, axis=2))


def test_train_and_test_classes_differ(tmp_path: Path) -> None:
    tree = _tree_images()
    tree["test"]["horse"] = tree["test"].pop("moose")
    _write_tree(tmp_path, tree)
    with pytest.raises(DatasetError) as err:
        rawdata.load_raw(tmp_path)
    msg = str(err.value)
    assert "class folders differ" in msg
    assert "apple, moose, zebra" in msg and "apple, horse, zebra" in msg


def test_tree_archive_train_and_test_classes_differ(tmp_path: Path) -> None:
    tree = _tree_images()
    archive = tmp_path / "x.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        for split in ("train", "test"):
            for cls in CLASSES[: 3 if split == "train" else 2]:
                for name, arr in tree[split][cls].items():
                    _add_to_tar(tar, f"{split}/{cls}/{name}", _png(arr))
    with pytest.raises(DatasetError, match=r"x\.tgz: train/ and test/ class folders differ"):
        rawdata.load_raw(tmp_path)


def test_empty_raw_dir_names_folder_and_layouts(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    with pytest.raises(DatasetError) as err:
        rawdata.load_raw(raw)
    msg = str(err.value)
    assert f"{raw}/" in msg
    assert "holds: nothing" in msg
    for layout in (
        "cifar-10-batches-py/",
        "cifar-10-python.tar.gz",
        "train/<class>/",
        "test/<class>/",
        ".tar.gz of such a tree",
    ):
        assert layout in msg
    assert "data.download=auto" in msg


def test_raw_dir_with_unrelated_files_lists_them(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "other").mkdir()
    with pytest.raises(DatasetError, match=r"it holds: notes\.txt, other"):
        rawdata.load_raw(tmp_path)


def test_missing_raw_dir(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="holds: nothing"):
        rawdata.load_raw(tmp_path / "does-not-exist")


# -- calibration_indices -------------------------------------------------------------------


def test_calibration_indices_deterministic_unique_in_range() -> None:
    a = data.calibration_indices(1000, 100, seed=3)
    b = data.calibration_indices(1000, 100, seed=3)
    c = data.calibration_indices(1000, 100, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == (100,)
    assert len(np.unique(a)) == 100
    assert a.min() >= 0 and a.max() < 1000
    assert np.all(np.diff(a) > 0)  # sorted


def test_calibration_indices_whole_split() -> None:
    np.testing.assert_array_equal(data.calibration_indices(50, 50, seed=0), np.arange(50))


def test_calibration_indices_too_large() -> None:
    with pytest.raises(DatasetError, match=r"data.calib_size=101 exceeds the 100 training images"):
        data.calibration_indices(100, 101, seed=0)


# -- preprocess ----------------------------------------------------------------------------


def _images(n: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def test_preprocess_layout_and_values() -> None:
    imgs = _images()
    x = inputs.preprocess(imgs, MEAN, STD, 32)
    assert x.dtype == np.float32 and x.shape == (3, 3, 32, 32)
    assert x.flags["C_CONTIGUOUS"]
    for c in range(3):
        want = (imgs[:, :, :, c].astype(np.float64) / 255 - MEAN[c]) / STD[c]
        np.testing.assert_allclose(x[:, c], want, rtol=0, atol=1e-5)
    # extremes
    white = inputs.preprocess(np.full((1, 32, 32, 3), 255, np.uint8), [0.5] * 3, [0.25] * 3, 32)
    black = inputs.preprocess(np.zeros((1, 32, 32, 3), np.uint8), [0.5] * 3, [0.25] * 3, 32)
    np.testing.assert_allclose(white, 2.0, atol=1e-6)
    np.testing.assert_allclose(black, -2.0, atol=1e-6)


def test_preprocess_upsamples_by_nearest_repeat() -> None:
    imgs = _images(2)
    x32 = inputs.preprocess(imgs, MEAN, STD, 32)
    x64 = inputs.preprocess(imgs, MEAN, STD, 64)
    assert x64.shape == (2, 3, 64, 64) and x64.dtype == np.float32
    for dy in (0, 1):
        for dx in (0, 1):
            np.testing.assert_array_equal(x64[:, :, dy::2, dx::2], x32)
    x224 = inputs.preprocess(imgs[:1], MEAN, STD, 224)
    assert x224.shape == (1, 3, 224, 224)
    np.testing.assert_array_equal(x224[:, :, 13::7, 6::7], x32[:1, :, 1:, :])  # 13 // 7 == 1


@pytest.mark.parametrize("size", [48, 16, 33])
def test_preprocess_rejects_non_multiple_size(size: int) -> None:
    with pytest.raises(DatasetError, match=f"model input {size} is not a multiple of the image size 32"):
        inputs.preprocess(_images(1), MEAN, STD, size)


def test_model_batches_in_order_last_one_smaller_unless_dropped() -> None:
    imgs = _images(5)
    spec = inputs.float_input(32)
    got = list(inputs.model_batches(imgs, spec, MEAN, STD, 2))
    assert [len(b) for b in got] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate(got), inputs.preprocess(imgs, MEAN, STD, 32))
    assert [len(b) for b in inputs.model_batches(imgs, spec, MEAN, STD, 2, drop_last=True)] == [2, 2]


# -- torch twin ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [32, 224])
def test_device_dataset_normalise_equals_preprocess(size: int) -> None:
    import torch

    from stages.lib.data.torchdata import DeviceDataset

    imgs = _images(4, seed=11)
    ds = DeviceDataset(data.Split(imgs, np.arange(4)), torch.device("cpu"), MEAN, STD, size)
    got = ds.normalise(ds.take(torch.arange(4))).numpy()
    want = inputs.preprocess(imgs, MEAN, STD, size)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ds.plain(1, 3).numpy(), want[1:3], rtol=0, atol=1e-6)


def _crop_matches(crop: np.ndarray, padded_norm: np.ndarray, pad: int) -> list[tuple[int, int, bool]]:
    hw = crop.shape[-1]
    found = []
    for oy in range(2 * pad + 1):
        for ox in range(2 * pad + 1):
            window = padded_norm[:, oy : oy + hw, ox : ox + hw]
            if np.array_equal(crop, window):
                found.append((oy, ox, False))
            if np.array_equal(crop, window[:, :, ::-1]):
                found.append((oy, ox, True))
    return found


def test_device_dataset_augmented_crops_and_flips() -> None:
    import torch

    from stages.lib.data.torchdata import DeviceDataset

    n = 16
    imgs = _images(n, seed=2)
    ds = DeviceDataset(data.Split(imgs, np.arange(n)), torch.device("cpu"), MEAN, STD, 32, pad=4)
    idx = torch.tensor([3, 0, 7, 7, 15, 1, 2, 4, 5, 6, 8, 9, 10, 11, 12, 13])
    out = ds.augmented(idx, torch.Generator().manual_seed(0))
    assert out.shape == (16, 3, 32, 32) and out.dtype == torch.float32
    out_np = out.numpy()

    # every output is a (possibly flipped) 32x32 window of the zero-padded, normalised image
    padded = np.pad(imgs, ((0, 0), (4, 4), (4, 4), (0, 0)))
    padded_norm = ds.normalise(torch.from_numpy(padded).permute(0, 3, 1, 2)).numpy()
    flips, offsets = set(), set()
    for k, i in enumerate(idx.tolist()):
        matches = _crop_matches(out_np[k], padded_norm[i], 4)
        assert matches, f"output {k} is not a crop of image {i}"
        flips.add(matches[0][2])
        offsets.add(matches[0][:2])
    assert flips == {True, False}, "16 draws with p=0.5 should include flipped and unflipped crops"
    assert len(offsets) > 1, "offsets should vary"

    # deterministic with a fixed generator, different with another seed
    again = ds.augmented(idx, torch.Generator().manual_seed(0))
    torch.testing.assert_close(again, out, rtol=0, atol=0)
    other = ds.augmented(idx, torch.Generator().manual_seed(1))
    assert not torch.equal(other, out)


def test_device_dataset_augmented_without_pad_is_plain_or_flipped() -> None:
    import torch

    from stages.lib.data.torchdata import DeviceDataset

    imgs = _images(6, seed=9)
    ds = DeviceDataset(data.Split(imgs, np.arange(6)), torch.device("cpu"), MEAN, STD, 32, pad=0)
    out = ds.augmented(torch.arange(6), torch.Generator().manual_seed(3)).numpy()
    plain = ds.plain(0, 6).numpy()
    for k in range(6):
        assert np.array_equal(out[k], plain[k]) or np.array_equal(out[k], plain[k][:, :, ::-1])


def _zero_boxes(out: np.ndarray) -> list[tuple[int, int, int, int] | None]:
    """Per image of (B, 3, H, W): the box (top, left, height, width) of its exact zeros, checking
    that they are the same in every channel and fill the box (a rectangle); None when no zeros."""
    boxes: list[tuple[int, int, int, int] | None] = []
    for k, img in enumerate(out):
        zero = img == 0.0
        assert (zero == zero[0]).all(), f"image {k}: the zeroed pixels differ between channels"
        rows, cols = np.flatnonzero(zero[0].any(1)), np.flatnonzero(zero[0].any(0))
        if not rows.size:
            boxes.append(None)
            continue
        top, left = int(rows[0]), int(cols[0])
        h, w = int(rows[-1]) - top + 1, int(cols[-1]) - left + 1
        assert zero[0, top : top + h, left : left + w].all() and zero[0].sum() == h * w, (
            f"image {k}: the zeroed pixels are not one filled rectangle"
        )
        boxes.append((top, left, h, w))
    return boxes


def _check_cutout_boxes(boxes: list, size: int, cutout: int) -> None:
    """Every image has one square of at most cutout x cutout, clipped only at the borders."""
    assert all(b is not None for b in boxes), "every image gets a Cutout square"
    for top, left, h, w in boxes:
        for start, extent in ((top, h), (left, w)):
            # the centre lies in the image, so at least half the square is always left
            assert cutout // 2 <= extent <= cutout, boxes
            if extent < cutout:  # clipped: the square runs into the top/left or bottom/right edge
                assert start == 0 or start + extent == size, (start, extent)
    assert any(h == w == cutout for _, _, h, w in boxes), "some squares should lie fully inside"
    assert any(h < cutout or w < cutout for _, _, h, w in boxes), "some squares should be clipped"


def _matches_a_crop_outside(img: np.ndarray, keep: np.ndarray, padded_norm: np.ndarray, pad: int) -> bool:
    hw = img.shape[-1]
    for oy in range(2 * pad + 1):
        for ox in range(2 * pad + 1):
            window = padded_norm[:, oy : oy + hw, ox : ox + hw]
            for cand in (window, window[:, :, ::-1]):
                if np.array_equal(img[:, keep], cand[:, keep]):
                    return True
    return False


def test_device_dataset_cutout_zeroes_one_square_per_image() -> None:
    import torch

    from stages.lib.data.torchdata import DeviceDataset

    n = 64
    imgs = _images(n, seed=5)
    ds = DeviceDataset(data.Split(imgs, np.arange(n)), torch.device("cpu"), MEAN, STD, 32, pad=4)
    idx = torch.arange(n)

    # without Cutout nothing is exactly 0 (no uint8 value normalises to 0 with these mean/std,
    # and padding normalises to -mean/std), so the zeros below are the Cutout squares
    plain = ds.augmented(idx, torch.Generator().manual_seed(0), cutout=0).numpy()
    assert not (plain == 0.0).any()
    assert _zero_boxes(plain) == [None] * n
    torch.testing.assert_close(
        ds.augmented(idx, torch.Generator().manual_seed(0)), torch.from_numpy(plain), rtol=0, atol=0
    )  # cutout=0 is the default

    out = ds.augmented(idx, torch.Generator().manual_seed(0), cutout=16).numpy()
    assert out.shape == (n, 3, 32, 32) and out.dtype == np.float32
    boxes = _zero_boxes(out)
    _check_cutout_boxes(boxes, 32, 16)
    # outside its square each image is still a (possibly flipped) crop of the padded image
    padded = np.pad(imgs, ((0, 0), (4, 4), (4, 4), (0, 0)))
    padded_norm = ds.normalise(torch.from_numpy(padded).permute(0, 3, 1, 2)).numpy()
    for k, (top, left, h, w) in enumerate(boxes):
        keep = np.ones((32, 32), bool)
        keep[top : top + h, left : left + w] = False
        assert _matches_a_crop_outside(out[k], keep, padded_norm[k], 4), f"image {k}"
    # the squares move from image to image
    assert len({b[:2] for b in boxes}) > n // 4


def test_device_dataset_cutout_scales_with_upsampling() -> None:
    import torch

    from stages.lib.data.torchdata import DeviceDataset

    n = 64
    imgs = _images(n, seed=6)
    split = data.Split(imgs, np.arange(n))
    ds32 = DeviceDataset(split, torch.device("cpu"), MEAN, STD, 32, pad=4)
    ds64 = DeviceDataset(split, torch.device("cpu"), MEAN, STD, 64, pad=4)
    idx = torch.arange(n)
    assert not (ds64.augmented(idx, torch.Generator().manual_seed(1), cutout=0).numpy() == 0.0).any()

    out = ds64.augmented(idx, torch.Generator().manual_seed(1), cutout=16).numpy()
    assert out.shape == (n, 3, 64, 64)
    boxes = _zero_boxes(out)
    _check_cutout_boxes(boxes, 64, 32)  # 2x upsampling: squares of at most 32x32
    # whole source pixels: the square starts and ends on the 2x2 grid
    assert all(v % 2 == 0 for box in boxes for v in box)
    # the same draws at 32x32, upsampled nearest: Cutout happens at image resolution
    small = ds32.augmented(idx, torch.Generator().manual_seed(1), cutout=16).numpy()
    np.testing.assert_array_equal(out, small.repeat(2, axis=2).repeat(2, axis=3))


# -- synthetic -------------------------------------------------------------------------------


def test_cutmix_pastes_one_box_from_shuffled_images_and_weights_labels_by_area() -> None:
    import torch

    from stages.lib.data.torchdata import cutmix

    n = 16
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 32, 32).contiguous()
    original = x.clone()
    y = torch.arange(n)
    seen_kept = []
    for seed in range(20):
        mixed, y_pasted, kept = cutmix(x, y, torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed))
        assert mixed.shape == x.shape and torch.equal(x, original)  # the input is left alone
        assert sorted(y_pasted.tolist()) == list(range(n))  # a permutation of the batch's labels
        for k in range(n):
            pasted = mixed[k] != x[k]
            if y_pasted[k] == y[k]:  # paired with itself: nothing visible changes
                assert not pasted.any()
                continue
            # the pasted pixels are image y_pasted[k]'s, in one box shared by every channel
            assert torch.equal(mixed[k][pasted], x[int(y_pasted[k])][pasted])
            rows, cols = pasted[0].any(1).nonzero().flatten(), pasted[0].any(0).nonzero().flatten()
            area = 0 if not len(rows) else (int(rows[-1]) - int(rows[0]) + 1) * (int(cols[-1]) - int(cols[0]) + 1)
            assert int(pasted[0].sum()) == area
            assert kept == pytest.approx(1 - area / (32 * 32))
        seen_kept.append(kept)
    assert all(0.0 <= k <= 1.0 for k in seen_kept) and max(seen_kept) - min(seen_kept) > 0.3  # boxes vary


def test_synthetic_shapes_and_labels() -> None:
    ds = data.synthetic(60, 20, 5, seed=0)
    assert ds.train.images.shape == (60, 32, 32, 3) and ds.train.images.dtype == np.uint8
    assert ds.test.images.shape == (20, 32, 32, 3)
    assert ds.train.labels.dtype == np.int64
    assert set(ds.train.labels.tolist()) <= set(range(5))
    assert ds.synthetic is True and ds.source == "synthetic"
    assert ds.classes == tuple(f"class{i}" for i in range(5))
    again = data.synthetic(60, 20, 5, seed=0)
    np.testing.assert_array_equal(again.train.images, ds.train.images)
    assert not np.array_equal(data.synthetic(60, 20, 5, seed=1).train.images, ds.train.images)


def test_synthetic_is_learnable() -> None:
    ds = data.synthetic(400, 200, 10, seed=0)
    x_tr = ds.train.images.reshape(400, -1).astype(np.float32)
    x_te = ds.test.images.reshape(200, -1).astype(np.float32)
    centroids = np.stack([x_tr[ds.train.labels == k].mean(0) for k in range(10)])
    # class templates differ a lot
    dists = np.linalg.norm(centroids[:, None] - centroids[None], axis=-1)
    assert dists[~np.eye(10, dtype=bool)].min() > 1000
    # a nearest-centroid classifier trained on train generalises to test
    pred = np.argmin(((x_te[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (pred == ds.test.labels).mean() > 0.95


# -- save_split / load_split -------------------------------------------------------------------


def test_save_and_load_split_round_trip(tmp_path: Path) -> None:
    split = data.Split(_images(4), np.array([3, 1, 4, 1]))
    data.save_split(tmp_path / "s.npz", split)
    back = data.load_split(tmp_path / "s.npz")
    np.testing.assert_array_equal(back.images, split.images)
    np.testing.assert_array_equal(back.labels, split.labels)
    assert back.labels.dtype == np.int64 and len(back) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"]


def test_load_split_missing_says_run_dvc_repro(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as err:
        data.load_split(tmp_path / "test.npz")
    assert str(tmp_path / "test.npz") in str(err.value)
    assert "run `dvc repro prepare`" in str(err.value)


def test_load_split_garbage_names_file(tmp_path: Path) -> None:
    path = tmp_path / "train.npz"
    path.write_bytes(b"garbage" * 20)
    with pytest.raises(DatasetError) as err:
        data.load_split(path)
    assert str(path) in str(err.value) and "not a prepared split" in str(err.value)
    assert "dvc repro -f prepare" in str(err.value)


def test_load_split_empty_file_raises_dataset_error(tmp_path: Path) -> None:
    path = tmp_path / "train.npz"
    path.write_bytes(b"")
    with pytest.raises(DatasetError, match="not a prepared split"):
        data.load_split(path)


def test_load_split_wrong_keys(tmp_path: Path) -> None:
    np.savez(tmp_path / "x.npz", pictures=_images(1), labels=np.zeros(1))
    with pytest.raises(DatasetError, match=r"x\.npz: not a prepared split"):
        data.load_split(tmp_path / "x.npz")


def test_load_split_wrong_dtype_and_count(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", images=_images(2).astype(np.float32), labels=np.zeros(2))
    with pytest.raises(DatasetError, match="expected uint8 NHWC images"):
        data.load_split(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", images=_images(2), labels=np.zeros(3))
    with pytest.raises(DatasetError, match="2 images but 3 labels"):
        data.load_split(tmp_path / "b.npz")


def test_load_split_npy_payload_raises_dataset_error(tmp_path: Path) -> None:
    path = tmp_path / "test.npz"
    with open(path, "wb") as f:
        np.save(f, _images(2))
    with pytest.raises(DatasetError, match="not a prepared split"):
        data.load_split(path)


def test_training_with_cutmix_on_every_batch_mixes_each_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import stages.lib.model.training
    import stages.train
    from stages.lib.core.config import params_from_dict
    from stages.lib.data.torchdata import cutmix
    from tests.conftest import TINY, compose

    calls = []
    monkeypatch.setattr(stages.lib.model.training, "cutmix", lambda *a: calls.append(1) or cutmix(*a))
    p = params_from_dict(compose([*TINY, "train.epochs=2", "train.cutmix=1.0", "train.batch_size=32"]))
    ds = data.synthetic(64, 32, p.model.num_classes, seed=0)
    done = stages.train.train(p, ds.train, ds.test, torch.device("cpu"))
    assert len(calls) == 2 * 64 // 32  # every batch of both epochs
    assert [row["epoch"] for row in done.history] == [1, 2] and done.images_per_s > 0
    assert all(np.isfinite(row["train_loss"]) for row in done.history)
    # 0.0 never mixes
    calls.clear()
    off = params_from_dict(compose([*TINY, "train.epochs=1", "train.cutmix=0.0", "train.batch_size=32"]))
    stages.train.train(off, ds.train, ds.test, torch.device("cpu"))
    assert off.train.cutmix == 0.0 and calls == []
