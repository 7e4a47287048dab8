from __future__ import annotations

import numpy as np

DIM = 16
MODEL = {"name": "test", "version": "1"}


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)
