"""What a run learns from: the data, how batches are drawn, and what validation selects on.

``ClassTask``: images with one class label (Siamese, triplet, proxy losses).
``AspectTask`` (training.data.aspects): images with several labels, one per aspect, and CSN triplets.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from torch.utils.data import DataLoader

from training.config import TrainConfig
from training.data.sources import Splits, input_spec_for, load_splits
from training.data.torch_data import ImageDataset, make_augment, make_edit_augment, make_loader
from training.evaluation import Embedder


class Task(Protocol):
    splits: Splits
    aspects: list[str]
    aspect_classes: list[int]  # number of values of each aspect
    selection_metric: str

    def train_loader(self, batch_kind: str, epoch: int, rank: int, world_size: int) -> DataLoader: ...

    def steps_per_epoch(self, batch_kind: str) -> int: ...

    def validate(self, embed: Embedder) -> dict[str, float]: ...

    def aspect_labels(self, split: str) -> dict[str, np.ndarray]: ...

    def test_metrics(self, embedder: Embedder) -> dict[str, Any]: ...


class ClassTask:
    """One label per image; model selection on validation MAP@R, and with the instance term on the
    mean of MAP@R and near-duplicate R@1 (both jobs: MAP@R alone would keep the early epoch where
    classes are tightest and copies least told apart)."""

    aspects: list[str] = []
    aspect_classes: list[int] = []

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        both = config.objective.instance_weight > 0 and config.eval.val_near_duplicates > 0
        self.selection_metric = "val_map_at_r_and_near_duplicate_r1" if both else "val_map_at_r"
        data = config.data
        self.splits = load_splits(data.dataset, data.data_dir, val_size=data.val_size, seed=config.seed,
                                  holdout_classes=data.holdout_classes, train_limit=data.train_limit,
                                  test_limit=data.test_limit, download=data.download,
                                  image_size=data.image_size, channels=data.channels, fit=data.fit,
                                  pad_value=data.pad_value, resample=data.resample)
        _, height, width, _ = self.splits.train.images.shape
        # The instance term needs a second, edited view of every image.
        view = make_edit_augment(config.augment, input_spec_for(self.splits.train.images, data)) if config.objective.instance_weight > 0 else None
        self.dataset = ImageDataset(self.splits.train, make_augment(config.augment, height, width), view,
                                    view_from_anchor=config.augment.view_from_anchor)

    def train_loader(self, batch_kind: str, epoch: int, rank: int = 0, world_size: int = 1) -> DataLoader:
        optim = self.config.optim
        return make_loader(self.dataset, self.splits.train.labels, batch_kind, optim.batch_size, optim.m_per_class,
                           seed=self.config.seed * 1000 + epoch, rank=rank, world_size=world_size)

    def steps_per_epoch(self, batch_kind: str) -> int:
        return max(1, len(self.dataset) // self.config.optim.batch_size)

    def validate(self, embed: Embedder) -> dict[str, float]:
        """Retrieval metrics on the validation split, keys prefixed ``val_``, and near-duplicate R@1
        (mean and worst edit) of ``eval.val_near_duplicates`` edited validation images."""
        from training.evaluation import embed_all, retrieval_metrics
        from training.evaluation.near_duplicates import validation_near_duplicates

        images = self.splits.val.images
        embeddings, _ = embed_all(embed, images, self.config.eval.batch_size)
        values = {f"val_{k}": v for k, v in retrieval_metrics(embeddings, self.splits.val.labels).items()}
        values.update(validation_near_duplicates(embed, images, embeddings, self.config.eval.val_near_duplicates,
                                                 input_spec_for(images, self.config.data)))
        if "val_near_duplicate_r1" in values:
            values["val_map_at_r_and_near_duplicate_r1"] = (values["val_map_at_r"] + values["val_near_duplicate_r1"]) / 2
        return values

    def aspect_labels(self, split: str) -> dict[str, np.ndarray]:
        """Per-aspect labels of a split, for conditional models; a class task has none."""
        return {}

    def test_metrics(self, embedder: Embedder) -> dict[str, Any]:
        """Task-specific test numbers beyond the standard ones; a class task has none."""
        return {}


def load_task(config: TrainConfig) -> Task:
    if config.data.aspects:
        from training.data.aspects import AspectTask

        return AspectTask(config)
    return ClassTask(config)
