"""Torch datasets and loaders over :class:`LabeledImages`, in the contract's uint8 HWC layout."""

from __future__ import annotations

import io
import math
import random
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from pytorch_metric_learning.samplers import MPerClassSampler
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import v2

from contract import InputSpec, prepare_image
from training.config import AugmentConfig
from training.data.arrays import LabeledImages
from training.data.random_edits import random_user_edit
from training.evaluation.edits import jpeg

Transform = Callable[[torch.Tensor], torch.Tensor]


def make_augment(config: AugmentConfig, height: int, width: int) -> Transform | None:
    """Train-time augmentation on uint8 CHW tensors: a random resized crop (photos) or a padded random
    crop, horizontal flip, colour jitter and greyscale (colour images), random erasing."""
    steps: list[Transform] = []
    if config.crop_scale:
        steps.append(v2.RandomResizedCrop((height, width), scale=(config.crop_scale, 1.0), antialias=True))
    elif config.crop_padding:
        steps.append(v2.RandomCrop((height, width), padding=config.crop_padding))
    if config.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if config.color_jitter:
        jitter = config.color_jitter
        steps.append(v2.RandomApply([v2.ColorJitter(jitter, jitter, jitter, jitter / 4)], p=0.8))
    if config.grayscale:
        steps.append(v2.RandomGrayscale(p=config.grayscale))
    if config.erasing:
        steps.append(v2.RandomErasing(p=config.erasing, scale=(0.02, 0.25), value=0))
    return v2.Compose(steps) if steps else None


class RandomResolution(nn.Module):
    """Scale an image down by a random factor in [min_scale, 1] and back up to its size: the blur of a
    re-upload at a smaller size, or of an upscaled copy prepared back to the model's size."""

    def __init__(self, min_scale: float) -> None:
        super().__init__()
        self.min_scale = min_scale

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        scale = float(torch.empty(1).uniform_(self.min_scale, 1.0))
        small = (max(1, round(height * scale)), max(1, round(width * scale)))
        down = v2.functional.resize(image, list(small), antialias=True)
        return v2.functional.resize(down, [height, width], antialias=True)


def size_relative_blur(height: int, width: int) -> v2.GaussianBlur:
    """A Gaussian blur of sigma 0.3 to 1.2 x the longest side / 28 pixels: the unit of
    training.evaluation.edits.blurred, so that a 128-pixel photo meets the measured blur (0.8) as a
    28-pixel garment does. The user edits' own blur is one kind among many; photos lose more to it."""
    unit = max(height, width) / 28
    sigma = (0.3 * unit, 1.2 * unit)
    kernel = 2 * math.ceil(3 * sigma[1]) + 1
    return v2.GaussianBlur(kernel, sigma)


class UserEdit(nn.Module):
    """One or two of the edits users make (borders, rotations, a side cut off, overlays, blur and
    sharpening: training.evaluation.edits.random_user_edit) on the image as a file's pixels, then
    prepared back to the model's input by the contract, exactly as the service prepares an upload."""

    def __init__(self, spec: InputSpec) -> None:
        super().__init__()
        self.spec = spec

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        # Drawn from torch's generator, so the loader's seeding governs it as it does the other steps.
        rng = random.Random(int(torch.randint(2**31 - 1, ())))
        array = image.permute(1, 2, 0).numpy()
        picture = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
        edited = prepare_image(random_user_edit(picture, rng), self.spec)
        return torch.from_numpy(edited.copy()).permute(2, 0, 1)


class RandomJpeg(nn.Module):
    """A JPEG re-save at a random quality, by Pillow as the measured edits save theirs (torchvision's
    own encoder is deprecated, and warns on every image)."""

    def __init__(self, min_quality: int, max_quality: int) -> None:
        super().__init__()
        self.qualities = (min_quality, max_quality)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        quality = int(torch.randint(self.qualities[0], self.qualities[1] + 1, ()))
        array = image.permute(1, 2, 0).numpy()
        picture = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
        decoded = np.asarray(Image.open(io.BytesIO(jpeg(picture, quality))))
        return torch.from_numpy(decoded.reshape(array.shape).copy()).permute(2, 0, 1)


def make_edit_augment(config: AugmentConfig, spec: InputSpec) -> Transform:
    """The second view for the instance term: the usual crop and flip, then the edits a copy of an
    image meets on its way back to the service (training.evaluation.edits lists the measured ones):
    the edits users make (``edit_user`` of the views), resolution changes, a small crop resized back,
    brightness and contrast, JPEG."""
    height, width = spec.height, spec.width
    # From the anchor view (view_from_anchor), the crop, flip and colour are already there: a copy
    # keeps its colours, and a mirror is one of its edits.
    base = make_augment(config, height, width) if not config.view_from_anchor else (
        v2.RandomHorizontalFlip() if config.hflip else None)
    steps: list[Transform] = [base] if base is not None else []
    if config.edit_user:
        steps.append(v2.RandomApply([UserEdit(spec)], p=config.edit_user))
    if config.edit_blur:
        steps.append(v2.RandomApply([size_relative_blur(height, width)], p=config.edit_blur))
    steps += [
        v2.RandomApply([RandomResolution(config.edit_min_scale)], p=0.5),
        v2.RandomApply([v2.RandomResizedCrop((height, width), scale=(0.8, 1.0), ratio=(0.9, 1.1), antialias=True)],
                       p=config.edit_zoom),
        v2.RandomApply([v2.ColorJitter(brightness=config.edit_color, contrast=config.edit_color)], p=0.8),
        v2.RandomApply([RandomJpeg(config.edit_jpeg_min_quality, 95)], p=0.5),
    ]
    return v2.Compose(steps)


class ImageDataset(Dataset):
    """Yields {"images": uint8 [H, W, C], "labels": int64}; augmentation works on CHW and converts back.

    With ``view_augment``, each item also has ``images_view``: a second, independently augmented
    view of the same image (the positive of the instance term), or with ``view_from_anchor`` the
    first view augmented again.
    """

    def __init__(self, data: LabeledImages, augment: Transform | None = None,
                 view_augment: Transform | None = None, view_from_anchor: bool = False) -> None:
        self.data = data
        self.augment = augment
        self.view_augment = view_augment
        self.view_from_anchor = view_from_anchor

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image = torch.from_numpy(self.data.images[index])
        item = {"images": _apply(self.augment, image), "labels": torch.tensor(int(self.data.labels[index]))}
        if self.view_augment is not None:
            item["images_view"] = _apply(self.view_augment, item["images"] if self.view_from_anchor else image)
        return item


def _apply(augment: Transform | None, image: torch.Tensor) -> torch.Tensor:
    """Run a CHW augmentation on an HWC uint8 image."""
    if augment is None:
        return image.contiguous()
    return augment(image.permute(2, 0, 1)).permute(1, 2, 0).contiguous()


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
