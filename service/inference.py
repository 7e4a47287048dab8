"""Inference off the event loop: decode, prepare and embed uploads for the routes."""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image
from starlette.concurrency import run_in_threadpool

from contract import ImageError, load_image, open_image, prepare_image
from service.batching import DynamicBatcher
from service.model_runner import Embeddings, ModelRunner

THUMBNAIL_SIDE = 128
# Decoded on the event loop when a request's images are this small (about 0.1 ms of work for a
# 28x28 PNG; a thread hop costs more): bytes of the files and pixels of the images, all together.
INLINE_BYTES = 64 * 1024
INLINE_PIXELS = 128 * 128


@dataclass
class PreparedImage:
    array: np.ndarray  # the model's uint8 [H, W, C] input
    thumbnail: bytes | None  # PNG, longest side <= THUMBNAIL_SIDE, of the original


class ImagePreparationError(Exception):
    def __init__(self, field: str, error: ImageError) -> None:
        super().__init__(error.message)
        self.field, self.error = field, error


class PreparationAbandoned(Exception):
    """The client went away (or the request timed out) while its images were being prepared."""


class InferenceEngine:
    def __init__(self, runner: ModelRunner, max_pixels: int, batcher: DynamicBatcher | None = None,
                 max_request_pixels: int | None = None) -> None:
        self.runner = runner
        self.max_pixels = max_pixels
        self.max_request_pixels = max_request_pixels  # all images of one request together
        self.batcher = batcher  # set by the app's lifespan when batching is on

    def _prepare(self, uploads: list[tuple[str, bytes]], thumbnails: bool,
                 abandoned: threading.Event | None = None) -> list[PreparedImage]:
        return self._finish(self._open(uploads), thumbnails, abandoned)

    def _open(self, uploads: list[tuple[str, bytes]]) -> list[tuple[str, Image.Image]]:
        # Headers first (cheap): the per-request pixel limit is checked before any pixel is decoded.
        opened = []
        for field, data in uploads:
            try:
                opened.append((field, open_image(data, max_pixels=self.max_pixels, name=field)))
            except ImageError as exc:
                raise ImagePreparationError(field, exc) from None
        total = sum(image.width * image.height for _, image in opened)
        if self.max_request_pixels is not None and total > self.max_request_pixels:
            raise ImagePreparationError(opened[0][0], ImageError(
                "too_many_pixels", f"the {len(opened)} images hold {total} pixels together, over the limit of "
                f"{self.max_request_pixels} per request (LIKENESS_MAX_PIXELS_PER_REQUEST)"))
        return opened

    def _finish(self, opened: list[tuple[str, Image.Image]], thumbnails: bool,
                abandoned: threading.Event | None = None) -> list[PreparedImage]:
        prepared = []
        for field, image in opened:
            if abandoned is not None and abandoned.is_set():
                raise PreparationAbandoned()
            try:
                image = load_image(image, name=field)
                array = prepare_image(image, self.runner.spec.input, name=field)
            except ImageError as exc:
                raise ImagePreparationError(field, exc) from None
            prepared.append(PreparedImage(array, make_thumbnail(image) if thumbnails else None))
        return prepared

    async def prepare(self, uploads: list[tuple[str, bytes]], thumbnails: bool = False,
                      abandoned: threading.Event | None = None) -> list[PreparedImage]:
        """Decode and prepare; raises ImagePreparationError naming the field, or PreparationAbandoned
        once ``abandoned`` is set (the worker stops before the next image).

        Small images (at most INLINE_BYTES of files and INLINE_PIXELS together, no thumbnails) are
        done right here: decoding them takes less CPU than handing them to a worker thread and back.
        Anything larger goes to a worker thread, so the event loop never waits on a big decode."""
        if not thumbnails and sum(len(data) for _, data in uploads) <= INLINE_BYTES:
            opened = self._open(uploads)
            if sum(image.width * image.height for _, image in opened) <= INLINE_PIXELS:
                return self._finish(opened, thumbnails, abandoned)
            return await run_in_threadpool(self._finish, opened, thumbnails, abandoned)
        return await run_in_threadpool(self._prepare, uploads, thumbnails, abandoned)

    async def embed(self, images: list[np.ndarray]) -> Embeddings:
        """Embed prepared images: through the dynamic batcher, or one ONNX Runtime call per request."""
        stacked = np.stack(images)
        if self.batcher is not None:
            return await self.batcher.embed(stacked)
        return await run_in_threadpool(self.runner.embed, stacked)


def make_thumbnail(image: Image.Image) -> bytes | None:
    """A PNG of the image, longest side THUMBNAIL_SIDE; None for a mode Pillow cannot show (the
    model may still read it, e.g. 16-bit or float images: their item simply has no thumbnail)."""
    try:
        thumb = image.convert("RGBA" if image.mode in ("RGBA", "LA", "PA", "P") else "RGB")
        thumb.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        out = io.BytesIO()
        thumb.save(out, format="PNG", optimize=True)
    except Exception:  # noqa: BLE001 - a thumbnail is a convenience; the item is stored without one
        return None
    return out.getvalue()
