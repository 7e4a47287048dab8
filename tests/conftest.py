"""Shared fixtures: real data, the real shipped model, real temporary directories."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO / "models" / "default.onnx"
CSN_MODEL = REPO / "models" / "csn.onnx"  # the shipped conditional (per-aspect) model
GALLERY = REPO / "service" / "gallery"


def png_bytes(array: np.ndarray) -> bytes:
    """uint8 [H, W] or [H, W, 3] -> PNG bytes."""
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="session")
def fashion_test():
    """The real Fashion-MNIST test split (from the Debian package in CI)."""
    from training.data.sources import load_raw

    _, test = load_raw("fashion-mnist")
    return test
