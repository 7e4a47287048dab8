"""Inference off the event loop: decode, prepare and embed uploads for the routes."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image
from starlette.concurrency import run_in_threadpool

from contract import ImageError, decode_image, prepare_image
from service.batching import DynamicBatcher
from service.model_runner import Embeddings, ModelRunner

THUMBNAIL_SIDE = 128


@dataclass
class PreparedImage:
    array: np.ndarray  # the model's uint8 [H, W, C] input
    thumbnail: bytes | None  # PNG, longest side <= THUMBNAIL_SIDE, of the original


class ImagePreparationError(Exception):
    def __init__(self, field: str, error: ImageError) -> None:
        super().__init__(error.message)
        self.field, self.error = field, error


class InferenceEngine:
    def __init__(self, runner: ModelRunner, max_pixels: int, batcher: DynamicBatcher | None = None) -> None:
        self.runner = runner
        self.max_pixels = max_pixels
        self.batcher = batcher  # set by the app's lifespan when batching is on

    def _prepare(self, uploads: list[tuple[str, bytes]], thumbnails: bool) -> list[PreparedImage]:
        prepared = []
        for field, data in uploads:
            try:
                image = decode_image(data, max_pixels=self.max_pixels, name=field)
                array = prepare_image(image, self.runner.spec.input)
            except ImageError as exc:
                raise ImagePreparationError(field, exc) from None
            prepared.append(PreparedImage(array, make_thumbnail(image) if thumbnails else None))
        return prepared

    async def prepare(self, uploads: list[tuple[str, bytes]], thumbnails: bool = False) -> list[PreparedImage]:
        """Decode and prepare in a worker thread; raises ImagePreparationError naming the field."""
        return await run_in_threadpool(self._prepare, uploads, thumbnails)

    async def embed(self, images: list[np.ndarray]) -> Embeddings:
        """Embed prepared images: through the dynamic batcher, or one ONNX Runtime call per request."""
        stacked = np.stack(images)
        if self.batcher is not None:
            return await self.batcher.embed(stacked)
        return await run_in_threadpool(self.runner.embed, stacked)


def make_thumbnail(image: Image.Image) -> bytes:
    thumb = image.convert("RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB")
    thumb.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    out = io.BytesIO()
    thumb.save(out, format="PNG", optimize=True)
    return out.getvalue()
