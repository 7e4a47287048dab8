"""Torch datasets and loaders over :class:`LabeledImages`, in the contract's uint8 HWC layout."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from pytorch_metric_learning.samplers import MPerClassSampler
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import v2

from training.config import AugmentConfig
from training.data.arrays import LabeledImages

Transform = Callable[[torch.Tensor], torch.Tensor]


def make_augment(config: AugmentConfig, height: int, width: int) -> Transform | None:
    """Train-time augmentation on uint8 CHW tensors: padded random crop, horizontal flip, random erasing."""
    steps: list[Transform] = []
    if config.crop_padding:
        steps.append(v2.RandomCrop((height, width), padding=config.crop_padding))
    if config.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if config.erasing:
        steps.append(v2.RandomErasing(p=config.erasing, scale=(0.02, 0.25), value=0))
    return v2.Compose(steps) if steps else None


class ImageDataset(Dataset):
    """Yields {"images": uint8 [H, W, C], "labels": int64}; augmentation works on CHW and converts back."""

    def __init__(self, data: LabeledImages, augment: Transform | None = None) -> None:
        self.data = data
        self.augment = augment

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image = torch.from_numpy(self.data.images[index])
        if self.augment is not None:
            image = self.augment(image.permute(2, 0, 1)).permute(1, 2, 0)
        return {"images": image.contiguous(), "labels": torch.tensor(int(self.data.labels[index]))}


class ShardedSampler(Sampler[int]):
    """Give rank r of w every w-th index of the wrapped sampler's order (distributed training)."""

    def __init__(self, sampler: Sampler[int], rank: int, world_size: int) -> None:
        self.sampler, self.rank, self.world_size = sampler, rank, world_size

    def __iter__(self):
        order = list(self.sampler)
        usable = len(order) - len(order) % self.world_size
        return iter(order[self.rank:usable:self.world_size])

    def __len__(self) -> int:
        return len(self.sampler) // self.world_size


def samples_per_class(batch_size: int, wanted: int, classes: int) -> int:
    """The m closest to ``wanted`` that MPerClassSampler accepts: m divides the batch, m·classes ≥ batch."""
    floor = max(wanted, -(-batch_size // classes))
    return next(m for m in range(floor, batch_size + 1) if batch_size % m == 0)


def make_loader(dataset: Dataset, labels: np.ndarray, batch_kind: str, batch_size: int, m_per_class: int,
                seed: int, rank: int = 0, world_size: int = 1) -> DataLoader:
    """Batches for an objective's ``batch_kind``; every rank sees a disjoint shard of one global order.

    The global order depends only on the seed (set per epoch by the loop), so all ranks agree on it
    and a resumed run replays the same batches.
    """
    per_rank = batch_size // world_size
    if batch_kind == "m-per-class":
        m = samples_per_class(batch_size, m_per_class, len(np.unique(labels)))
        base: Sampler[int] = MPerClassSampler(labels, m, batch_size=batch_size, length_before_new_iter=len(labels))
    elif batch_kind == "shuffled":
        base = torch.utils.data.RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    else:
        raise ValueError(f"no image loader for batch kind {batch_kind!r}")
    sampler = ShardedSampler(base, rank, world_size) if world_size > 1 else base
    return DataLoader(dataset, batch_size=per_rank, sampler=sampler, drop_last=True, num_workers=0)
