"""A pixel subspace beside the learned embedding: the images' projection on the training images'
principal components, L2-normalised, appended with a share of the cosine.

Why: on kinds of thing never trained on, raw pixels (and their PCA) keep information a class-trained
network throws away; the learned embedding alone ties with them there (docs/openset.md), while on the
trained kinds it is far ahead. Appended with a small share, the served cosine is
(1 - share) x learned cosine + share x pixel-PCA cosine, and gains on both (models/default.md).
The basis is fitted on the training split at export, so it never sees a test or held-out image.

With ``side`` > 0 the image is first shrunk to side x side block means: a colour layout. On photos,
a blurred copy keeps its colours and their layout while the learned embedding loses it (the miss is
another photo of the same kind in another colour); the pooled pixels keep it, and they are cheap
(8 x 8 x 3 values instead of 128 x 128 x 3, the basis a few kilobytes). docs/near-duplicates.md measures it.
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


def check_side(height: int, width: int, side: int) -> None:
    """A pooled layout needs whole blocks: ``side`` must divide the image's height and width."""
    if side < 0 or (side and (height % side or width % side)):
        raise ValueError(f"a pixel layout of side {side} needs whole blocks of the {height}x{width} input "
                         "(a side that divides both)")


def layout_shape(height: int, width: int, channels: int, side: int = 0) -> tuple[int, int, int]:
    """The shape of the values the PCA sees for an input of this shape: the input itself, or its
    side x side block means (the side checked)."""
    check_side(height, width, side)
    return (side, side, channels) if side else (height, width, channels)


def pixel_values(images: np.ndarray, side: int = 0, dtype: type = np.float64) -> np.ndarray:
    """uint8 [N, H, W, C] -> [N, F] in [0, 1], flattened in NHWC order as the graph does; with
    ``side`` > 0 each channel is first shrunk to side x side block means."""
    x = images.astype(dtype) / 255.0
    if side:
        n, height, width, channels = x.shape
        check_side(height, width, side)
        x = x.reshape(n, side, height // side, side, width // side, channels).mean(axis=(2, 4))
    return x.reshape(len(x), -1)


def fit_pixel_pca(images: np.ndarray, dims: int, sample: int = PCA_SAMPLE,
                  seed: int = PCA_SEED, side: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The mean [F] and the leading ``dims`` principal directions [F, dims] of uint8 images
    [N, H, W, C] as :func:`pixel_values` gives them (block means first when ``side`` > 0)."""
    most = min(len(images), int(np.prod(layout_shape(*images.shape[1:], side))))
    if dims < 1 or dims > most:
        raise ValueError(f"pixel PCA needs 1 <= dims <= {most} (images x pixels), not {dims}")
    if len(images) > sample:
        images = images[np.sort(np.random.default_rng(seed).choice(len(images), sample, replace=False))]
    x = pixel_values(images, side)
    mean = x.mean(axis=0)
    _, _, components = np.linalg.svd(x - mean, full_matrices=False)
    return mean.astype(np.float32), components[:dims].T.astype(np.float32)


class PixelFusion(nn.Module):
    """``model``'s normalised embedding, scaled by sqrt(1 - share), followed by the pixel-PCA
    projection, normalised and scaled by sqrt(share): a unit vector whose dot product is the
    weighted sum of the two cosines. Aspect embeddings (CSN) pass through unchanged."""

    def __init__(self, model: nn.Module, mean: np.ndarray, basis: np.ndarray, share: float, side: int = 0) -> None:
        super().__init__()
        if not 0 < share < 1:
            raise ValueError(f"the pixel share must be in (0, 1), not {share}")
        self.model, self.share, self.side = model, share, side
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
        x = images.float() * (1.0 / 255.0)
        if self.side:  # block means, as pixel_values takes them (NHWC kept for the flattening order)
            kernel = (x.shape[1] // self.side, x.shape[2] // self.side)
            x = F.avg_pool2d(x.permute(0, 3, 1, 2), kernel).permute(0, 2, 3, 1)
        x = x.reshape(x.shape[0], -1)
        pixels = F.normalize((x - self.pixel_mean) @ self.basis, dim=-1)
        embedding = weigh(learned, pixels, self.share)
        return embedding if aspects is None else (embedding, aspects)


def with_pixel_pca(model: nn.Module, train_images: np.ndarray, dims: int, share: float,
                   side: int = 0) -> PixelFusion:
    """``model`` with a pixel subspace fitted on ``train_images`` (its run's training split)."""
    mean, basis = fit_pixel_pca(train_images, dims, side=side)
    return PixelFusion(model, mean, basis, share, side).eval()
