"""A pixel subspace beside the learned embedding: the images' projection on the training images'
principal components, L2-normalised, appended with a share of the cosine.

Why: on kinds of thing never trained on, raw pixels (and their PCA) keep information a class-trained
network throws away; the learned embedding alone ties with them there (docs/openset.md), while on the
trained kinds it is far ahead. Appended with a small share, the served cosine is
(1 - share) x learned cosine + share x pixel-PCA cosine, and gains on both (models/default.md).
The basis is fitted on the training split at export, so it never sees a test or held-out image.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.models.embedding import weigh

# The PCA is fitted on at most this many training images, drawn with this seed: 12,000 images of
# 784 pixels take a second, and more do not move the leading components measurably.
PCA_SAMPLE = 12_000
PCA_SEED = 0


def fit_pixel_pca(images: np.ndarray, dims: int, sample: int = PCA_SAMPLE,
                  seed: int = PCA_SEED) -> tuple[np.ndarray, np.ndarray]:
    """The mean [F] and the leading ``dims`` principal directions [F, dims] of uint8 images
    [N, H, W, C], scaled to [0, 1] and flattened as the graph flattens them (NHWC order)."""
    flat = images.reshape(len(images), -1)
    if dims < 1 or dims > min(flat.shape):
        raise ValueError(f"pixel PCA needs 1 <= dims <= {min(flat.shape)} (images x pixels), not {dims}")
    if len(flat) > sample:
        flat = flat[np.sort(np.random.default_rng(seed).choice(len(flat), sample, replace=False))]
    x = flat.astype(np.float64) / 255.0
    mean = x.mean(axis=0)
    _, _, components = np.linalg.svd(x - mean, full_matrices=False)
    return mean.astype(np.float32), components[:dims].T.astype(np.float32)


class PixelFusion(nn.Module):
    """``model``'s normalised embedding, scaled by sqrt(1 - share), followed by the pixel-PCA
    projection, normalised and scaled by sqrt(share): a unit vector whose dot product is the
    weighted sum of the two cosines. Aspect embeddings (CSN) pass through unchanged."""

    def __init__(self, model: nn.Module, mean: np.ndarray, basis: np.ndarray, share: float) -> None:
        super().__init__()
        if not 0 < share < 1:
            raise ValueError(f"the pixel share must be in (0, 1), not {share}")
        self.model, self.share = model, share
        self.register_buffer("pixel_mean", torch.from_numpy(mean).view(1, -1))
        self.register_buffer("basis", torch.from_numpy(basis))

    @property
    def embedding_dim(self) -> int:
        return self.model.embedding_dim + self.pixel_dims

    @property
    def pixel_dims(self) -> int:
        return self.basis.shape[1]

    def forward(self, images: torch.Tensor):
        out = self.model(images)
        learned, aspects = out if isinstance(out, tuple) else (out, None)
        x = images.reshape(images.shape[0], -1).float() * (1.0 / 255.0)
        pixels = F.normalize((x - self.pixel_mean) @ self.basis, dim=-1)
        embedding = weigh(learned, pixels, self.share)
        return embedding if aspects is None else (embedding, aspects)


def with_pixel_pca(model: nn.Module, train_images: np.ndarray, dims: int, share: float) -> PixelFusion:
    """``model`` with a pixel subspace fitted on ``train_images`` (its run's training split)."""
    mean, basis = fit_pixel_pca(train_images, dims)
    return PixelFusion(model, mean, basis, share).eval()
