"""Image preprocessing: the one path from bytes or a file to the model's uint8 input.

decode (Pillow) -> EXIF orientation -> model mode (L or RGB, transparency onto the background)
-> resize to the model's size with the spec's fit mode and filter -> uint8 [H, W, C].

Every way an input can fail (unknown format, truncated or corrupt data, a header that lies, a
mode that cannot be converted) raises :class:`ImageError`; nothing else escapes from Pillow.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from contract.spec import InputSpec

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


class ImageError(ValueError):
    """An input that is not a usable image. ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


# The formats an upload may be in: the common raster formats (and torchvision's image-folder
# extensions). Pillow can open many more; some of them (EPS) run Ghostscript on what they open,
# others are rarely tested scientific or legacy formats, so they are refused before any plugin runs.
ACCEPTED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF", "PPM")
ACCEPTED_NAMES = "PNG, JPEG, GIF, BMP, WebP, TIFF or PNM (PBM/PGM/PPM)"
# The file names of those formats: what training reads from a folder and `likeness index load`
# sends, one list so the two cannot disagree about which photos are in a catalogue.
IMAGE_FILE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".pbm", ".pgm", ".ppm")


# The decode budget, checked on the header before any pixel is decoded, so that what a decode
# allocates and how long it runs are bounded by the image's own size, whatever the format:
# - pixels: the caller's ``max_pixels`` (width x height of the image);
# - tiles and strips (TIFF): a block the decoder fills at once may not hold more than
#   MAX_BLOCK_FACTOR x the image's pixels (at least MIN_BLOCK_PIXELS): a 16x16 image declaring one
#   46336x46336 tile made libtiff allocate and fill 2 GB;
# - scans (progressive JPEG): each scan walks every block of the image again, so a 300 KB file of
#   20,000 near-empty scans took 10 s of CPU; no encoder writes more than a few dozen;
# - frames (GIF, APNG, WebP, multi-page TIFF): only the first frame is ever decoded.
MAX_JPEG_SCANS = 100
MAX_BLOCK_FACTOR = 4
MIN_BLOCK_PIXELS = 512 * 512
_JPEG_SOS = b"\xff\xda"  # start of scan; entropy-coded data stuffs every 0xFF, so it never appears there
_TIFF_TILE_WIDTH, _TIFF_TILE_LENGTH = 322, 323


def open_image(data: bytes, *, max_pixels: int, name: str = "image") -> Image.Image:
    """Read an image's header only (format, size, mode) and check the decode budget (pixels,
    tiles, scans; see above); no pixel is decoded yet, so a decompression bomb costs nothing.
    Finish with :func:`load_image`.

    Raises :class:`ImageError` for empty, unrecognised, oversized or corrupt input.
    """
    if not data:
        raise ImageError("empty", f"{name}: the file is empty")
    try:
        with warnings.catch_warnings():
            # Our own limit below is the one that applies; Pillow's warnings would only be noise.
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError:
        raise ImageError("not_an_image", f"{name}: not a recognised image format (send {ACCEPTED_NAMES})") from None
    except Image.DecompressionBombError:
        raise ImageError("too_many_pixels", f"{name}: image exceeds the pixel limit of {max_pixels}") from None
    except Exception as exc:  # noqa: BLE001 - a plugin reading a hostile header can raise anything
        raise ImageError("corrupt_image", f"{name}: the image header is truncated or corrupt ({_reason(exc)})") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError("not_an_image", f"{name}: image has no pixels")
    if width * height > max_pixels:
        raise ImageError(
            "too_many_pixels",
            f"{name}: image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}",
        )
    _check_decode_work(image, data, name)
    return image


def _check_decode_work(image: Image.Image, data: bytes, name: str) -> None:
    """Refuse a header that promises more decoding work than its pixels: too many JPEG scans, or a
    TIFF tile far larger than the image."""
    if image.format == "JPEG":
        scans = data.count(_JPEG_SOS)
        if scans > MAX_JPEG_SCANS:
            raise ImageError("too_much_decoding", f"{name}: the JPEG has {scans} scans, over the limit of "
                             f"{MAX_JPEG_SCANS}; re-save it (any encoder writes far fewer)")
    elif image.format == "TIFF":
        tags = getattr(image, "tag_v2", {})
        tile = (tags.get(_TIFF_TILE_WIDTH), tags.get(_TIFF_TILE_LENGTH))
        if tile[0] is not None or tile[1] is not None:
            width, height = (int(v) if isinstance(v, int) else 0 for v in tile)
            budget = max(MAX_BLOCK_FACTOR * image.width * image.height, MIN_BLOCK_PIXELS)
            if width < 1 or height < 1 or width * height > budget:
                raise ImageError("too_much_decoding", f"{name}: the TIFF declares {width}x{height} tiles for a "
                                 f"{image.width}x{image.height} image, over the limit of {budget} pixels a tile")


def load_image(image: Image.Image, *, name: str = "image") -> Image.Image:
    """Decode the pixels of an image from :func:`open_image` and apply its EXIF orientation."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.load()
            return ImageOps.exif_transpose(image)
    except Exception as exc:  # noqa: BLE001 - truncated data, bad EXIF, decoder errors of every kind
        raise ImageError("corrupt_image", f"{name}: image data is truncated or corrupt ({_reason(exc)})") from None


def decode_image(data: bytes, *, max_pixels: int, name: str = "image") -> Image.Image:
    """Decode bytes into a fully loaded, EXIF-oriented Pillow image.

    The pixel limit is checked on the header, before any pixel is decoded, so a decompression
    bomb costs nothing. Raises :class:`ImageError` for empty, unreadable, oversized or truncated input.
    """
    return load_image(open_image(data, max_pixels=max_pixels, name=name), name=name)


def _reason(exc: Exception) -> str:
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return text or type(exc).__name__


def prepare_image(image: Image.Image, spec: InputSpec, *, name: str = "image") -> np.ndarray:
    """Convert to the model's mode and size; return uint8 [H, W, C] (C is 1 or 3).

    Raises :class:`ImageError` (``unsupported_image``) for a mode Pillow cannot convert (LAB, HSV).
    """
    try:
        return _prepare(image, spec)
    except Exception as exc:  # noqa: BLE001 - Pillow refuses some conversions with ValueError, others otherwise
        raise ImageError("unsupported_image", f"{name}: a {image.mode} image cannot be converted to the "
                         f"model's {spec.mode} input ({_reason(exc)})") from None


def _prepare(image: Image.Image, spec: InputSpec) -> np.ndarray:
    image = _to_mode(image, spec.mode, spec.pad_value)
    size = (spec.width, spec.height)
    resample = _RESAMPLE[spec.resample]
    if spec.fit in CONTENT_FITS:
        image = frame_content(image, robust=spec.fit == "content-robust")
    if image.size != size:
        if spec.fit == "stretch":
            image = image.resize(size, resample)
        elif spec.fit in ("pad", *CONTENT_FITS):
            fill = spec.pad_value if spec.mode == "L" else (spec.pad_value,) * 3
            image = ImageOps.pad(image, size, method=resample, color=fill)
        else:
            image = ImageOps.fit(image, size, method=resample)
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return np.ascontiguousarray(array)


# Framing the content (fit "content"): the same image with a border, letterbox bars or padding added
# (of any one colour) frames its content the same way, so a model sees the same input. A line (row or
# column) whose values span at most FRAME_TOLERANCE in every channel is background: such lines are
# peeled off every side, again and again (a white frame, then the black background inside it), and
# what is left, the content with its own shape, is then padded to the model's square as usual.
# Only whole lines of one colour go: a caption or a logo stops the peeling at its own edge, and
# JPEG noise or blur move the edge by a pixel, not the content. (A frame from the content's moments
# moved with every blur and took 1.7 points of P@1 from likeness-fmnist: docs/near-duplicates.md.)
FRAME_TOLERANCE = 24
# fit "content-robust" (photos): a line is background when all but this share of its pixels lie
# within FRAME_TOLERANCE of the line's median colour. A photo's background is rarely flat to the
# pixel: its texture, JPEG ringing or a sharpened copy's speckle put a few pixels out of tolerance,
# so under the strict rule the frame of the same photo moved with the edit. On 200 of the demo
# shop's test photos it moved by more than 5% of the side for 97% of sharpened copies, 66% of JPEG 30
# ones and 23% of blurred ones; with this rule 71%, 6% and 11% (the script in docs/near-duplicates.md).
# A garment tip of a few pixels may be peeled off: the same way in the original and in its copies.
FRAME_OUTLIERS = 0.05
CONTENT_FITS = ("content", "content-robust")
# The lines are judged on the image reduced to at most this side (a box average): exact for the
# sizes of a model's input, a pixel or two of slack on a photo, at a fraction of the cost.
FRAME_STATS_SIDE = 128


def frame_content(image: Image.Image, robust: bool = False) -> Image.Image:
    """The image (mode L or RGB) without the lines of one colour round its content; the image itself
    when there are none (or when it is all one colour). ``robust``: a line may hold FRAME_OUTLIERS
    of pixels off its colour (fit "content-robust")."""
    factor = max(1, -(-max(image.size) // FRAME_STATS_SIDE))
    small = image.reduce(factor) if factor > 1 else image
    pixels = np.asarray(small, dtype=np.int16)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    top, bottom, left, right = _peel(pixels, robust)
    if (top, left) == (0, 0) and (bottom, right) == pixels.shape[:2]:
        return image
    return image.crop((left * factor, top * factor, min(image.width, right * factor),
                       min(image.height, bottom * factor)))


def _peel(pixels: np.ndarray, robust: bool = False) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of [H, W, C] ``pixels`` after peeling uniform lines off every side
    until none is left."""
    top, bottom, left, right = 0, pixels.shape[0], 0, pixels.shape[1]
    while bottom - top > 2 and right - left > 2:
        inner = pixels[top:bottom, left:right]
        flat_rows, flat_cols = _flat_lines(inner, 1, robust), _flat_lines(inner, 0, robust)
        peel = [_run(flat_rows), _run(flat_rows[::-1]), _run(flat_cols), _run(flat_cols[::-1])]
        # Never peel everything: an image of one colour keeps its middle.
        if not any(peel) or bottom - top - peel[0] - peel[1] < 1 or right - left - peel[2] - peel[3] < 1:
            break
        top, bottom, left, right = top + peel[0], bottom - peel[1], left + peel[2], right - peel[3]
    return top, bottom, left, right


def _flat_lines(inner: np.ndarray, axis: int, robust: bool) -> list[bool]:
    """Which rows (``axis`` 1) or columns (``axis`` 0) of [H, W, C] ``inner`` are of one colour."""
    if not robust:
        return ((inner.max(axis=axis) - inner.min(axis=axis)) <= FRAME_TOLERANCE).all(axis=1).tolist()
    off = (np.abs(inner - np.median(inner, axis=axis, keepdims=True)) > FRAME_TOLERANCE).any(axis=2)
    return (off.mean(axis=axis) <= FRAME_OUTLIERS).tolist()


def _run(flags: list[bool]) -> int:
    """How many leading entries of ``flags`` are True."""
    for count, flag in enumerate(flags):
        if not flag:
            return count
    return len(flags)


def load_image_file(path: str | Path, spec: InputSpec, *, max_pixels: int = 50_000_000) -> np.ndarray:
    """Read an image file from disk through the same path the service uses for uploads."""
    path = Path(path)
    return prepare_image(decode_image(path.read_bytes(), max_pixels=max_pixels, name=str(path)), spec, name=str(path))


def _to_mode(image: Image.Image, mode: str, background: int) -> Image.Image:
    if image.mode == mode:
        return image
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        # Transparent pixels become the model's background rather than whatever colour they hide.
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (background, background, background, 255))
        image = Image.alpha_composite(canvas, rgba)
    return image.convert(mode)
