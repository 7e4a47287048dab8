"""Class-label metric learning objectives, each a pytorch-metric-learning loss plus optional miner."""

from __future__ import annotations

from collections.abc import Callable
from typing import get_args

import torch
from pytorch_metric_learning import losses, miners
from pytorch_metric_learning.distances import CosineSimilarity, LpDistance
from torch import nn

from training.config import ObjectiveConfig, ObjectiveName
from training.objectives.base import LossOutput, Objective


class MetricObjective(Objective):
    """embedding = model(images, raw=True); loss(embedding, labels, miner(embedding, labels))."""

    def __init__(self, loss: nn.Module, miner: nn.Module | None = None, batch_kind: str = "m-per-class") -> None:
        super().__init__()
        self.loss = loss
        self.miner = miner
        self.batch_kind = batch_kind  # type: ignore[assignment]

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> LossOutput:
        return self.embedding_loss(model(batch["images"], raw=True), batch["labels"])

    def embedding_loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> LossOutput:
        stats: dict[str, float] = {}
        if self.miner is not None:
            mined = self.miner(embeddings, labels)
            stats["mined"] = float(len(mined[0]))
            loss = self.loss(embeddings, labels, mined)
        else:
            loss = self.loss(embeddings, labels)
        return LossOutput(loss, stats)


class ClassifierObjective(Objective):
    """Cross-entropy over a linear head on the embedding: the classifier-embedding baseline."""

    batch_kind = "shuffled"

    def __init__(self, num_classes: int, embedding_dim: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(embedding_dim, num_classes)
        self.loss = nn.CrossEntropyLoss()

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> LossOutput:
        return self.embedding_loss(model(batch["images"], raw=True), batch["labels"])

    def embedding_loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> LossOutput:
        logits = self.classifier(embeddings)
        loss = self.loss(logits, labels)
        accuracy = (logits.argmax(1) == labels).float().mean().item()
        return LossOutput(loss, {"train_accuracy": accuracy})


def _miner(name: str | None, margin: float) -> nn.Module | None:
    if name in (None, "", "none"):
        return None
    table: dict[str, Callable[[], nn.Module]] = {
        "triplet-semihard": lambda: miners.TripletMarginMiner(margin=margin, type_of_triplets="semihard"),
        "triplet-hard": lambda: miners.TripletMarginMiner(margin=margin, type_of_triplets="hard"),
        "triplet-all": lambda: miners.TripletMarginMiner(margin=margin, type_of_triplets="all"),
        "batch-hard": lambda: miners.BatchHardMiner(),
        "multi-similarity": lambda: miners.MultiSimilarityMiner(epsilon=0.1),
        "pair-margin": lambda: miners.PairMarginMiner(pos_margin=0.2, neg_margin=0.8),
    }
    if name not in table:
        raise ValueError(f"unknown miner {name!r}; choose one of {', '.join(table)}")
    return table[name]()


def build_metric_objective(config: ObjectiveConfig, num_classes: int, embedding_dim: int) -> Objective:
    name = config.name
    if name == "contrastive":
        # Siamese pairs formed inside each batch, on L2-normalised embeddings (distances in [0, 2]).
        loss = losses.ContrastiveLoss(pos_margin=config.pos_margin or 0.0,
                                      neg_margin=config.neg_margin if config.neg_margin is not None else 1.0,
                                      distance=LpDistance(normalize_embeddings=True))
        return MetricObjective(loss, _miner(config.miner, 0.2))
    if name == "triplet":
        margin = config.margin if config.margin is not None else 0.1
        loss = losses.TripletMarginLoss(margin=margin, distance=LpDistance(normalize_embeddings=True))
        return MetricObjective(loss, _miner(config.miner or "triplet-semihard", margin))
    if name == "multi-similarity":
        loss = losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5, distance=CosineSimilarity())
        return MetricObjective(loss, _miner(config.miner or "multi-similarity", 0.1))
    if name == "supcon":
        return MetricObjective(losses.SupConLoss(temperature=config.margin or 0.1), _miner(config.miner, 0.1))
    if name == "arcface":
        loss = losses.ArcFaceLoss(num_classes, embedding_dim, margin=config.margin or 28.6, scale=config.scale or 64)
        return MetricObjective(loss, None, batch_kind="shuffled")
    if name == "normalized-softmax":
        # The temperature is 1 / scale; ``margin`` named it before ``scale`` existed and still does.
        temperature = 1 / config.scale if config.scale else (config.margin or 0.05)
        loss = losses.NormalizedSoftmaxLoss(num_classes, embedding_dim, temperature=temperature)
        return MetricObjective(loss, None, batch_kind="shuffled")
    if name == "proxy-anchor":
        loss = losses.ProxyAnchorLoss(num_classes, embedding_dim, margin=config.margin or 0.1, alpha=32)
        return MetricObjective(loss, None, batch_kind="shuffled")
    if name == "classifier":
        return ClassifierObjective(num_classes, embedding_dim)
    raise ValueError(f"unknown objective {name!r}")


METRIC_OBJECTIVES = tuple(name for name in get_args(ObjectiveName) if name != "csn")
