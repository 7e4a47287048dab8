"""Downsampling that keeps a small shift of the image from changing the embedding much.

A stride-2 max-pool aliases: moving the input by one pixel can change which values survive, so a
copy shifted by a pixel or two lands far from its original. Anti-aliased max-pooling (Zhang, "Making
Convolutional Networks Shift-Invariant Again", ICML 2019) takes the max densely (stride 1), then
low-pass filters with a fixed binomial kernel before subsampling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BlurPool2d(nn.Module):
    """Fixed [1, 2, 1] x [1, 2, 1] / 16 blur per channel, then stride 2 (reflect-padded)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = (taps[:, None] * taps[None, :]) / 16
        self.register_buffer("kernel", kernel.expand(channels, 1, 3, 3).contiguous(), persistent=False)
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.kernel, stride=2, groups=self.channels)


def downsample(channels: int, antialias: bool) -> nn.Module:
    """2x downsampling between stages: plain max-pool, or max-pool at stride 1 then :class:`BlurPool2d`."""
    if not antialias:
        return nn.MaxPool2d(2)
    return nn.Sequential(nn.MaxPool2d(2, stride=1), BlurPool2d(channels))
