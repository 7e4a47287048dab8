"""Loaders for the standard dataset formats, on small files written here, and the split logic."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.data.arrays import stratified_split
from training.data.formats import DatasetFormatError, read_idx
from training.data.sources import DatasetNotFound, folder_input_spec, load_raw, load_splits, read_image_folder


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def make_mnist_folder(root: Path, n_train: int, n_test: int, compress: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        write_idx(root / f"{prefix}-images-idx3-ubyte", images, compress)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", labels, compress)
        arrays[prefix] = (images, labels)
    return arrays


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_files_load_exactly(tmp_path, compress):
    written = make_mnist_folder(tmp_path, 40, 20, compress)
    train, test = load_raw("mnist", str(tmp_path))
    assert train.images.shape == (40, 28, 28, 1) and test.images.shape == (20, 28, 28, 1)
    np.testing.assert_array_equal(train.images[..., 0], written["train"][0])
    np.testing.assert_array_equal(test.labels, written["t10k"][1])
    assert train.classes == [str(i) for i in range(10)]


def test_torchvision_raw_layout_is_found(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    make_mnist_folder(raw, 10, 10, compress=False)
    train, _ = load_raw("mnist", str(tmp_path))
    assert len(train) == 10


def test_bad_idx_files_give_clear_errors(tmp_path):
    bad = tmp_path / "x-images-idx3-ubyte"
    bad.write_bytes(b"\x12\x34\x56\x78" + b"\x00" * 20)
    with pytest.raises(DatasetFormatError, match="bad magic"):
        read_idx(bad)
    short = tmp_path / "y-images-idx3-ubyte"
    short.write_bytes(bytes([0, 0, 8, 3]) + (5).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\x00" * 100)
    with pytest.raises(DatasetFormatError, match="expected 3920 bytes"):
        read_idx(short)
    with pytest.raises(DatasetNotFound, match="--data-dir"):
        load_raw("mnist", None)


def write_cifar(root: Path, variant: str, per_batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    if variant == "cifar10":
        folder, names, label_key = root / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], b"labels"
        meta = ("batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
        classes = 10
    else:
        folder, names, label_key = root / "cifar-100-python", ["train", "test"], b"fine_labels"
        meta = ("meta", {b"fine_label_names": [f"f{i}".encode() for i in range(100)]})
        classes = 100
    folder.mkdir(parents=True)
    written = {}
    for name in names:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = list(rng.integers(0, classes, per_batch))
        with (folder / name).open("wb") as handle:
            pickle.dump({b"data": data, label_key: labels}, handle)
        written[name] = data
    with (folder / meta[0]).open("wb") as handle:
        pickle.dump(meta[1], handle)
    return written


@pytest.mark.parametrize("variant,train_files", [("cifar10", 5), ("cifar100", 1)])
def test_cifar_pickles_load_as_hwc(tmp_path, variant, train_files):
    written = write_cifar(tmp_path, variant, per_batch=6)
    train, test = load_raw(variant, str(tmp_path))
    assert train.images.shape == (6 * train_files, 32, 32, 3) and test.images.shape == (6, 32, 32, 3)
    first = next(iter(written.values()))[0]
    # CIFAR rows are planar (all red, then green, then blue); the contract is HWC.
    np.testing.assert_array_equal(train.images[0, :, :, 0].ravel(), first[:1024])
    np.testing.assert_array_equal(train.images[0, :, :, 2].ravel(), first[2048:])
    assert len(train.classes) == (10 if variant == "cifar10" else 100)


def test_image_folder_goes_through_the_contract(tmp_path):
    for cls, value in (("cats", 30), ("dogs", 220)):
        for split in ("train", "test"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(np.full((40, 60, 3), value, np.uint8)).save(tmp_path / split / cls / f"{i}.png")
    train, test = load_raw("folder", str(tmp_path), image_size=32, channels=3)
    assert train.images.shape == (6, 32, 32, 3) and train.classes == ["cats", "dogs"]
    assert len(test) == 6
    # 'pad' fit: the 60x40 images are letterboxed, so the top row is background and the centre is the value.
    assert train.images[0, 0, 0, 0] == 0 and train.images[0, 16, 16, 0] == 30


def test_image_folder_reads_every_file_index_load_sends(tmp_path):
    # A catalogue loaded into the index with `likeness index load` can be trained on as it is: both
    # take contract.IMAGE_FILE_SUFFIXES, every one of which Pillow writes and the contract reads.
    from contract import IMAGE_FILE_SUFFIXES
    from service.jobs import iter_images

    formats = {".png": ("PNG", "RGB"), ".jpg": ("JPEG", "RGB"), ".jpeg": ("JPEG", "RGB"), ".bmp": ("BMP", "RGB"),
               ".gif": ("GIF", "RGB"), ".webp": ("WEBP", "RGB"), ".tif": ("TIFF", "RGB"), ".tiff": ("TIFF", "RGB"),
               ".pbm": ("PPM", "1"), ".pgm": ("PPM", "L"), ".ppm": ("PPM", "RGB")}
    assert set(formats) == set(IMAGE_FILE_SUFFIXES)
    (tmp_path / "shoes").mkdir()
    for suffix, (kind, mode) in formats.items():
        image = Image.fromarray(np.full((20, 20, 3), 200, np.uint8)).convert(mode)
        image.save(tmp_path / "shoes" / f"a{suffix.upper() if suffix == '.ppm' else suffix}", format=kind)
    (tmp_path / "shoes" / "notes.txt").write_text("not an image")
    images = read_image_folder(tmp_path, folder_input_spec(16, 3))
    assert images.images.shape == (len(formats), 16, 16, 3) and images.classes == ["shoes"]
    assert len(list(iter_images(tmp_path))) == len(formats)


def test_stratified_split_is_balanced_and_deterministic():
    labels = np.repeat(np.arange(4), [100, 100, 50, 50])
    rest, held = stratified_split(labels, 60, seed=3)
    assert len(held) == 60 and len(np.intersect1d(rest, held)) == 0 and len(rest) + len(held) == 300
    counts = np.bincount(labels[held])
    assert counts.tolist() == [20, 20, 10, 10]
    np.testing.assert_array_equal(held, stratified_split(labels, 60, seed=3)[1])


def test_holdout_classes_never_reach_train_or_validation():
    holdout = ["coat", "shirt", "sneaker", "ankle boot"]
    splits = load_splits("fashion-mnist", val_size=5000, seed=0, holdout_classes=holdout)
    held_idx = splits.train.class_indices(holdout)
    for part in (splits.train, splits.val):
        assert not np.isin(part.labels, held_idx).any()
    assert not np.isin(splits.test.labels, held_idx).any()
    assert set(np.unique(splits.test_unseen.labels)) == set(held_idx)
    assert len(splits.test_unseen) == 4000 and len(splits.test) == 6000
    assert len(splits.train) + len(splits.val) == 36000
