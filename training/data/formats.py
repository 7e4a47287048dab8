"""Readers for the standard on-disk formats of MNIST-style and CIFAR datasets, and image folders.

torchvision's own dataset classes insist on unpacked files in their own layout and verify MD5s
of the official archives, so they cannot read Debian's gzipped copies or a user's small files.
These readers take the same formats from any folder.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

from training.data.arrays import LabeledImages

# IDX type codes (http://yann.lecun.com/exdb/mnist/): only unsigned bytes occur in image sets.
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DatasetFormatError(ValueError):
    """A file exists but is not in the format its name promises."""


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (MNIST format), gzipped or not."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DatasetFormatError(f"{path}: not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim < 1 or len(data) < header:
        raise DatasetFormatError(f"{path}: IDX header is truncated")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise DatasetFormatError(f"{path}: expected {expected} bytes of data for shape {shape}, found {len(data) - header}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def find_idx_pair(folder: Path, prefix: str) -> tuple[Path, Path] | None:
    """Locate ``{prefix}-images-idx3-ubyte[.gz]`` and its labels, also in torchvision's ``*/raw`` layout."""
    candidates = [folder, *sorted(folder.glob("*/raw"))]
    for base in candidates:
        for suffix in ("", ".gz"):
            images = base / f"{prefix}-images-idx3-ubyte{suffix}"
            labels = base / f"{prefix}-labels-idx1-ubyte{suffix}"
            if images.is_file() and labels.is_file():
                return images, labels
    return None


def read_idx_split(folder: Path, prefix: str, classes: list[str]) -> LabeledImages:
    pair = find_idx_pair(folder, prefix)
    if pair is None:
        raise FileNotFoundError(f"no {prefix}-images-idx3-ubyte[.gz] with its labels in {folder}")
    images, labels = read_idx(pair[0]), read_idx(pair[1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DatasetFormatError(f"{pair[0]}: images {images.shape} and labels {labels.shape} do not match")
    if labels.size and int(labels.max()) >= len(classes):
        raise DatasetFormatError(f"{pair[1]}: label {int(labels.max())} out of range for {len(classes)} classes")
    return LabeledImages(images[:, :, :, None].copy(), labels.astype(np.int64), list(classes))


def read_cifar_split(folder: Path, variant: str, train: bool) -> LabeledImages:
    """Read CIFAR-10 (``cifar-10-batches-py``) or CIFAR-100 (``cifar-100-python``) python pickles."""
    if variant == "cifar10":
        base = _first_existing(folder, "cifar-10-batches-py")
        names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
        meta_file, label_key, names_key = "batches.meta", b"labels", b"label_names"
    elif variant == "cifar100":
        base = _first_existing(folder, "cifar-100-python")
        names = ["train"] if train else ["test"]
        meta_file, label_key, names_key = "meta", b"fine_labels", b"fine_label_names"
    else:
        raise ValueError(f"unknown CIFAR variant {variant!r}")
    chunks, labels = [], []
    for name in names:
        batch = _unpickle(base / name)
        if b"data" not in batch or label_key not in batch:
            raise DatasetFormatError(f"{base / name}: missing b'data' or {label_key!r}")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072:
            raise DatasetFormatError(f"{base / name}: data must be [N, 3072], got {data.shape}")
        chunks.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    meta = _unpickle(base / meta_file)
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[names_key]]
    return LabeledImages(np.ascontiguousarray(np.concatenate(chunks)), np.concatenate(labels), classes)


def _first_existing(folder: Path, child: str) -> Path:
    return folder / child if (folder / child).is_dir() else folder


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"missing CIFAR file {path}")
    with path.open("rb") as handle:
        try:
            # The official CIFAR pickles hold only dicts, lists, bytes and numpy arrays.
            return pickle.load(handle, encoding="bytes")
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing here
            raise DatasetFormatError(f"{path}: not a CIFAR python pickle ({exc})") from exc
