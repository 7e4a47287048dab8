"""The pixel subspace added at export (training/models/pixel_fusion.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from training.models.pixel_fusion import PixelFusion, fit_pixel_pca


class _Fixed(nn.Module):
    """A stand-in learned embedding: a fixed random projection, normalised."""

    embedding_dim = 8

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.randn(28 * 28, 8, generator=torch.Generator().manual_seed(0))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(images.reshape(len(images), -1).float() @ self.proj, dim=-1)


def test_pca_is_fitted_in_the_graphs_pixel_order_and_orders_variance():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(300, 28, 28, 1), dtype=np.uint8)
    images[:, :, :14] //= 4  # the left half varies less
    mean, basis = fit_pixel_pca(images, 16)
    assert mean.shape == (784,) and basis.shape == (784, 16)
    assert np.allclose(basis.T @ basis, np.eye(16), atol=1e-4)  # orthonormal directions
    spread = ((images.reshape(300, -1) / 255.0 - mean) @ basis).var(axis=0)
    assert np.all(np.diff(spread) <= 1e-6)  # leading components first
    # Sampling: at most `sample` images, seeded.
    assert np.allclose(fit_pixel_pca(images, 4, sample=100)[1], fit_pixel_pca(images, 4, sample=100)[1])
    with pytest.raises(ValueError, match="1 <= dims <= 300"):
        fit_pixel_pca(images, 301)


def test_the_served_cosine_weighs_the_learned_and_the_pixel_cosines():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(40, 28, 28, 1), dtype=np.uint8)
    mean, basis = fit_pixel_pca(images, 10)
    learned = _Fixed()
    fused = PixelFusion(learned, mean, basis, share=0.3)
    assert fused.embedding_dim == 18
    batch = torch.from_numpy(images)
    served, alone = fused(batch).numpy(), learned(batch).numpy()
    assert np.allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)
    pixels = (images.reshape(40, -1) / 255.0 - mean) @ basis
    pixels /= np.linalg.norm(pixels, axis=1, keepdims=True)
    assert np.allclose(served @ served.T, 0.7 * alone @ alone.T + 0.3 * pixels @ pixels.T, atol=1e-4)
    with pytest.raises(ValueError, match=r"share must be in \(0, 1\)"):
        PixelFusion(learned, mean, basis, share=1.0)


def test_the_pixel_share_benchmark_fuses_as_the_exported_graph_does():
    from bench.instance_share import reweigh
    from training.evaluation.embed import pixel_embedder

    images = np.random.default_rng(2).integers(0, 256, size=(30, 28, 28, 1), dtype=np.uint8)
    mean, basis = fit_pixel_pca(images, 6)
    learned = _Fixed()
    served = PixelFusion(learned, mean, basis, share=0.15)(torch.from_numpy(images)).numpy()
    parts = learned(torch.from_numpy(images)).numpy(), pixel_embedder(basis, mean)(images)[0]
    assert np.allclose(reweigh(parts, 0.15), served, atol=1e-5)
