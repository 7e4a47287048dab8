"""A configurable CNN in the spirit of the NSL paper's 9-layer network.

stem (plain 3x3) -> for each stage: ``depth`` x (NS-conv, BN, ReLU), 2x2 max-pool between stages
(anti-aliased with ``antialias``, training.layers.pooling) -> global average pool. The layer type is a name from :data:`training.layers.LAYER_TYPES`, so
"plain vs NSL" is a config switch.

- ``ns_per_stage`` > 0 keeps the first convs of each stage plain and makes only the last ones NS
  (a cheaper hybrid).
- ``ns_last_stages`` > 0 keeps the first stages plain and makes only the last ones NS: dynamic
  layers cost per position, so the low-resolution stages are where they are affordable.
- ``residual`` groups the convs after a stage's first one into ResNet basic blocks (two convs and
  an identity shortcut), the structure of the fast-training "ResNet-9" family.
"""

from __future__ import annotations

import torch
from torch import nn

from training.layers import make_conv
from training.layers.pooling import downsample


class ResidualBlock(nn.Module):
    """x + BN(conv(ReLU(BN(conv(x))))), then ReLU: a basic block at constant width."""

    def __init__(self, first: nn.Module, second: nn.Module, width: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = first, nn.BatchNorm2d(width)
        self.conv2, self.bn2 = second, nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(x + self.bn2(self.conv2(y)))


class Backbone(nn.Module):
    def __init__(self, in_channels: int, widths: list[int], depth: int | list[int], layer: str = "plain",
                 ns_per_stage: int = 0, residual: bool = False, ns_last_stages: int = 0,
                 antialias: bool = False, **layer_options: object) -> None:
        super().__init__()
        depths = depth if isinstance(depth, list) else [depth] * len(widths)
        if len(depths) != len(widths):
            raise ValueError(f"depth {depth} must be one number or one per stage ({len(widths)} stages)")
        # The stem stays a plain conv, as in the paper: with 1 or 3 input channels a similarity
        # over taps has little to work with, and it keeps every variant's first features alike.
        modules: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
                                    nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)]
        channels = widths[0]
        for stage, (width, convs) in enumerate(zip(widths, depths)):
            if stage > 0:
                modules.append(downsample(channels, antialias))

            ns_stage = ns_last_stages == 0 or stage >= len(widths) - ns_last_stages

            def conv(index: int, cin: int, width: int = width, convs: int = convs, ns_stage: bool = ns_stage) -> nn.Module:
                ns_conv = ns_per_stage == 0 or index >= convs - ns_per_stage
                kind = layer if ns_stage and ns_conv else "plain"
                return make_conv(kind, cin, width, **layer_options)

            index = 0
            if residual and channels == width and convs >= 2:
                pass  # the stage can start with a block straight away
            else:
                modules += [conv(0, channels), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                channels, index = width, 1
            while index < convs:
                if residual and index + 1 < convs:
                    modules.append(ResidualBlock(conv(index, width), conv(index + 1, width), width))
                    index += 2
                else:
                    modules += [conv(index, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                    index += 1
        self.body = nn.Sequential(*modules)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """float [N, C, H, W] -> pooled features [N, out_channels]."""
        return self.pool(self.body(x)).flatten(1)
