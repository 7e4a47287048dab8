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


def test_a_colour_layout_is_the_pca_of_block_means_in_the_graph_and_outside(tmp_path):
    """``side`` > 0: block means first (a colour layout), in the ONNX graph as in NumPy."""
    from contract import InputSpec
    from training.evaluation.embed import onnx_embedder, pixel_embedder
    from training.export import export_onnx
    from training.models.pixel_fusion import check_side, pixel_values

    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(60, 28, 28, 3), dtype=np.uint8)
    # Block means: each of the 7x7 blocks of 4x4 pixels, per channel, in NHWC order.
    layout = pixel_values(images, side=7)
    assert layout.shape == (60, 7 * 7 * 3)
    assert np.isclose(layout[5, 0], images[5, :4, :4, 0].mean() / 255.0)
    assert np.isclose(layout[5, 3 * 2 + 1], images[5, :4, 8:12, 1].mean() / 255.0)
    mean, basis = fit_pixel_pca(images, 20, side=7)
    assert basis.shape == (147, 20)
    with pytest.raises(ValueError, match="1 <= dims <= 60"):
        fit_pixel_pca(images[:60], 61, side=7)
    with pytest.raises(ValueError, match="side 5 needs whole blocks of the 28x28 input"):
        check_side(28, 28, 5)

    class _Colour(_Fixed):
        def __init__(self) -> None:
            super().__init__()
            self.proj = torch.randn(28 * 28 * 3, 8, generator=torch.Generator().manual_seed(0))

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            # flatten(1), not len(): the exporter keeps the batch axis dynamic
            return F.normalize(images.flatten(1).float() @ self.proj, dim=-1)

    learned = _Colour()
    fused = PixelFusion(learned, mean, basis, share=0.25, side=7).eval()
    served = fused(torch.from_numpy(images)).numpy()
    alone = learned(torch.from_numpy(images)).numpy()
    pixels = pixel_embedder(basis, mean, side=7)(images)[0]
    assert np.allclose(served @ served.T, 0.75 * alone @ alone.T + 0.25 * pixels @ pixels.T, atol=1e-4)
    # The traced graph pools as PyTorch does.
    export_onnx(fused, InputSpec(height=28, width=28, channels=3), tmp_path / "layout.onnx", aspects=False)
    assert np.abs(onnx_embedder(tmp_path / "layout.onnx")(images)[0] - served).max() < 1e-5
