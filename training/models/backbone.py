"""A configurable CNN in the spirit of the NSL paper's 9-layer network.

stem (plain 3x3) -> for each stage: ``depth`` x (NS-conv, BN, ReLU), 2x2 max-pool between stages
(``ns_per_stage`` > 0 keeps the first convs of each stage plain and makes only the last ones NS)
-> global average pool. The layer type is a name from :data:`training.layers.LAYER_TYPES`, so
"plain vs NSL" is a config switch.
"""

from __future__ import annotations

import torch
from torch import nn

from training.layers import make_conv


class Backbone(nn.Module):
    def __init__(self, in_channels: int, widths: list[int], depth: int, layer: str = "plain",
                 ns_per_stage: int = 0, **layer_options: object) -> None:
        super().__init__()
        # The stem stays a plain conv, as in the paper: with 1 or 3 input channels a similarity
        # over taps has little to work with, and it keeps every variant's first features alike.
        modules: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
                                    nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)]
        channels = widths[0]
        for stage, width in enumerate(widths):
            if stage > 0:
                modules.append(nn.MaxPool2d(2))
            for index in range(depth):
                # ns_per_stage > 0 puts the NS layer only in the last convs of each stage (a cheaper hybrid).
                kind = layer if ns_per_stage == 0 or index >= depth - ns_per_stage else "plain"
                modules += [make_conv(kind, channels, width, **layer_options), nn.BatchNorm2d(width),
                            nn.ReLU(inplace=True)]
                channels = width
        self.body = nn.Sequential(*modules)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """float [N, C, H, W] -> pooled features [N, out_channels]."""
        return self.pool(self.body(x)).flatten(1)
