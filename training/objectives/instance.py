"""The instance term: keep *which image* in the embedding while a class loss teaches *which kind*.

Each image comes in two views (the second edited the way copies of an image are edited, see
``training.data.torch_data.make_edit_augment``), and a loss over the batch makes each view's
partner its nearest neighbour:

- ``ntxent`` (Chen et al., 2020): pulls the two views together against every other view. Exactly
  pytorch-metric-learning's ``NTXentLoss`` with the image index as the label
  (tests/training/test_near_duplicates.py holds the two equal), written as one cross-entropy over the
  batch's similarity matrix because the library's form took about 1.5 s a step for 512 embeddings
  on two CPU cores.
- ``margin``: a triplet margin with the partner as the positive and every other view as a negative
  (:class:`InstanceMarginLoss`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.objectives.base import LossOutput, Objective


class InstanceContrastiveLoss(nn.Module):
    """NT-Xent over two aligned views: ``loss(a, b)`` with ``a[i]`` and ``b[i]`` views of image i."""

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        n = len(a)
        z = F.normalize(torch.cat([a, b]), dim=1)
        logits = (z @ z.T) / self.temperature
        # An embedding is never its own negative (nor positive).
        logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
        partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
        return F.cross_entropy(logits, partner)


class InstanceMarginLoss(nn.Module):
    """A margin on cosines: each view must be nearer its paired view than any other image in the batch
    by ``margin``; images already that far cost nothing, so unlike NT-Xent it does not push images of
    one class apart once they are out of the way (classes stay compact, pair scores stay high).

    Equal to pytorch-metric-learning's ``TripletMarginLoss(margin, distance=CosineSimilarity())``
    with the image index as the label and all triplets (tested); one masked matrix instead of the
    library's triplet list, which took 0.5 s a step for 512 embeddings on two CPU cores.
    """

    def __init__(self, margin: float = 0.1) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        n = len(a)
        z = F.normalize(torch.cat([a, b]), dim=1)
        similarity = z @ z.T
        partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
        positive = similarity.gather(1, partner[:, None])
        negative = torch.ones_like(similarity, dtype=torch.bool)
        negative.fill_diagonal_(False)
        negative[torch.arange(2 * n, device=z.device), partner] = False
        violation = F.relu(similarity - positive + self.margin) * negative
        # Mean over the violating triplets (the library's AvgNonZeroReducer).
        return violation.sum() / (violation > 0).sum().clamp(min=1)


def build_instance_loss(name: str, temperature: float, margin: float) -> nn.Module:
    if name == "ntxent":
        return InstanceContrastiveLoss(temperature)
    if name == "margin":
        return InstanceMarginLoss(margin)
    raise ValueError(f"unknown instance loss {name!r}; choose ntxent or margin")


class InstanceAwareObjective(Objective):
    """A class-level objective on both views, plus ``weight`` x the instance term between them."""

    def __init__(self, inner: Objective, instance: nn.Module, weight: float, instance_dims: int = 0) -> None:
        super().__init__()
        # With a split embedding the class loss sees the first D - k dimensions, the instance term the last k.
        self.instance_dims = instance_dims
        if not hasattr(inner, "embedding_loss"):
            raise ValueError(f"{type(inner).__name__} cannot take an instance term (it draws its own batches)")
        self.inner, self.instance, self.weight = inner, instance, weight
        self.batch_kind = inner.batch_kind  # type: ignore[assignment]

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> LossOutput:
        n = len(batch["images"])
        embeddings = model(torch.cat([batch["images"], batch["images_view"]]), raw=True)
        k = self.instance_dims
        classes, own = (embeddings[:, :-k], embeddings[:, -k:]) if k else (embeddings, embeddings)
        out = self.inner.embedding_loss(classes, batch["labels"].repeat(2))
        instance = self.instance(own[:n], own[n:])
        stats = {**out.stats, "class_loss": float(out.loss.detach()), "instance_loss": float(instance.detach())}
        return LossOutput(out.loss + self.weight * instance, stats)
