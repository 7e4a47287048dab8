"""The exported model: uint8 images in, L2-normalised embeddings out (the contract's graph)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.config import ModelConfig
from training.models.backbone import Backbone


def weigh(first: torch.Tensor, second: torch.Tensor, share: float) -> torch.Tensor:
    """Two L2-normalised parts side by side, so that the dot product of two such vectors is
    (1 - share) x the first parts' cosine + share x the second parts'."""
    return torch.cat([first * (1 - share) ** 0.5, second * share ** 0.5], dim=-1)


class ConditionalMasks(nn.Module):
    """One mask over the embedding per aspect of similarity (Veit et al., CSN).

    fixed: disjoint blocks of ones, frozen. learned: a table initialised N(0.9, 0.7), ReLU'd in
    the forward pass so masks stay non-negative. With a split embedding the masks cover the class
    dimensions only and are zero on the last ``instance_dims``: an aspect ("same colour") is a
    notion of *kind*, and the instance subspace belongs to the image itself.
    """

    def __init__(self, aspects: int, dim: int, learned: bool, instance_dims: int = 0) -> None:
        super().__init__()
        self.learned = learned
        self.instance_dims = instance_dims
        masked = dim - instance_dims
        if learned:
            self.table = nn.Parameter(torch.randn(aspects, masked) * 0.7 + 0.9)
        else:
            fixed = torch.zeros(aspects, masked)
            bounds = torch.linspace(0, masked, aspects + 1).round().long()
            for a in range(aspects):
                fixed[a, bounds[a]:bounds[a + 1]] = 1.0
            self.register_buffer("table", fixed)

    def forward(self) -> torch.Tensor:
        """[A, D] non-negative masks (zero on the instance dimensions)."""
        table = F.relu(self.table) if self.learned else self.table
        if not self.instance_dims:
            return table
        return torch.cat([table, table.new_zeros(table.shape[0], self.instance_dims)], dim=1)


class EmbeddingModel(nn.Module):
    """Normalises the contract's uint8 NHWC input inside the graph, so no consumer can drift."""

    def __init__(self, backbone: Backbone, embedding_dim: int, mean: list[float], std: list[float],
                 masks: ConditionalMasks | None = None, instance_dims: int = 0, instance_share: float = 0.0) -> None:
        super().__init__()
        if instance_dims and not 0 < instance_dims < embedding_dim:
            raise ValueError("instance_dims must leave class dimensions")
        if masks is not None and masks.instance_dims != instance_dims:
            raise ValueError("the masks must leave out exactly the instance dimensions")
        # Two jobs, two subspaces: the first D - k dimensions learn the class, the last k the image
        # itself; the served embedding weighs them so that its cosine is
        # (1 - share) * class cosine + share * instance cosine.
        self.instance_dims, self.instance_share = instance_dims, instance_share
        self.backbone = backbone
        self.head = nn.Linear(backbone.out_channels, embedding_dim)
        self.masks = masks
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("inv_std", 1.0 / torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    @property
    def embedding_dim(self) -> int:
        return self.head.out_features

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [N, H, W, C] -> raw (unnormalised) embedding [N, D]."""
        x = images.permute(0, 3, 1, 2).float() * (1.0 / 255.0)
        return self.head(self.backbone((x - self.mean) * self.inv_std))

    def aspect_features(self, features: torch.Tensor) -> torch.Tensor:
        """Raw embedding [N, D] -> masked, unnormalised [N, A, D]."""
        assert self.masks is not None, "model has no aspects"
        return features.unsqueeze(1) * self.masks().unsqueeze(0)

    def forward(self, images: torch.Tensor, raw: bool = False):
        """Export path (``raw=False``): L2-normalised ``embedding`` [N, D], plus ``aspect_embeddings``
        [N, A, D] for conditional models.

        Training path (``raw=True``): the unnormalised embedding [N, D], plus the masks [A, D] for
        conditional models. Losses go through forward, so DistributedDataParallel sees every use.
        """
        features = self.features(images)
        if raw:
            return features if self.masks is None else (features, self.masks())
        if self.instance_dims:
            k = self.instance_dims
            embedding = weigh(F.normalize(features[:, :-k], dim=-1), F.normalize(features[:, -k:], dim=-1),
                              self.instance_share)
        else:
            embedding = F.normalize(features, dim=-1)
        if self.masks is None:
            return embedding
        return embedding, F.normalize(self.aspect_features(features), dim=-1)


def build_model(config: ModelConfig, in_channels: int, mean: list[float], std: list[float],
                aspects: int = 0, trunk_weights: bool = True) -> EmbeddingModel:
    """The network ``config`` describes; ``mean`` and ``std`` normalise its input in the graph (a
    pretrained trunk takes ImageNet's, whatever is passed). ``trunk_weights=False`` skips loading a
    pretrained trunk's weights (a checkpoint's will replace them)."""
    layer_options = {"predictor": config.predictor, "predictor_width": config.predictor_width or None,
                     "rank": config.rank, "sphere_activation": config.sphere_activation}
    if config.trunk == "small-cnn":
        backbone: nn.Module = Backbone(in_channels, config.widths, config.depth, config.layer, config.ns_per_stage,
                                       config.residual, config.ns_last_stages, antialias=config.antialias,
                                       **layer_options)
    else:
        from training.models.trunks import IMAGENET_MEAN, IMAGENET_STD, PretrainedTrunk

        backbone = PretrainedTrunk(config.trunk, config.trunk_weights if trunk_weights else "none", config.head_layer,
                                   config.freeze_bn, in_channels, **layer_options)
        # One channel is repeated to three inside the trunk, so it takes the mean grey's statistics.
        mean = IMAGENET_MEAN if in_channels == 3 else [sum(IMAGENET_MEAN) / 3]
        std = IMAGENET_STD if in_channels == 3 else [sum(IMAGENET_STD) / 3]
    masks = None
    if config.masks != "none":
        if aspects < 1:
            raise ValueError("masks need at least one aspect (data.aspects)")
        masks = ConditionalMasks(aspects, config.embedding_dim, learned=config.masks == "learned",
                                 instance_dims=config.instance_dims)
    return EmbeddingModel(backbone, config.embedding_dim, mean, std, masks, config.instance_dims, config.instance_share)
