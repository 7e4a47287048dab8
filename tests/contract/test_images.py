"""The preprocessing contract: decode, orientation, mode, fit, and every way an upload can be bad."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from contract import ImageError, InputSpec, decode_image, prepare_image

GRAY28 = InputSpec(height=28, width=28, channels=1, fit="pad", resample="bilinear", pad_value=0)


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge size but carries almost no data (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b"")


def test_empty_not_image_truncated_and_bomb_are_distinct_errors():
    with pytest.raises(ImageError) as empty:
        decode_image(b"", max_pixels=1000)
    assert empty.value.reason == "empty"
    with pytest.raises(ImageError) as text:
        decode_image(b"hello, I am text", max_pixels=1000)
    assert text.value.reason == "not_an_image"
    whole = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)))
    with pytest.raises(ImageError) as cut:
        decode_image(whole[: len(whole) // 2], max_pixels=10_000)
    assert cut.value.reason == "corrupt_image"
    with pytest.raises(ImageError) as bomb:
        decode_image(png_header_claiming(50_000, 50_000), max_pixels=25_000_000)
    assert bomb.value.reason == "too_many_pixels"
    assert "25000000" in bomb.value.message  # names the limit
    with pytest.raises(ImageError) as over:
        decode_image(png_header_claiming(200, 100), max_pixels=19_999)
    assert over.value.reason == "too_many_pixels" and "200x100" in over.value.message and "19999" in over.value.message


def test_exif_orientation_is_applied():
    # A 20x10 image, left half black and right half white, stored with "rotate 90 CW" (orientation 6).
    array = np.zeros((10, 20), np.uint8)
    array[:, 10:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(Image.fromarray(array), "JPEG", exif=exif.tobytes(), quality=95)
    image = decode_image(data, max_pixels=10_000)
    assert image.size == (10, 20)  # width and height swapped
    upright = np.asarray(image)
    assert upright[:8].mean() < 40 and upright[-8:].mean() > 215  # black on top after rotating CW


def test_transparency_becomes_the_background_and_modes_convert():
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., :3] = 255  # white, but fully transparent...
    rgba[10:18, 10:18, 3] = 255  # ...except an opaque white square
    prepared = prepare_image(decode_image(encode(Image.fromarray(rgba, "RGBA")), max_pixels=10_000), GRAY28)
    assert prepared.shape == (28, 28, 1) and prepared.dtype == np.uint8
    assert prepared[0, 0, 0] == 0 and prepared[14, 14, 0] == 255
    rgb_spec = InputSpec(height=28, width=28, channels=3)
    gray = Image.fromarray(np.full((28, 28), 77, np.uint8))
    assert prepare_image(gray, rgb_spec).shape == (28, 28, 3)


@pytest.mark.parametrize("fit,expected_band", [("pad", True), ("crop", False), ("stretch", False)])
def test_fit_modes_keep_or_drop_aspect_ratio(fit, expected_band):
    wide = Image.fromarray(np.full((28, 56), 200, np.uint8))  # twice as wide as tall
    spec = InputSpec(height=28, width=28, channels=1, fit=fit, pad_value=0)
    out = prepare_image(wide, spec)[:, :, 0]
    assert out.shape == (28, 28)
    # pad letterboxes (black bands top and bottom); crop and stretch fill the frame.
    assert (out[0].max() == 0) == expected_band
    assert out[14, 14] == 200
