"""The edits a copy of an image meets, in one place: what evaluation measures and training learns from.

Each edit works on a Pillow image of any size, so the same list measures 28-pixel garments and
128-pixel photos; sizes are fractions of the image's side. An evaluation :data:`Edit` ends in the
bytes of a file (PNG or JPEG), because that is what reaches the service.

- :data:`LIGHT_EDITS`: the 16 light edits the project has measured since 1.0 (re-encoding,
  rescaling, a small crop resized back, a shift, brightness and contrast), kept as they were so
  cards stay comparable.
- :data:`USER_EDITS`: the edits users make, by family (issue #29): added borders, letterboxing and
  padding, small rotations, a side cut off without resizing back, overlays (a watermark, a caption, a
  logo in a corner), sharpening and blur, strong JPEG, and pairs of these.
- :data:`MIRROR`: a horizontal mirror, measured and reported apart. likeness counts a mirrored copy
  as the same image (as the image copy detection benchmarks do: a flip is the cheapest way to
  disguise a re-upload), and trains on it; docs/near-duplicates.md says so.
- training.data.random_edits: the same kinds with random strengths, positions, colours and texts,
  for the instance term's edited view in training. The measured list uses fixed values inside those
  ranges and texts training never draws.
"""

from __future__ import annotations

import io
from collections.abc import Callable

from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

Edit = Callable[[Image.Image], bytes]
Colour = int | tuple[int, int, int]


# files ----------------------------------------------------------------------------------------
def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def jpeg(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    (image if image.mode in ("L", "RGB") else image.convert("RGB")).save(out, format="JPEG", quality=quality)
    return out.getvalue()


# geometry -------------------------------------------------------------------------------------
def _side(image: Image.Image, fraction: float) -> int:
    """``fraction`` of the image's longest side in pixels, at least 1."""
    return max(1, round(max(image.size) * fraction))


def _colour(image: Image.Image, grey: int | None) -> Colour:
    """A grey level in the image's mode; None: the top-left pixel (the image's own background)."""
    if grey is None:
        return image.getpixel((0, 0))  # type: ignore[return-value]
    return grey if image.mode == "L" else (grey, grey, grey)


def scaled(image: Image.Image, factor: float) -> Image.Image:
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.resize(size, Image.Resampling.BICUBIC if factor > 1 else Image.Resampling.BILINEAR)


def shifted(image: Image.Image, dx: int, dy: int) -> Image.Image:
    """Move the content by (dx, dy) pixels; the uncovered border takes the corner pixel's value."""
    canvas = Image.new(image.mode, image.size, image.getpixel((0, 0)))
    canvas.paste(image, (dx, dy))
    return canvas


def cropped(image: Image.Image, fraction: float) -> Image.Image:
    """Cut ``fraction`` of the width and height (half from each side), then resize back."""
    dx, dy = max(1, round(image.width * fraction / 2)), max(1, round(image.height * fraction / 2))
    return image.crop((dx, dy, image.width - dx, image.height - dy)).resize(image.size, Image.Resampling.BICUBIC)


def bordered(image: Image.Image, fraction: float, grey: int | None = None) -> Image.Image:
    """A border of ``fraction`` of the longest side added all round (the image keeps its pixels, so
    the content shrinks in the frame), in grey level ``grey`` or the image's own background."""
    return ImageOps.expand(image, border=_side(image, fraction), fill=_colour(image, grey))


def letterboxed(image: Image.Image, ratio: float, grey: int | None = None) -> Image.Image:
    """Bars added on two sides to reach the aspect ratio ``ratio`` (width / height): wider than the
    image gives bars left and right, narrower gives them above and below."""
    width, height = image.size
    size = (max(width, round(height * ratio)), max(height, round(width / ratio)))
    canvas = Image.new(image.mode, size, _colour(image, grey))
    canvas.paste(image, ((size[0] - width) // 2, (size[1] - height) // 2))
    return canvas


def padded_in_frame(image: Image.Image, scale: float, grey: int | None = None, dx: float = 0.0,
                    dy: float = 0.0) -> Image.Image:
    """The image shrunk to ``scale`` of its size on a canvas of its own size, offset from the centre
    by (dx, dy) fractions of the free space (-1 to 1)."""
    small = scaled(image, scale)
    canvas = Image.new(image.mode, image.size, _colour(image, grey))
    free_x, free_y = image.width - small.width, image.height - small.height
    canvas.paste(small, (round(free_x * (1 + dx) / 2), round(free_y * (1 + dy) / 2)))
    return canvas


def rotated(image: Image.Image, degrees: float, grey: int | None = None) -> Image.Image:
    """Rotated about the centre, same size; the corners it uncovers take ``grey`` or the background."""
    return image.rotate(degrees, resample=Image.Resampling.BILINEAR, fillcolor=_colour(image, grey))


def cut_side(image: Image.Image, fraction: float, side: str) -> Image.Image:
    """``fraction`` of the image cut off one side (left, right, top, bottom), not resized back."""
    width, height = image.size
    cut = max(1, round((width if side in ("left", "right") else height) * fraction))
    box = {"left": (cut, 0, width, height), "right": (0, 0, width - cut, height),
           "top": (0, cut, width, height), "bottom": (0, 0, width, height - cut)}[side]
    return image.crop(box)


def mirrored(image: Image.Image) -> Image.Image:
    return ImageOps.mirror(image)


# overlays -------------------------------------------------------------------------------------
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow's own font (no system fonts needed), scalable where Pillow has FreeType.
    return ImageFont.load_default(size=max(6, size))


def _corner_position(image: Image.Image, size: tuple[int, int], corner: str, margin: int) -> tuple[int, int]:
    x = margin if "left" in corner else image.width - size[0] - margin
    y = margin if "top" in corner else image.height - size[1] - margin
    return x, y


def text_overlay(image: Image.Image, text: str, height: float, corner: str = "bottom right", grey: int = 255,
                 opacity: float = 1.0) -> Image.Image:
    """``text`` about ``height`` x the image's height tall in a corner (or "bottom" centre), in grey
    level ``grey`` with ``opacity``: a watermark (small, half transparent) or a caption (solid)."""
    rgba = image.convert("RGBA")
    layer = Image.new("RGBA", rgba.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    font = _font(round(image.height * height))
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    size = (right - left, bottom - top)
    if corner == "bottom":
        x, y = (image.width - size[0]) // 2, image.height - size[1] - 1
    else:
        x, y = _corner_position(image, size, corner, 1)
    draw.text((x - left, y - top), text, font=font, fill=(grey, grey, grey, round(255 * opacity)))
    return Image.alpha_composite(rgba, layer).convert(image.mode)


def logo_overlay(image: Image.Image, size: float, corner: str = "top left", shape: str = "disc",
                 colour: tuple[int, int, int] = (200, 40, 40)) -> Image.Image:
    """A solid shape ``size`` x the longest side across in a corner: a shop's or a site's logo."""
    image = image.copy()
    draw = ImageDraw.Draw(image)
    side = _side(image, size)
    x, y = _corner_position(image, (side, side), corner, max(1, side // 4))
    fill: Colour = round(sum(colour) / 3) if image.mode == "L" else colour
    box = (x, y, x + side - 1, y + side - 1)
    if shape == "disc":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(x + side / 2, y), (x + side - 1, y + side - 1), (x, y + side - 1)], fill=fill)
    return image


# photometric ----------------------------------------------------------------------------------
def brightness(image: Image.Image, factor: float) -> Image.Image:
    return ImageEnhance.Brightness(image).enhance(factor)


def contrast(image: Image.Image, factor: float) -> Image.Image:
    return ImageEnhance.Contrast(image).enhance(factor)


def blurred(image: Image.Image, sigma: float) -> Image.Image:
    """Gaussian blur of ``sigma`` x the longest side / 28 pixels: the same look at any size."""
    return image.filter(ImageFilter.GaussianBlur(sigma * max(image.size) / 28))


def sharpened(image: Image.Image, percent: int = 150) -> Image.Image:
    return image.filter(ImageFilter.UnsharpMask(radius=max(1, round(2 * max(image.size) / 28)), percent=percent,
                                                threshold=0))


# the measured lists ---------------------------------------------------------------------------
LIGHT_EDITS: dict[str, Edit] = {
    "jpeg q90": lambda im: jpeg(im, 90),
    "jpeg q70": lambda im: jpeg(im, 70),
    "jpeg q50": lambda im: jpeg(im, 50),
    "upscale 4x, RGB, jpeg q95": lambda im: jpeg(scaled(im, 4).convert("RGB"), 95),
    "upscale 2x": lambda im: png(scaled(im, 2)),
    "downscale 0.75x": lambda im: png(scaled(im, 0.75)),
    "RGB": lambda im: png(im.convert("RGB")),
    "brightness x0.85": lambda im: png(brightness(im, 0.85)),
    "brightness x1.15": lambda im: png(brightness(im, 1.15)),
    "contrast x0.8": lambda im: png(contrast(im, 0.8)),
    "contrast x1.2": lambda im: png(contrast(im, 1.2)),
    "shift 1px": lambda im: png(shifted(im, 1, 0)),
    "shift 2px": lambda im: png(shifted(im, 1, 1)),
    "crop 8% and resize back": lambda im: png(cropped(im, 0.08)),
    "brightness x0.9 + jpeg q80": lambda im: jpeg(brightness(im, 0.9), 80),
    "crop 8% + jpeg q80": lambda im: jpeg(cropped(im, 0.08), 80),
}

WHITE, BLACK = 255, 0

USER_EDITS: dict[str, dict[str, Edit]] = {
    "border": {
        # 2 pixels at 28: the garment is then 87% of the frame (issue #29's first row).
        "border 7%, background": lambda im: png(bordered(im, 0.07)),
        "border 6%, white": lambda im: png(bordered(im, 0.06, WHITE)),
        "letterbox to 16:9": lambda im: png(letterboxed(im, 16 / 9)),
        "letterbox to 3:4, white": lambda im: png(letterboxed(im, 3 / 4, WHITE)),
        "shrunk to 80% in its frame": lambda im: png(padded_in_frame(im, 0.8)),
    },
    "rotation": {
        "rotate 2 degrees": lambda im: png(rotated(im, 2)),
        "rotate 4 degrees": lambda im: png(rotated(im, 4)),
        "rotate -5 degrees": lambda im: png(rotated(im, -5)),
    },
    "cut side": {
        # 3 pixels at 28.
        "cut 11% off the right": lambda im: png(cut_side(im, 0.11, "right")),
        "cut 12% off the top": lambda im: png(cut_side(im, 0.12, "top")),
        "cut 6% off the left": lambda im: png(cut_side(im, 0.06, "left")),
    },
    # Sizes of a shop's or a site's marks: text an eighth of the image high, a logo a tenth across.
    "overlay": {
        "watermark in a corner": lambda im: png(text_overlay(im, "©2026", 0.12, "bottom right", WHITE, 0.5)),
        "caption": lambda im: png(text_overlay(im, "NEW IN", 0.14, "bottom", WHITE)),
        "logo in a corner": lambda im: png(logo_overlay(im, 0.1, "top left")),
    },
    "sharpen and blur": {
        "sharpen": lambda im: png(sharpened(im)),
        "blur": lambda im: png(blurred(im, 0.8)),
    },
    "strong jpeg": {
        "jpeg q30": lambda im: jpeg(im, 30),
    },
    "pairs": {
        "contrast x0.7 + jpeg q60": lambda im: jpeg(contrast(im, 0.7), 60),
        "border 7% + jpeg q50": lambda im: jpeg(bordered(im, 0.07), 50),
        "rotate 4 degrees + cut 7% off the left": lambda im: png(cut_side(rotated(im, 4), 0.07, "left")),
        "watermark + jpeg q60": lambda im: jpeg(text_overlay(im, "©2026", 0.12, "bottom right", WHITE, 0.5), 60),
        "letterbox to 4:3 + blur": lambda im: png(blurred(letterboxed(im, 4 / 3), 0.6)),
    },
}

MIRROR: dict[str, Edit] = {"mirror": lambda im: png(mirrored(im))}
