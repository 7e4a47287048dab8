"""In-memory labelled images in the contract's layout (uint8 [N, H, W, C])."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class LabeledImages:
    images: np.ndarray  # uint8 [N, H, W, C]
    labels: np.ndarray  # int64 [N], indices into ``classes``
    classes: list[str]

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, H, W, C], got {self.images.dtype} {self.images.shape}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> LabeledImages:
        return LabeledImages(self.images[index], self.labels[index], self.classes)

    def class_indices(self, names: list[str]) -> list[int]:
        unknown = [n for n in names if n not in self.classes]
        if unknown:
            raise ValueError(f"unknown classes {unknown}; this dataset has {self.classes}")
        return [self.classes.index(n) for n in names]

    def with_classes(self, names: list[str], keep: bool) -> LabeledImages:
        """Keep (or drop) exactly the images whose class is in ``names``."""
        mask = np.isin(self.labels, self.class_indices(names))
        return self.subset(np.flatnonzero(mask if keep else ~mask))


def stratified_split(labels: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (rest, held) with ``size`` held items spread evenly over the classes."""
    rng = np.random.default_rng(seed)
    if size <= 0:
        return np.arange(len(labels)), np.array([], dtype=np.int64)
    if size >= len(labels):
        raise ValueError(f"cannot hold out {size} of {len(labels)} items")
    held: list[np.ndarray] = []
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.floor(counts / counts.sum() * size).astype(int)
    # Hand out the rounding remainder to the largest classes, deterministically.
    for i in np.argsort(-counts)[: size - quota.sum()]:
        quota[i] += 1
    for cls, n in zip(classes, quota):
        members = np.flatnonzero(labels == cls)
        held.append(rng.choice(members, size=n, replace=False))
    held_idx = np.sort(np.concatenate(held))
    rest = np.setdiff1d(np.arange(len(labels)), held_idx, assume_unique=True)
    return rest, held_idx
