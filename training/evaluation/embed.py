"""Turn uint8 images into embeddings, from a torch model or from an exported ONNX file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from contract import EMBEDDING_OUTPUT, IMAGES_INPUT

# uint8 [N, H, W, C] -> float32 [N, D] (and optionally [N, A, D] aspect embeddings)
Embedder = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]


def torch_embedder(model: nn.Module) -> Embedder:
    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        was_training = model.training
        model.eval()
        with torch.inference_mode():
            out = model(torch.from_numpy(np.ascontiguousarray(images)))
        model.train(was_training)
        if isinstance(out, tuple):
            return out[0].numpy(), out[1].numpy()
        return out.numpy(), None

    return run


def onnx_embedder(path: str | Path) -> Embedder:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
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


def pixel_embedder(basis: np.ndarray | None = None, mean: np.ndarray | None = None) -> Embedder:
    """The baseline every learned model must beat: raw pixels in [0, 1] (or their projection on a
    PCA ``basis`` after subtracting ``mean``), L2-normalised, compared by cosine."""

    def run(images: np.ndarray) -> tuple[np.ndarray, None]:
        x = images.reshape(len(images), -1).astype(np.float32) / 255.0
        if basis is not None:
            x = (x - mean) @ basis
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12), None

    return run
