"""Named datasets and their train / validation / test splits.

Every dataset comes out as :class:`LabeledImages` in the contract's uint8 [N, H, W, C] layout.
Validation is carved out of the training split (seeded, stratified) and is what thresholds and
calibration are fitted on; the test split is only ever evaluated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from contract import InputSpec, load_image_file, prepare_image
from contract.images import CONTENT_FITS
from training.config import DataConfig
from training.data.arrays import LabeledImages, stratified_split
from training.data.formats import find_idx_pair, read_cifar_split, read_idx_split

FASHION_MNIST_CLASSES = [
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
]  # fmt: skip
# Where the data comes from and under which licence: cards, galleries and the demo catalogue credit it.
FASHION_MNIST_CREDIT = (
    "Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017, Zalando Research), MIT licence: "
    "https://github.com/zalandoresearch/fashion-mnist"
)
MNIST_CLASSES = [str(i) for i in range(10)]
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_CACHE = Path(os.environ.get("LIKENESS_CACHE_DIR", Path.home() / ".cache" / "likeness"))


class DatasetNotFound(FileNotFoundError):
    """The dataset is not on this machine; the message says how to get it."""


@dataclass
class Splits:
    train: LabeledImages
    val: LabeledImages
    test: LabeledImages
    # Test images of classes held out of training (open-set evaluation); None without a holdout.
    test_unseen: LabeledImages | None = None
    holdout_classes: tuple[str, ...] = ()


def folder_input_spec(image_size: int = 0, channels: int = 0, fit: str = "pad", pad_value: int = 0,
                      resample: str = "bilinear") -> InputSpec:
    """How a user's photos become model input: ``image_size`` square (0 = 64), ``channels`` (0 = 3),
    resized with ``fit`` (pad with grey ``pad_value``, crop or stretch) and the ``resample`` filter."""
    size = image_size or 64
    return InputSpec(height=size, width=size, channels=channels or 3, fit=fit, pad_value=pad_value,
                     resample=resample)


def input_spec_for(images: np.ndarray, data: DataConfig | None = None) -> InputSpec:
    """The model's input: the training images' size and channels, prepared with the data config's
    fit, pad grey level and filter (what the service then does to every upload)."""
    _, height, width, channels = images.shape
    data = data or DataConfig()
    return InputSpec(height=height, width=width, channels=channels, fit=data.fit, resample=data.resample,
                     pad_value=data.pad_value)


def framed(data: LabeledImages, fit: str) -> LabeledImages:
    """A data set stored as arrays of the model's size, prepared as the service prepares an upload
    of them: only the content fits change them (contract.images.frame_content)."""
    return data if fit not in CONTENT_FITS else LabeledImages(framed_images(data.images, fit), data.labels, data.classes)


def framed_images(images: np.ndarray, fit: str) -> np.ndarray:
    """uint8 [N, H, W, C] images through :func:`contract.prepare_image` at their own size with ``fit``
    (only the content fits change them)."""
    if fit not in CONTENT_FITS:
        return images
    _, height, width, channels = images.shape
    spec = InputSpec(height=height, width=width, channels=channels, fit=fit)
    return np.stack([prepare_image(Image.fromarray(image[:, :, 0] if channels == 1 else image), spec)
                     for image in images])


def load_raw(dataset: str, data_dir: str | None = None, *, download: bool = False,
             image_size: int = 0, channels: int = 0, fit: str = "pad", pad_value: int = 0,
             resample: str = "bilinear") -> tuple[LabeledImages, LabeledImages]:
    """Return the dataset's official (train, test) splits; image folders are prepared as
    :func:`folder_input_spec` says, array data sets framed with ``fit`` (:func:`framed`)."""
    if dataset == "folder":
        folder = _require_dir(data_dir, "folder", "one sub-folder per class (optionally under train/ and test/)")
        return read_image_folder_splits(folder, folder_input_spec(image_size, channels, fit, pad_value, resample))
    train, test = _load_arrays(dataset, data_dir, download)
    return framed(train, fit), framed(test, fit)


def _load_arrays(dataset: str, data_dir: str | None, download: bool) -> tuple[LabeledImages, LabeledImages]:
    """An array data set's (train, test) splits as stored, before any framing."""
    if dataset == "fashion-mnist":
        folder = _fashion_mnist_folder(data_dir, download)
        return read_idx_split(folder, "train", FASHION_MNIST_CLASSES), read_idx_split(folder, "t10k", FASHION_MNIST_CLASSES)
    if dataset == "mnist":
        folder = _require_dir(data_dir, "mnist", "a folder with train-/t10k-images-idx3-ubyte[.gz] and labels")
        return read_idx_split(folder, "train", MNIST_CLASSES), read_idx_split(folder, "t10k", MNIST_CLASSES)
    if dataset in ("cifar10", "cifar100"):
        folder = _require_dir(data_dir, dataset, "the extracted python version of the dataset")
        return read_cifar_split(folder, dataset, True), read_cifar_split(folder, dataset, False)
    raise ValueError(f"unknown dataset {dataset!r}; use fashion-mnist, mnist, cifar10, cifar100 or folder")


def load_splits(dataset: str, data_dir: str | None = None, *, val_size: int = 5000, seed: int = 0,
                holdout_classes: list[str] | tuple[str, ...] = (), train_limit: int = 0, test_limit: int = 0,
                download: bool = False, image_size: int = 0, channels: int = 0, fit: str = "pad",
                pad_value: int = 0, resample: str = "bilinear") -> Splits:
    """Load a dataset and split it; held-out classes never reach train or validation.

    Validation takes ``val_size`` training images, or a fifth of them when that is fewer
    (:func:`validation_size`); ``len(splits.val)`` is the number really used.
    """
    # An array data set is framed after the split and the limits: framing is per image, so the
    # images kept come out the same, and a limited run does not frame the 70,000 it leaves out.
    frame_later = dataset != "folder"
    train, test = (_load_arrays(dataset, data_dir, download) if frame_later else
                   load_raw(dataset, data_dir, image_size=image_size, channels=channels, fit=fit,
                            pad_value=pad_value, resample=resample))
    holdout = list(holdout_classes)
    test_unseen = None
    if holdout:
        train = train.with_classes(holdout, keep=False)
        test_unseen = test.with_classes(holdout, keep=True)
        test = test.with_classes(holdout, keep=False)
    if train_limit and train_limit < len(train):
        _, keep = stratified_split(train.labels, train_limit, seed + 1)
        train = train.subset(keep)
    rest, val_idx = stratified_split(train.labels, validation_size(val_size, len(train)), seed)
    if test_limit:
        test = _limit(test, test_limit, seed + 2)
        test_unseen = _limit(test_unseen, test_limit, seed + 3) if test_unseen is not None else None
    splits = Splits(train.subset(rest), train.subset(val_idx), test, test_unseen, tuple(holdout))
    if frame_later:
        splits = Splits(framed(splits.train, fit), framed(splits.val, fit), framed(splits.test, fit),
                        framed(test_unseen, fit) if test_unseen is not None else None, tuple(holdout))
    return splits


def validation_size(asked: int, train_images: int) -> int:
    """The validation images really held out: ``asked``, but never more than a fifth of the training
    images, so that most of a small catalogue is still trained on."""
    return min(asked, train_images // 5)


def _limit(data: LabeledImages, n: int, seed: int) -> LabeledImages:
    if n >= len(data):
        return data
    _, keep = stratified_split(data.labels, n, seed)
    return data.subset(keep)


def read_image_folder_splits(root: Path, spec: InputSpec, test_fraction: float = 0.2,
                             seed: int = 0) -> tuple[LabeledImages, LabeledImages]:
    """A user's image folder: ``root/CLASS/*.jpg``, or ``root/train/CLASS`` and ``root/test/CLASS``."""
    if (root / "train").is_dir() and (root / "test").is_dir():
        train = read_image_folder(root / "train", spec)
        test = read_image_folder(root / "test", spec, classes=train.classes)
        return train, test
    everything = read_image_folder(root, spec)
    rest, held = stratified_split(everything.labels, max(1, int(len(everything) * test_fraction)), seed)
    return everything.subset(rest), everything.subset(held)


def read_image_folder(root: Path, spec: InputSpec, classes: list[str] | None = None) -> LabeledImages:
    """Read ``root/CLASS/IMAGE`` through the contract's preprocessing, so training sees what the service sees."""
    from torchvision.datasets.folder import make_dataset

    from contract import IMAGE_FILE_SUFFIXES

    found = sorted(d.name for d in root.iterdir() if d.is_dir())
    classes = classes or found
    if not classes:
        raise DatasetNotFound(f"{root}: no class sub-folders")
    class_to_idx = {name: i for i, name in enumerate(classes)}
    extensions = IMAGE_FILE_SUFFIXES  # the files `likeness index load` sends, no more, no fewer
    samples = make_dataset(str(root), {c: class_to_idx[c] for c in found if c in class_to_idx},
                           extensions=extensions, allow_empty=True)
    if not samples:
        raise DatasetNotFound(f"{root}: no images with extensions {', '.join(extensions)}")
    images = np.stack([load_image_file(path, spec) for path, _ in samples])
    labels = np.array([label for _, label in samples], dtype=np.int64)
    return LabeledImages(images, labels, list(classes))


def _fashion_mnist_folder(data_dir: str | None, download: bool) -> Path:
    candidates = [Path(data_dir)] if data_dir else []
    env = os.environ.get("LIKENESS_FASHION_MNIST_DIR")
    candidates += [Path(env)] if env else []
    candidates += [DEBIAN_FASHION_MNIST, DEFAULT_CACHE / "fashion-mnist"]
    for folder in candidates:
        if folder.is_dir() and find_idx_pair(folder, "train") and find_idx_pair(folder, "t10k"):
            return folder
    if download:
        from torchvision.datasets import FashionMNIST

        target = DEFAULT_CACHE / "fashion-mnist"
        for train in (True, False):
            FashionMNIST(str(target), train=train, download=True)
        return target
    looked = ", ".join(str(c) for c in candidates)
    raise DatasetNotFound(
        "Fashion-MNIST not found (looked in " + looked + "). Install it with "
        "`sudo apt-get install dataset-fashion-mnist`, pass --data-dir DIR holding "
        "train-images-idx3-ubyte.gz and friends, or pass --download where the network allows."
    )


def _require_dir(data_dir: str | None, dataset: str, what: str) -> Path:
    if not data_dir:
        raise DatasetNotFound(f"dataset {dataset!r} needs --data-dir pointing at {what}")
    folder = Path(data_dir)
    if not folder.is_dir():
        raise DatasetNotFound(f"dataset {dataset!r}: {folder} is not a folder ({what} expected)")
    return folder
