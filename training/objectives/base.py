"""What every objective looks like to the training loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

# How the loop must sample batches for an objective:
# - "m-per-class": image batches with m images per class (pair and triplet mining needs positives);
# - "shuffled": plain shuffled image batches (classification);
# - "triplets": (anchor, close, far, aspect) triplets, the CSN way.
BatchKind = Literal["m-per-class", "shuffled", "triplets"]


@dataclass
class LossOutput:
    loss: torch.Tensor
    stats: dict[str, float] = field(default_factory=dict)


class Objective(nn.Module):
    """A loss built from parts, called with the model and one batch: ``objective(model, batch)``.

    Subclasses own any trainable parameters of their own (proxies, a classifier head), which the
    loop optimises with the model's.
    """

    batch_kind: BatchKind = "m-per-class"

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> LossOutput:  # pragma: no cover
        raise NotImplementedError
