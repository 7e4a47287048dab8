"""Ways to compute an exact dynamic-diagonal NSL conv, timed side by side in PyTorch and ONNX Runtime.

    python -m bench nsl-kernels [--batch 64 --channels 32 --size 28]

y(p) = Σ_k m_k(p) · w_kᵀ x(p + δ_k), five exact formulations:
- expand-output: a 1x1 conv to 9·Cout channels, then per-tap shift, weight and sum (the NSL notes' form);
- slice-stack: 9 sliced shifted copies of the input (9·Cin channels), weighted, then one 1x1 conv;
- unfold: im2col with F.unfold, weighted, then a matmul;
- per-tap convs: nine single-tap 1x1 convs of the shifted input, each weighted and summed
  (``training.layers.dns_per_tap``, what training runs);
- one-hot stack: the shifted copies from one depthwise conv with one-hot kernels, weighted, then
  one 1x1 conv (``training.layers.dns_stacked_input``, what the exported graph runs);
and a plain 3x3 conv for scale. Checks all agree, then reports PyTorch forward+backward, PyTorch
forward, and ONNX Runtime forward (each formulation exported on its own), medians of interleaved
rounds. Writes docs/nsl-kernels.md.
"""

from __future__ import annotations

import io
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.common import DOCS, make_parser, markdown_table, page_header, write_json
from training.layers import dns_per_tap, dns_stacked_input
from training.layers.nsl import TAP_OFFSETS, shifted_inputs

Formulation = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def expand_output(x: torch.Tensor, w: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    _, _, h, wd = x.shape
    out = w.shape[0]
    z = F.pad(F.conv2d(x, w.permute(2, 3, 0, 1).reshape(9 * out, -1, 1, 1)), (1, 1, 1, 1))
    y = 0
    for k, (dy, dx) in enumerate(TAP_OFFSETS):
        y = y + z[:, k * out:(k + 1) * out, 1 + dy:1 + dy + h, 1 + dx:1 + dx + wd] * m[:, k:k + 1]
    return y


def slice_stack(x: torch.Tensor, w: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    n, c, h, wd = x.shape
    mixed = (torch.stack(shifted_inputs(x), 1) * m.unsqueeze(2)).reshape(n, 9 * c, h, wd)
    return F.conv2d(mixed, w.reshape(w.shape[0], c, 9).transpose(1, 2).reshape(-1, 9 * c, 1, 1))


def unfold(x: torch.Tensor, w: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    n, c, h, wd = x.shape
    u = F.unfold(x, 3, padding=1).view(n, c, 9, h * wd)
    mixed = (u * m.view(n, 1, 9, h * wd)).view(n, c * 9, h * wd)
    return torch.matmul(w.view(w.shape[0], c * 9), mixed).view(n, -1, h, wd)


PLAIN = "plain 3x3 conv (no M)"
FORMS: dict[str, Formulation] = {
    PLAIN: lambda x, w, m: F.conv2d(x, w, padding=1),
    "expand-output (1x1 to 9·Cout, slices)": expand_output,
    "slice-stack (9 slices, 9·Cin)": slice_stack,
    "unfold + matmul": unfold,
    "per-tap convs (training)": dns_per_tap,
    "one-hot stack (exported graph)": dns_stacked_input,
}


class _Layer(torch.nn.Module):
    """One formulation with a fixed kernel, for export: inputs x and m."""

    def __init__(self, form: Formulation, weight: torch.Tensor) -> None:
        super().__init__()
        self.form, self.weight = form, torch.nn.Parameter(weight.detach().clone())

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return self.form(x, self.weight, m)


def ort_call(form: Formulation, weight: torch.Tensor, x: torch.Tensor, m: torch.Tensor) -> Callable[[], np.ndarray]:
    """The formulation exported alone and run by ONNX Runtime on (x, m)."""
    import onnxruntime as ort

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Layer(form, weight).eval(), (x, m), buffer, input_names=["x", "m"], dynamo=True)
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    # The plain conv's graph has no input m.
    feed = {i.name: {"x": x, "m": m}[i.name].numpy() for i in session.get_inputs()}
    return lambda: session.run(None, feed)[0]


def seconds(fn: Callable[[], object], min_seconds: float = 0.2) -> float:
    """Mean seconds per call over at least ``min_seconds`` (after one warm-up call)."""
    fn()
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < min_seconds or calls == 0:
        fn()
        calls += 1
    return elapsed / calls


def main(argv: list[str] | None = None) -> None:
    parser = make_parser("nsl-kernels", __doc__)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--output", type=Path, default=DOCS / "nsl-kernels.md")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    c, s = args.channels, args.size
    x = torch.randn(args.batch, c, s, s, requires_grad=True)
    w = torch.randn(c, c, 3, 3, requires_grad=True)
    m = (1 + 0.1 * torch.randn(args.batch, 9, s, s)).requires_grad_()
    reference = dns_per_tap(x, w, m).detach()
    ort_calls = {name: ort_call(form, w.detach(), x.detach(), m.detach()) for name, form in FORMS.items()}
    for name, form in FORMS.items():
        if name != PLAIN:
            assert torch.allclose(form(x, w, m), reference, atol=1e-3, rtol=1e-4), name
            assert np.allclose(ort_calls[name](), reference.numpy(), atol=1e-3, rtol=1e-4), name
    timings: dict[str, dict[str, list[float]]] = {name: {"train": [], "torch": [], "ort": []} for name in FORMS}
    for _ in range(args.repeats):  # interleaved rounds
        for name, form in FORMS.items():
            timings[name]["train"].append(seconds(lambda form=form: form(x, w, m).sum().backward()))
            with torch.inference_mode():
                timings[name]["torch"].append(seconds(lambda form=form: form(x.detach(), w.detach(), m.detach())))
            timings[name]["ort"].append(seconds(ort_calls[name]))
    median = {name: {kind: statistics.median(v) for kind, v in t.items()} for name, t in timings.items()}
    rows = []
    for name in FORMS:
        row = [name]
        for kind in ("train", "torch", "ort"):
            row += [f"{median[name][kind] * 1000:.2f}", f"{median[name][kind] / median[PLAIN][kind]:.1f}x"]
        rows.append(row)
        print("  ".join(row), flush=True)
    text = "\n".join([
        *page_header("Exact dynamic NSL: formulations compared"),
        f"One layer, batch {args.batch}, {c} to {c} channels, {s}x{s}, float32 on the CPU, all cores; median of "
        f"{args.repeats} interleaved rounds. ONNX Runtime runs each formulation exported on its own. All "
        "formulations agree with each other in PyTorch and in ONNX Runtime (checked).",
        "",
        markdown_table(["formulation", "PyTorch fwd+bwd (ms)", "vs plain", "PyTorch fwd (ms)", "vs plain",
                        "ONNX Runtime fwd (ms)", "vs plain"], rows),
        "",
    ])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    write_json(args.output, {"batch": args.batch, "channels": c, "size": s,
                             "seconds": {name: median[name] for name in FORMS}})
    print(f"wrote {args.output}")
