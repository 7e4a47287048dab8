"""Turn uint8 images into embeddings, from a torch model or from an exported ONNX file."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from contract import EMBEDDING_OUTPUT, IMAGES_INPUT
from training.runtime import DeviceError, module_device

# uint8 [N, H, W, C] -> float32 [N, D] (and optionally [N, A, D] aspect embeddings)
Embedder = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]


def torch_embedder(model: nn.Module) -> Embedder:
    """Embed with a torch model wherever it is: images go to the model's device (looked up on each
    call, so a model moved later is followed), embeddings come back as NumPy arrays on the CPU."""

    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        was_training = model.training
        model.eval()
        with torch.inference_mode():
            out = model(torch.from_numpy(np.ascontiguousarray(images)).to(module_device(model)))
        model.train(was_training)
        if isinstance(out, tuple):
            return out[0].cpu().numpy(), out[1].cpu().numpy()
        return out.cpu().numpy(), None

    return run


def onnx_providers(device: str | torch.device = "cpu") -> list:
    """ONNX Runtime's providers for a torch-style device: ``cuda:N`` -> the CUDA provider on device N
    (then the CPU for any node it lacks), ``cpu`` -> the CPU alone."""
    device = torch.device(device)
    if device.type == "cuda":
        return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def onnx_embedder(path: str | Path, device: str | torch.device = "cpu", fallback_to_cpu: bool = False) -> Embedder:
    """Embed with an exported file through ONNX Runtime on ``device`` (``cpu`` or ``cuda:N``).

    When CUDA is asked for and ONNX Runtime cannot give it (a CPU-only build, or CUDA libraries it
    cannot load), raises ``training.runtime.DeviceError``, or with ``fallback_to_cpu`` says so on
    stderr and runs on the CPU: never on the CPU unasked and unsaid.
    """
    import onnxruntime as ort

    device = torch.device(device)
    if device.type != "cuda":
        session = ort.InferenceSession(str(path), providers=onnx_providers(device))
    else:
        ort.set_default_logger_severity(4)  # a failed CUDA load is reported below, once
        try:
            session = ort.InferenceSession(str(path), providers=onnx_providers(device))
        finally:
            ort.set_default_logger_severity(3)
        if session.get_providers()[0] != "CUDAExecutionProvider":
            reason = ("this onnxruntime build has no CUDA provider (install onnxruntime-gpu)"
                      if "CUDAExecutionProvider" not in ort.get_available_providers()
                      else "its CUDA provider did not load (CUDA or cuDNN libraries missing or mismatched)")
            if not fallback_to_cpu:
                raise DeviceError(f"--device {device}: ONNX Runtime cannot run there: {reason}")
            print(f"ONNX Runtime cannot run on {device} ({reason}); running {Path(path).name} on the CPU",
                  file=sys.stderr)
            session = ort.InferenceSession(str(path), providers=onnx_providers("cpu"))
    outputs = [o.name for o in session.get_outputs()]

    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        result = dict(zip(outputs, session.run(None, {IMAGES_INPUT: np.ascontiguousarray(images)})))
        aspects = [v for k, v in result.items() if k != EMBEDDING_OUTPUT]
        return result[EMBEDDING_OUTPUT], (aspects[0] if aspects else None)

    return run


def embed_all(embedder: Embedder, images: np.ndarray, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray | None]:
    """Embed ``images`` in batches; returns (embeddings [N, D], aspect embeddings [N, A, D] or None)."""
    chunks, aspect_chunks = [], []
    for start in range(0, len(images), batch_size):
        emb, aspects = embedder(images[start:start + batch_size])
        chunks.append(emb)
        if aspects is not None:
            aspect_chunks.append(aspects)
    embeddings = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
    return embeddings, (np.concatenate(aspect_chunks) if aspect_chunks else None)


def pixel_embedder(basis: np.ndarray | None = None, mean: np.ndarray | None = None, side: int = 0) -> Embedder:
    """The baseline every learned model must beat: raw pixels in [0, 1] (or their projection on a
    PCA ``basis`` after subtracting ``mean``; block means of side x side first when ``side`` > 0,
    as training/models/pixel_fusion.py takes them), L2-normalised, compared by cosine."""
    from training.models.pixel_fusion import pixel_values

    def run(images: np.ndarray) -> tuple[np.ndarray, None]:
        x = pixel_values(images, side, np.float32)
        if basis is not None:
            x = (x - mean) @ basis
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12), None

    return run
