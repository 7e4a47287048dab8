"""Neural similarity layers (Liu et al., "Neural Similarity Learning", NeurIPS 2019).

A 3x3 convolution scores the patch around p with wᵀx. Neural similarity scores it with wᵀMx,
where M mixes the 9 kernel taps (k = 3·row + col, row-major over dy, dx in {-1, 0, 1}):

    y(p) = Σ_{a,k} M_ak · w_aᵀ x(p + δ_k)

- static: M is a learned 9x9 (``full``) or diagonal (``diag``) parameter, initialised to I.
  It folds into the kernel (W_eff[:, :, k] = Σ_a M_ak W[:, :, a]), so export is a plain conv.
- dynamic: a small *neural similarity predictor* reads the input and predicts M per sample and per
  position, as I + residual, the residual starting tiny so training starts from a plain conv.
- sphere: SphereConv (Liu et al. 2017), an angular similarity g(θ) between w and the patch,
  usable as a layer of its own and as the dynamic predictor ("full SphereNet").

Every layer shares one signature: ``make_conv(name, in_channels, out_channels, **options)`` returns
a stride-1, 'same'-padded 3x3 layer without bias (a BatchNorm follows it in the backbone).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

TAPS = 9
# Tap k sits at (dy, dx) = (k // 3 - 1, k % 3 - 1).
TAP_OFFSETS = [(k // 3 - 1, k % 3 - 1) for k in range(TAPS)]
PATCH_EPS = 1e-4  # inside the sqrt of the patch norm, as in the original code

SphereActivation = Literal["linear", "cosine", "sigmoid"]


class PlainConv2d(nn.Conv2d):
    """The baseline: a standard 3x3 convolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 3, padding=1, bias=False)


class StaticNSLConv2d(nn.Module):
    """3x3 conv whose kernel taps are mixed by a learned M (diagonal or full 9x9), initialised to I."""

    def __init__(self, in_channels: int, out_channels: int, mode: Literal["diag", "full"]) -> None:
        super().__init__()
        self.mode = mode
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        self.similarity = nn.Parameter(torch.ones(TAPS) if mode == "diag" else torch.eye(TAPS))

    def effective_weight(self) -> torch.Tensor:
        out_c, in_c = self.weight.shape[:2]
        taps = self.weight.reshape(out_c, in_c, TAPS)
        mixed = taps * self.similarity if self.mode == "diag" else taps @ self.similarity
        return mixed.reshape(out_c, in_c, 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.effective_weight(), padding=1)

    @torch.no_grad()
    def fold(self) -> nn.Conv2d:
        """The equivalent plain convolution: what gets exported."""
        out_c, in_c = self.weight.shape[:2]
        conv = nn.Conv2d(in_c, out_c, 3, padding=1, bias=False).to(self.weight.device)
        conv.weight.copy_(self.effective_weight())
        return conv


class SphereConv2d(nn.Module):
    """SphereConv: g(θ) with cos θ = wᵀx / (‖w‖·‖x_patch‖); output in [-1, 1] for every activation."""

    def __init__(self, in_channels: int, out_channels: int, activation: SphereActivation = "cosine",
                 kernel_size: int = 3, sigmoid_k: float = 0.3) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.activation = activation
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        # Constants of the sigmoid activation, precomputed once.
        e = math.exp(-math.pi / (2 * sigmoid_k))
        self._sig_scale = (1 + e) / (1 - e)
        self._sig_k = sigmoid_k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.kernel_size // 2
        w_norm = self.weight.flatten(1).norm(dim=1).clamp_min(1e-12).view(1, -1, 1, 1)
        cos = F.conv2d(x, self.weight, padding=pad) / (w_norm * patch_norm(x, self.kernel_size))
        if self.activation == "cosine":
            return cos
        theta = torch.acos(cos.clamp(-1 + 1e-6, 1 - 1e-6))
        if self.activation == "linear":
            return 1 - 2 * theta / math.pi
        t = torch.exp(theta / self._sig_k - math.pi / (2 * self._sig_k))
        return self._sig_scale * (1 - t) / (1 + t)


def patch_norm(x: torch.Tensor, kernel_size: int = 3) -> torch.Tensor:
    """sqrt(Σ x² over each k x k x C patch + eps), [N, 1, H, W], zero padding as in the conv."""
    energy = F.avg_pool2d(x.pow(2).sum(1, keepdim=True), kernel_size, stride=1,
                          padding=kernel_size // 2, count_include_pad=True)
    return torch.sqrt(energy * kernel_size * kernel_size + PATCH_EPS)


class SimilarityPredictor(nn.Module):
    """Predicts the residual of M per sample and position: [N, 9] (diag) or [N, 81] (full) x H x W.

    Two 3x3 convs. The first is divided by the patch norm (plain) or is a SphereConv (sphere), so
    the predictor sees the patch's direction rather than its energy. The last is followed by a
    BatchNorm whose scale starts at 1e-3: M starts within ~1e-3 of the identity.
    """

    def __init__(self, in_channels: int, outputs: int, hidden: int, kind: Literal["plain", "sphere"],
                 activation: SphereActivation) -> None:
        super().__init__()
        self.kind = kind
        if kind == "sphere":
            self.first: nn.Module = SphereConv2d(in_channels, hidden, activation)
            self.second: nn.Module = SphereConv2d(hidden, outputs, activation)
        else:
            self.first = nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False)
            self.second = nn.Conv2d(hidden, outputs, 3, padding=1, bias=False)
        self.bn_hidden = nn.BatchNorm2d(hidden)
        self.bn_out = nn.BatchNorm2d(outputs)
        nn.init.constant_(self.bn_out.weight, 1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.first(x)
        if self.kind == "plain":
            hidden = hidden / patch_norm(x)
        hidden = F.relu(self.bn_hidden(hidden))
        return self.bn_out(self.second(hidden))


def _predictor_width(out_channels: int, requested: int | None) -> int:
    # A quarter of the layer's width: the predictor then costs about a quarter of the layer's conv.
    return requested or max(8, out_channels // 4)


def shifted_inputs(x: torch.Tensor) -> list[torch.Tensor]:
    """x(p + δ_k) for the nine taps, zero padded: nine [N, C, H, W] views of the padded input."""
    h, w = x.shape[2:]
    padded = F.pad(x, (1, 1, 1, 1))
    return [padded[:, :, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy, dx in TAP_OFFSETS]


def dns_per_tap(x: torch.Tensor, weight: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Dynamic-diagonal NSL, m: [N, 9, H, W]. Nine single-tap 1x1 convs, weighted and summed."""
    out = None
    for k, tap_input in enumerate(shifted_inputs(x)):
        term = F.conv2d(tap_input, weight[:, :, k // 3, k % 3, None, None]) * m[:, k:k + 1]
        out = term if out is None else out + term
    return out


def dns_stacked_input(x: torch.Tensor, weight: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Dynamic-diagonal NSL, m: [N, 9, H, W]. The nine shifted copies of every channel (a depthwise
    conv with one-hot 3x3 kernels: channel 9c + k holds x_c(p + δ_k)), weighted by m_k(p), then one
    1x1 conv over the 9·Cin channels: three passes over memory, where the per-tap graph needs 9
    Slices, 9 convs, 9 Muls, 8 Adds and the layout conversions ONNX Runtime puts between them."""
    n, c, h, w = x.shape
    one_hot = torch.eye(TAPS, dtype=x.dtype, device=x.device).reshape(TAPS, 1, 3, 3).repeat(c, 1, 1, 1)
    stacked = F.conv2d(x, one_hot, padding=1, groups=c).reshape(n, c, TAPS, h, w) * m.unsqueeze(1)
    return F.conv2d(stacked.reshape(n, c * TAPS, h, w), weight.reshape(weight.shape[0], c * TAPS, 1, 1))


class DynamicNSLConv2d(nn.Module):
    """Exact dynamic NSL (the paper's DNS / UNS): M = I + predictor(x), per sample and position.

    diag (DNS), y(p) = Σ_k m_k(p) · w_kᵀ x(p + δ_k), has two exact formulations, each the faster one
    where it runs (docs/nsl-kernels.md; tests hold them to the definition):
    - in PyTorch (training), :func:`dns_per_tap`: nine single-tap 1x1 convs of the shifted input,
      each weighted by its m_k and summed;
    - in the exported graph (ONNX Runtime), :func:`dns_stacked_input`: the nine shifted copies of
      the input made by one depthwise conv with one-hot kernels, weighted by m, then one 1x1 conv
      over the 9·Cin channels. ONNX Runtime runs the per-tap graph's 9 Slices, 9 small convs and
      their layout conversions 1.3x (one layer) to 1.5x (a whole ablation model) slower, while in
      PyTorch the stack is the slower one.

    full (UNS), y(p) = Σ_a w_aᵀ Σ_k M_ak(p) x(p + δ_k): the nine shifted inputs are mixed by the
    9x9 M of each position (one Einsum), then one 1x1 conv over the 9·Cin mixed channels.

    Only Conv, Pad, Slice, Mul, Add, Reshape and Einsum: it exports to ONNX as is. Costly on CPU all the
    same, because a 9x-wide tensor goes through memory; the affordable uses are in the low-resolution
    last stage only (``model.ns_last_stages``) or :class:`LowRankDynamicNSLConv2d`.
    """

    def __init__(self, in_channels: int, out_channels: int, mode: Literal["diag", "full"],
                 predictor: Literal["plain", "sphere"] = "plain", predictor_width: int | None = None,
                 sphere_activation: SphereActivation = "cosine") -> None:
        super().__init__()
        self.mode = mode
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        outputs = TAPS if mode == "diag" else TAPS * TAPS
        self.predictor = SimilarityPredictor(in_channels, outputs, _predictor_width(out_channels, predictor_width),
                                             predictor, sphere_activation)

    def similarity(self, x: torch.Tensor) -> torch.Tensor:
        """M per position: [N, 9, H, W] (diagonal) or [N, 9, 9, H, W] (full, M[a, k])."""
        residual = self.predictor(x)
        n, _, h, w = residual.shape
        if self.mode == "diag":
            return residual + 1.0
        eye = torch.eye(TAPS, dtype=x.dtype, device=x.device).view(1, TAPS, TAPS, 1, 1)
        return residual.view(n, TAPS, TAPS, h, w) + eye

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        m = self.similarity(x)
        if self.mode == "diag":
            dns = dns_stacked_input if torch.onnx.is_in_onnx_export() else dns_per_tap
            return dns(x, self.weight, m)
        mixed = torch.einsum("nakhw,nkchw->nachw", m, torch.stack(shifted_inputs(x), 1))
        # Weight laid out tap-major to match the [N, 9·C] channel order of ``mixed``.
        weight = self.weight.reshape(self.weight.shape[0], c, TAPS).transpose(1, 2).reshape(-1, TAPS * c, 1, 1)
        return F.conv2d(mixed.reshape(n, TAPS * c, h, w), weight)


class LowRankDynamicNSLConv2d(nn.Module):
    """Dynamic NSL with the residual of M in a learned rank-r basis: M(p) = I + Σ_j α_j(p) B_j.

    The predictor gives r coefficients α_j per sample and position; the B_j are learned 9x9
    matrices shared by all positions. Because M is linear in the α_j,

        y(p) = w ∗ x (p) + Σ_j α_j(p) · (W B_j) ∗ x (p)

    i.e. one 3x3 conv with (1 + r)·Cout outputs (each W B_j folded like a static M) and r
    per-position scalings: about (1 + r)x a plain conv, with nothing 9x wide in memory. With r = 9
    and B_j the unit diagonal matrices it is exactly dynamic-diag; with r = 81 and all unit
    matrices, dynamic-full. It starts at M = I (tiny α), like the exact forms.
    """

    def __init__(self, in_channels: int, out_channels: int, rank: int = 2, predictor: Literal["plain", "sphere"] = "plain",
                 predictor_width: int | None = None, sphere_activation: SphereActivation = "cosine") -> None:
        super().__init__()
        self.rank = rank
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        basis = torch.randn(rank, TAPS, TAPS)
        self.basis = nn.Parameter(basis / basis.flatten(1).norm(dim=1).view(rank, 1, 1))
        self.predictor = SimilarityPredictor(in_channels, rank, _predictor_width(out_channels, predictor_width),
                                             predictor, sphere_activation)

    def similarity(self, x: torch.Tensor) -> torch.Tensor:
        """M per position, [N, 9, 9, H, W] (for inspection and tests; forward never builds it)."""
        alpha = self.predictor(x)
        eye = torch.eye(TAPS, dtype=x.dtype, device=x.device).view(1, TAPS, TAPS, 1, 1)
        return eye + torch.einsum("njhw,jak->nakhw", alpha, self.basis)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out_c, in_c = self.weight.shape[:2]
        alpha = self.predictor(x)
        taps = self.weight.reshape(out_c, in_c, TAPS)
        folded = torch.einsum("oca,jak->jock", taps, self.basis)  # W B_j, [r, Cout, Cin, 9]
        kernels = torch.cat([self.weight, folded.reshape(self.rank * out_c, in_c, 3, 3)], 0)
        z = F.conv2d(x, kernels, padding=1)
        out = z[:, :out_c]
        for j in range(self.rank):
            out = out + z[:, (j + 1) * out_c:(j + 2) * out_c] * alpha[:, j:j + 1]
        return out


LAYER_TYPES: dict[str, Callable[..., nn.Module]] = {
    "plain": lambda cin, cout, **_: PlainConv2d(cin, cout),
    "static-diag": lambda cin, cout, **_: StaticNSLConv2d(cin, cout, "diag"),
    "static-full": lambda cin, cout, **_: StaticNSLConv2d(cin, cout, "full"),
    "dynamic-diag": lambda cin, cout, predictor="plain", predictor_width=None, sphere_activation="cosine", **_:
        DynamicNSLConv2d(cin, cout, "diag", predictor, predictor_width, sphere_activation),
    "dynamic-full": lambda cin, cout, predictor="plain", predictor_width=None, sphere_activation="cosine", **_:
        DynamicNSLConv2d(cin, cout, "full", predictor, predictor_width, sphere_activation),
    "dynamic-lowrank": lambda cin, cout, rank=2, predictor="plain", predictor_width=None, sphere_activation="cosine",
        **_: LowRankDynamicNSLConv2d(cin, cout, rank, predictor, predictor_width, sphere_activation),
    "sphere": lambda cin, cout, sphere_activation="cosine", **_: SphereConv2d(cin, cout, sphere_activation),
}


def make_conv(name: str, in_channels: int, out_channels: int, **options: object) -> nn.Module:
    """Build a 3x3 'same' layer by name; ``options``: predictor, predictor_width, rank, sphere_activation."""
    try:
        factory = LAYER_TYPES[name]
    except KeyError:
        raise ValueError(f"unknown layer type {name!r}; choose one of {', '.join(LAYER_TYPES)}") from None
    return factory(in_channels, out_channels, **options)


def fold_static_layers(module: nn.Module) -> int:
    """Replace every StaticNSLConv2d under ``module`` by its folded plain conv; return how many."""
    folded = 0
    for name, child in list(module.named_children()):
        if isinstance(child, StaticNSLConv2d):
            setattr(module, name, child.fold())
            folded += 1
        else:
            folded += fold_static_layers(child)
    return folded
