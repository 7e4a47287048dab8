"""NSL layers: shapes, gradients, the definition y(p) = Σ M_ak w_aᵀ x(p+δk), folding, ONNX parity."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from contract import InputSpec
from training.config import ModelConfig
from training.export import export_onnx, parity
from training.layers import (
    LAYER_TYPES,
    DynamicNSLConv2d,
    LowRankDynamicNSLConv2d,
    SphereConv2d,
    StaticNSLConv2d,
    dns_per_tap,
    dns_stacked_input,
    fold_static_layers,
    make_conv,
)
from training.models import build_model

VARIANTS = [(layer, "plain") for layer in LAYER_TYPES] + [("dynamic-diag", "sphere"), ("dynamic-full", "sphere")]


def reference_nsl(x: torch.Tensor, weight: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """The definition, written the slow obvious way with unfold. m: [N, 9(a), 9(k), H, W]."""
    n, c, h, w = x.shape
    patches = F.unfold(x, 3, padding=1).view(n, c, 9, h * w)  # [n, c, k, p], k row-major like TAP_OFFSETS
    mixed = torch.einsum("nakp,nckp->ncap", m.reshape(n, 9, 9, h * w), patches)
    return torch.einsum("oca,ncap->nop", weight.reshape(weight.shape[0], c, 9), mixed).view(n, -1, h, w)


def as_full(m: torch.Tensor) -> torch.Tensor:
    """Diagonal [N, 9, H, W] -> full [N, 9, 9, H, W]."""
    return torch.diag_embed(m.permute(0, 2, 3, 1)).permute(0, 3, 4, 1, 2)


@pytest.mark.parametrize("layer,predictor", VARIANTS)
def test_shape_and_gradients(layer, predictor):
    torch.manual_seed(0)
    conv = make_conv(layer, 5, 12, predictor=predictor)
    x = torch.randn(3, 5, 9, 7, requires_grad=True)
    y = conv(x)
    assert y.shape == (3, 12, 9, 7)
    (y.square().mean()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, param in conv.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
    assert conv.weight.grad.abs().sum() > 0


def test_unknown_layer_name_lists_the_choices():
    with pytest.raises(ValueError, match="static-diag"):
        make_conv("wavelet", 3, 4)


@pytest.mark.parametrize("mode", ["diag", "full"])
@pytest.mark.parametrize("predictor", ["plain", "sphere"])
def test_dynamic_layer_matches_the_definition(mode, predictor):
    torch.manual_seed(1)
    layer = DynamicNSLConv2d(4, 6, mode, predictor).eval()
    # A far-from-identity M: scale up the predictor's output and give it a random offset.
    torch.nn.init.constant_(layer.predictor.bn_out.weight, 5.0)
    torch.nn.init.normal_(layer.predictor.bn_out.bias, std=0.5)
    x = torch.randn(2, 4, 8, 10)
    m = layer.similarity(x)
    full = as_full(m) if mode == "diag" else m
    identity = torch.ones(9).view(1, 9, 1, 1) if mode == "diag" else torch.eye(9).view(1, 9, 9, 1, 1)
    assert (m - identity).abs().mean() > 0.1
    expected = reference_nsl(x, layer.weight, full)
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("formulation", [dns_per_tap, dns_stacked_input])
@pytest.mark.parametrize("channels", [(3, 5), (6, 2)])
def test_both_dns_formulations_match_the_definition(formulation, channels):
    """Training runs dns_per_tap, the exported graph dns_stacked_input: both must be the definition."""
    torch.manual_seed(8)
    cin, cout = channels
    x, weight = torch.randn(2, cin, 6, 9), torch.randn(cout, cin, 3, 3)
    m = 1 + torch.randn(2, 9, 6, 9)  # far from the identity, different at every position
    torch.testing.assert_close(formulation(x, weight, m), reference_nsl(x, weight, as_full(m)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("predictor", ["plain", "sphere"])
def test_low_rank_dynamic_layer_matches_the_definition(predictor):
    torch.manual_seed(7)
    layer = LowRankDynamicNSLConv2d(4, 6, rank=3, predictor=predictor).eval()
    torch.nn.init.constant_(layer.predictor.bn_out.weight, 5.0)
    torch.nn.init.normal_(layer.predictor.bn_out.bias, std=0.5)
    x = torch.randn(2, 4, 8, 10)
    m = layer.similarity(x)  # [N, 9, 9, H, W], I + Σ α_j B_j
    assert (m - torch.eye(9).view(1, 9, 9, 1, 1)).abs().mean() > 0.05
    torch.testing.assert_close(layer(x), reference_nsl(x, layer.weight, m), atol=1e-5, rtol=1e-5)


def test_hybrid_backbone_puts_ns_layers_last_in_each_stage():
    from training.models import Backbone

    backbone = Backbone(1, [8, 16], depth=3, layer="dynamic-lowrank", ns_per_stage=1)
    kinds = [type(m).__name__ for m in backbone.body if "Conv" in type(m).__name__]
    assert kinds == ["Conv2d", "PlainConv2d", "PlainConv2d", "LowRankDynamicNSLConv2d",
                     "PlainConv2d", "PlainConv2d", "LowRankDynamicNSLConv2d"]


def test_stage_hybrid_backbone_puts_ns_layers_in_the_last_stages_only():
    from training.models import Backbone

    backbone = Backbone(1, [8, 16, 32], depth=2, layer="dynamic-diag", ns_last_stages=1)
    kinds = [type(m).__name__ for m in backbone.body if "Conv" in type(m).__name__]
    assert kinds == ["Conv2d", "PlainConv2d", "PlainConv2d", "PlainConv2d", "PlainConv2d",
                     "DynamicNSLConv2d", "DynamicNSLConv2d"]
    both = Backbone(1, [8, 16, 32], depth=2, layer="dynamic-diag", ns_last_stages=2, ns_per_stage=1)
    kinds = [type(m).__name__ for m in both.body if "Conv" in type(m).__name__]
    assert kinds == ["Conv2d", "PlainConv2d", "PlainConv2d", "PlainConv2d", "DynamicNSLConv2d",
                     "PlainConv2d", "DynamicNSLConv2d"]


def test_dynamic_layer_starts_next_to_a_plain_conv():
    torch.manual_seed(2)
    layer = DynamicNSLConv2d(8, 8, "diag").eval()
    x = torch.randn(2, 8, 12, 12)
    plain = F.conv2d(x, layer.weight, padding=1)
    assert (layer(x) - plain).abs().max() < 1e-2 * plain.abs().max()


@pytest.mark.parametrize("mode", ["diag", "full"])
def test_static_layer_matches_the_definition_and_folds(mode):
    torch.manual_seed(3)
    layer = StaticNSLConv2d(4, 6, mode)
    with torch.no_grad():
        layer.similarity.add_(torch.randn_like(layer.similarity) * 0.5)
    x = torch.randn(2, 4, 7, 7)
    m = layer.similarity.detach()
    full = torch.diag(m) if mode == "diag" else m
    expected = reference_nsl(x, layer.weight, full.view(1, 9, 9, 1, 1).expand(2, 9, 9, 7, 7))
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)
    folded = layer.fold()
    assert isinstance(folded, torch.nn.Conv2d)
    assert (folded(x) - layer(x)).abs().max() < 1e-5


def test_folding_a_whole_model_keeps_outputs_and_removes_static_layers():
    torch.manual_seed(4)
    model = build_model(ModelConfig(layer="static-full", widths=[8, 16], depth=2, embedding_dim=16), 1, [0.3], [0.3])
    for module in model.modules():
        if isinstance(module, StaticNSLConv2d):
            with torch.no_grad():
                module.similarity.add_(torch.randn_like(module.similarity) * 0.3)
    model.eval()
    images = torch.randint(0, 256, (5, 28, 28, 1), dtype=torch.uint8)
    before = model(images)
    assert fold_static_layers(model) == 4
    assert not any(isinstance(m, StaticNSLConv2d) for m in model.modules())
    assert (model(images) - before).abs().max() < 1e-5


def test_sphere_activations_follow_their_formulas():
    torch.manual_seed(5)
    x = torch.randn(2, 3, 6, 6)
    cosine = SphereConv2d(3, 4, "cosine")
    cos = cosine(x)
    # Reference cosine between each kernel and each (zero-padded) patch, eps inside the sqrt.
    patches = F.unfold(x, 3, padding=1)  # [n, 27, p]
    w = cosine.weight.reshape(4, -1)
    expected = torch.einsum("od,ndp->nop", w, patches) / (
        w.norm(dim=1).view(1, 4, 1) * torch.sqrt(patches.square().sum(1, keepdim=True) + 1e-4))
    torch.testing.assert_close(cos, expected.view(2, 4, 6, 6), atol=1e-5, rtol=1e-4)
    theta = torch.acos(cos.clamp(-1 + 1e-6, 1 - 1e-6))
    linear = SphereConv2d(3, 4, "linear")
    linear.weight = cosine.weight
    torch.testing.assert_close(linear(x), 1 - 2 * theta / math.pi, atol=1e-5, rtol=1e-4)
    sigmoid = SphereConv2d(3, 4, "sigmoid")
    sigmoid.weight = cosine.weight
    k = 0.3
    scale = (1 + math.exp(-math.pi / (2 * k))) / (1 - math.exp(-math.pi / (2 * k)))
    t = torch.exp(theta / k - math.pi / (2 * k))
    torch.testing.assert_close(sigmoid(x), scale * (1 - t) / (1 + t), atol=1e-5, rtol=1e-4)
    for out in (cos, linear(x), sigmoid(x)):
        assert out.min() >= -1 - 1e-5 and out.max() <= 1 + 1e-5


def exported_model(tmp_path, layer: str, predictor: str = "plain"):
    torch.manual_seed(6)
    model = build_model(ModelConfig(layer=layer, predictor=predictor, widths=[8, 16], depth=1, embedding_dim=16),
                        1, [0.3], [0.3])
    # Train-mode statistics once, so BatchNorm is not the identity, then evaluate.
    model.train()
    with torch.no_grad():
        model(torch.randint(0, 256, (16, 28, 28, 1), dtype=torch.uint8))
    fold_static_layers(model)
    model.eval()
    path = tmp_path / f"{layer}-{predictor}.onnx"
    export_onnx(model, InputSpec(height=28, width=28, channels=1), path, aspects=False)
    return model, path


@pytest.mark.parametrize("layer,predictor", VARIANTS)
def test_onnx_export_matches_pytorch_at_batch_1_and_7(tmp_path, layer, predictor):
    model, path = exported_model(tmp_path, layer, predictor)
    images = np.random.default_rng(0).integers(0, 256, (64, 28, 28, 1), dtype=np.uint8)
    assert parity(model, path, images) < 1e-4  # parity() runs batches of 1, 7 and 64


def test_exported_dns_graph_is_the_stacked_input_form(tmp_path):
    """No Slice in the exported dynamic-diag graph: the shifted copies come from one depthwise conv
    per layer (the form ONNX Runtime runs fastest), not from nine slices."""
    _, path = exported_model(tmp_path, "dynamic-diag")
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert "Slice" not in ops
    depthwise = [node for node in onnx.load(str(path)).graph.node
                 if node.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in node.attribute)]
    assert len(depthwise) == 2  # widths [8, 16], depth 1: two NS layers after the plain stem


@pytest.mark.parametrize("layer", ["static-diag", "static-full"])
def test_exported_static_graph_is_a_plain_conv_graph(tmp_path, layer):
    _, static_path = exported_model(tmp_path, layer)
    _, plain_path = exported_model(tmp_path, "plain")
    ops = [node.op_type for node in onnx.load(str(static_path)).graph.node]
    assert ops == [node.op_type for node in onnx.load(str(plain_path)).graph.node]


def test_residual_backbone_with_static_layers_folds_and_exports(tmp_path):
    torch.manual_seed(9)
    config = ModelConfig(layer="static-full", widths=[8, 16], depth=[1, 3], residual=True, embedding_dim=16)
    model = build_model(config, 1, [0.3], [0.3])
    blocks = [m for m in model.modules() if type(m).__name__ == "ResidualBlock"]
    assert len(blocks) == 1  # stage 2: a width-changing conv, then one two-conv block
    for module in model.modules():
        if isinstance(module, StaticNSLConv2d):
            with torch.no_grad():
                module.similarity.add_(torch.randn_like(module.similarity) * 0.3)
    model.train()
    with torch.no_grad():
        model(torch.randint(0, 256, (16, 28, 28, 1), dtype=torch.uint8))
    model.eval()
    images = torch.randint(0, 256, (7, 28, 28, 1), dtype=torch.uint8)
    before = model(images)
    assert fold_static_layers(model) == 4  # including the two inside the residual block
    assert (model(images) - before).abs().max() < 1e-5
    path = tmp_path / "residual.onnx"
    export_onnx(model, InputSpec(height=28, width=28, channels=1), path, aspects=False)
    assert parity(model, path, images.numpy().repeat(10, axis=0)) < 1e-4


def test_anti_aliased_pooling_moves_less_under_a_one_pixel_shift_and_exports(tmp_path):
    """Blur before subsampling (training.layers.pooling): a feature map and its copy shifted by one
    pixel come out closer than through a plain stride-2 max-pool, and the backbone exports exactly."""
    from training.layers.pooling import BlurPool2d, downsample

    torch.manual_seed(0)
    x = torch.rand(64, 8, 28, 28)
    shifted = torch.roll(x, 1, dims=3)

    def change(pool):
        a, b = pool(x)[..., 2:-2, 2:-2], pool(shifted)[..., 2:-2, 2:-2]  # away from the rolled border
        return float((a - b).abs().mean())

    assert change(downsample(8, antialias=True)) < 0.6 * change(downsample(8, antialias=False))
    assert float(BlurPool2d(8)(torch.ones(1, 8, 28, 28)).sub(1).abs().max()) < 1e-6  # a flat map stays flat
    torch.manual_seed(6)
    model = build_model(ModelConfig(widths=[8, 16, 16], depth=1, embedding_dim=16, antialias=True), 1, [0.3], [0.3])
    model.train()
    with torch.no_grad():
        model(torch.randint(0, 256, (16, 28, 28, 1), dtype=torch.uint8))
    model.eval()
    path = tmp_path / "antialias.onnx"
    export_onnx(model, InputSpec(height=28, width=28, channels=1), path, aspects=False)
    images = np.random.default_rng(0).integers(0, 256, (64, 28, 28, 1), dtype=np.uint8)
    assert parity(model, path, images) < 1e-4
