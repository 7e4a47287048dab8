"""Hostile inputs the tests generate: broken and odd image files, and JSON, ids and text from
Hypothesis strategies that reach past what a polite client sends.

The image corpus holds, for every format Pillow can write, small images in every mode it accepts,
each cut short and corrupted at several places; and files crafted after known ways to break a
decoder (lying headers, decompression and text bombs, modes with no conversion, bad EXIF).
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Iterator

import numpy as np
from hypothesis import strategies as st
from PIL import Image

MODES = ("1", "L", "P", "RGB", "RGBA", "LA", "PA", "I", "F", "I;16", "CMYK", "YCbCr", "LAB", "HSV")


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_with_chunk(kind: bytes, data: bytes) -> bytes:
    """A valid 8x8 PNG with one more chunk right after IHDR."""
    plain = encode(Image.new("L", (8, 8), 100), "PNG")
    return plain[:33] + png_chunk(kind, data) + plain[33:]


def png_header_claiming(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 10))
            + png_chunk(b"IEND", b""))


def sample_image(mode: str, size: tuple[int, int] = (20, 14)) -> Image.Image:
    rng = np.random.default_rng(len(mode))
    rgb = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")
    try:
        return rgb.convert(mode)
    except ValueError:
        return Image.new(mode, size)


def valid_files() -> Iterator[tuple[str, bytes]]:
    """Every (format, mode) Pillow will write, as a small image."""
    for fmt in sorted(Image.SAVE):
        if fmt in ("PDF", "PALM", "WMF", "BUFR", "GRIB", "HDF5", "MPO", "IM"):
            continue  # written but not read back, only through a handler that is not installed, or deprecated
        for mode in MODES:
            try:
                data = encode(sample_image(mode), fmt)
            except Exception:  # noqa: BLE001 - this format does not take this mode
                continue
            yield f"{fmt.lower()}-{mode}", data


def damaged(name: str, data: bytes, rng: np.random.Generator) -> Iterator[tuple[str, bytes]]:
    """The file cut short at several places, and corrupted in a few ways."""
    for cut in sorted({1, 8, 16, 20, 30, len(data) // 4, len(data) // 2, len(data) - 1}):
        if 0 < cut < len(data):
            yield f"{name}-cut{cut}", data[:cut]
    for i in range(3):
        flipped = bytearray(data)
        for position in rng.integers(0, len(data), 1 + 4 * i):
            flipped[position] ^= 1 << int(rng.integers(0, 8))
        yield f"{name}-flip{i}", bytes(flipped)
    start = int(rng.integers(8, max(9, len(data) - 16)))
    yield f"{name}-zeroed", data[:start] + bytes(16) + data[start + 16:]
    yield f"{name}-junk-tail", data + bytes(rng.integers(0, 256, 64, dtype=np.uint8))


def tiff_tile_bomb(tile: int = 46336, side: int = 16) -> bytes:
    """A 145-byte TIFF: a ``side`` x ``side`` image declaring one ``tile`` x ``tile`` deflate tile
    (issue #33, finding 1: libtiff allocated and filled 2 GB before failing)."""
    data = zlib.compress(bytes(16), 9)
    entries = [(256, 3, side), (257, 3, side), (258, 3, 8), (259, 3, 8), (262, 3, 1), (277, 3, 1),
               (322, 4, tile), (323, 4, tile), (324, 4, 0), (325, 4, len(data))]
    data_offset = 8 + 2 + 12 * len(entries) + 4
    out = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        value = data_offset if tag == 324 else value
        out += struct.pack("<HHHH", tag, kind, 1, 0)[:4] + struct.pack("<I", 1)
        out += struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
    return out + struct.pack("<I", 0) + data


def _jpeg_segments(data: bytes) -> list[bytes]:
    """A baseline or progressive JPEG cut into its marker segments (a scan with its entropy-coded data)."""
    segments, i = [], 2
    while i < len(data):
        marker = data[i + 1]
        if marker == 0xD9:
            segments.append(data[i:i + 2])
            break
        end = i + 2 + int.from_bytes(data[i + 2:i + 4], "big")
        if marker == 0xDA:  # the scan's data runs to the next marker that is not a stuffed 0xFF or a restart
            while data[end] != 0xFF or data[end + 1] == 0 or 0xD0 <= data[end + 1] <= 0xD7:
                end += 1
        segments.append(data[i:end])
        i = end
    return segments


def jpeg_scan_bomb(side: int = 2000, repeats: int = 20_000) -> bytes:
    """A progressive JPEG of a flat ``side`` x ``side`` image with one AC scan repeated ``repeats``
    times: a few hundred KB whose decoding walks every block once per scan (issue #33, finding 2)."""
    segments = _jpeg_segments(encode(Image.new("L", (side, side), 128), "JPEG", progressive=True, quality=90))
    scans = [segment for segment in segments if segment[1] == 0xDA]
    ac = next(scan for scan in scans if scan[5 + 2 * scan[4]] > 0)  # spectral selection start > 0
    return b"\xff\xd8" + b"".join(segment + (ac * repeats if segment is ac else b"") for segment in segments)


def crafted_files() -> Iterator[tuple[str, bytes]]:
    """Files after known ways to break a decoder (each of issue 17's finding 2 among them)."""
    png = encode(sample_image("L"), "PNG")
    jpeg = encode(sample_image("RGB"), "JPEG")
    yield "png-head20", png[:20]
    yield "jpeg-head30", jpeg[:30]
    yield "png-ztxt-bomb", png_with_chunk(b"zTXt", b"k\x00\x00" + zlib.compress(b"a" * 3_000_000))
    yield "png-iccp-bomb", png_with_chunk(b"iCCP", b"k\x00\x00" + zlib.compress(b"a" * 3_000_000))
    yield "png-itxt-bomb", png_with_chunk(b"iTXt", b"k\x00\x01\x00\x00\x00" + zlib.compress(b"a" * 3_000_000))
    yield "png-text-many", png_with_chunk(b"tEXt", b"k\x00" + b"v" * 200_000)
    yield "png-bad-crc", png[:29] + b"\x00\x00\x00\x00" + png[33:]
    yield "png-claims-50000x50000", png_header_claiming(50_000, 50_000)
    yield "png-claims-1x2147483647", png_header_claiming(1, 2**31 - 1)
    yield "png-claims-0x0", png_header_claiming(0, 0)
    yield "pgm-maxval-0", b"P5\n28 28\n0\n" + bytes(784)
    yield "pgm-maxval-99999999", b"P5\n28 28\n99999999\n" + bytes(784 * 4)
    yield "pgm-maxval-65535", b"P5\n28 28\n65535\n" + bytes(784 * 2)
    yield "pgm-negative-size", b"P5\n-28 28\n255\n" + bytes(784)
    yield "pgm-huge-size", b"P5\n99999 99999\n255\n" + bytes(784)
    yield "ppm-ascii-junk", b"P3\n2 2\n255\n1 2 3 4 5 x 7 8 9 10 11 12\n"
    yield "bmp-claims-huge", b"BM" + struct.pack("<IHHI", 0, 0, 0, 54) + struct.pack(
        "<IiiHHIIiiII", 40, 60_000, 60_000, 1, 24, 0, 0, 0, 0, 0, 0)
    yield "gif-claims-65535", b"GIF89a" + struct.pack("<HH", 65535, 65535) + b"\x00\x00\x00;"
    yield "tiff-lab", encode(Image.new("LAB", (16, 16), (50, 0, 0)), "TIFF")
    yield "tiff-float", encode(Image.fromarray(np.full((16, 16), np.nan, np.float32)), "TIFF")
    yield "png-16bit", encode(Image.fromarray(np.arange(256, dtype=np.uint16).reshape(16, 16) * 256), "PNG")
    yield "jpeg-cmyk", encode(Image.new("CMYK", (16, 16), (0, 255, 0, 0)), "JPEG")
    exif = Image.Exif()
    exif[0x0112] = 9  # no such orientation
    yield "jpeg-orientation-9", encode(sample_image("RGB"), "JPEG", exif=exif.tobytes())
    yield "jpeg-exif-garbage", jpeg[:2] + b"\xff\xe1\x00\x10Exif\x00\x00MM\x00*\xff\xff\xff\xff" + jpeg[2:]
    frames = [Image.new("P", (16, 16), i) for i in range(30)]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:])
    yield "gif-animated", out.getvalue()
    yield "solid-black", encode(Image.new("L", (28, 28), 0), "PNG")
    yield "solid-white", encode(Image.new("RGB", (28, 28), (255, 255, 255)), "PNG")
    yield "one-pixel", encode(Image.new("L", (1, 1), 7), "PNG")
    yield "very-wide", encode(Image.new("L", (4000, 1), 7), "PNG")
    yield "eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    yield "pdf", encode(sample_image("RGB"), "PDF")
    yield "svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'
    yield "html", b"<html><body>not an image</body></html>"
    yield "one-byte", b"\x89"
    yield "nul-bytes", bytes(100)
    yield "tiff-tile-bomb", tiff_tile_bomb()
    yield "jpeg-scan-bomb", jpeg_scan_bomb(side=256, repeats=2_000)


def image_corpus(damage_every: int = 1) -> list[tuple[str, bytes]]:
    """The crafted files, every valid (format, mode), and damaged forms of every ``damage_every``-th."""
    rng = np.random.default_rng(17)
    corpus = list(crafted_files())
    for i, (name, data) in enumerate(valid_files()):
        corpus.append((name, data))
        if i % damage_every == 0:
            corpus.extend(damaged(name, data, rng))
    return corpus


# Text that reaches past what a polite client sends: lone surrogates, controls, separators, marks.
any_char = st.characters(exclude_categories=())
hostile_text = st.one_of(
    st.text(any_char, max_size=12),
    st.sampled_from(["", " ", "\ud800", "a\udcff", "\x00", "\u2028", "\ufeff", "\ufffd", "..", "a/../b", "x/thumbnail",
                     "é", "\U0001f600", " padded ", "a" * 300, "%2F", "?q=1#f"]),
)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
                         st.floats(allow_nan=True, allow_infinity=True), hostile_text)
json_values = st.recursive(json_scalars, lambda children: st.one_of(
    st.lists(children, max_size=3), st.dictionaries(hostile_text, children, max_size=3)), max_leaves=12)


@st.composite
def raw_json_objects(draw) -> str:
    """JSON text for a metadata or filter field: mostly objects, some deliberately broken."""
    kind = draw(st.sampled_from(["object", "object", "object", "deep", "duplicate", "number", "junk", "scalar"]))
    if kind == "object":
        value = draw(st.dictionaries(hostile_text, json_values, max_size=4))
        return json.dumps(value, ensure_ascii=draw(st.booleans()), allow_nan=True)
    if kind == "deep":
        depth = draw(st.integers(1, 3000))
        return '{"x": ' + "[" * depth + "]" * depth + "}"
    if kind == "duplicate":
        return '{"a": 1, "a": 2}'
    if kind == "number":
        return '{"n": ' + draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e999", "1" * 5000,
                                                "0.1e-400", "1E+2"])) + "}"
    if kind == "junk":
        return draw(st.text(any_char, max_size=40))
    return json.dumps(draw(json_scalars), allow_nan=True)


def multipart(parts: list[tuple[str, bytes, str | None]]) -> tuple[bytes, str]:
    """A multipart/form-data body from raw parts (name, bytes, filename or None for a text field),
    so tests can send text fields that are not UTF-8, which httpx would never produce."""
    boundary = b"hostile-boundary-7d1f"
    body = b""
    for name, data, filename in parts:
        disposition = b'form-data; name="' + name.encode() + b'"'
        if filename is not None:
            disposition += b'; filename="' + filename.encode() + b'"'
        body += b"--" + boundary + b"\r\nContent-Disposition: " + disposition + b"\r\n"
        if filename is not None:
            body += b"Content-Type: application/octet-stream\r\n"
        body += b"\r\n" + data + b"\r\n"
    body += b"--" + boundary + b"--\r\n"
    return body, "multipart/form-data; boundary=" + boundary.decode()


def wire(text: str) -> bytes:
    """Text as a client would put it on the wire; lone surrogates become bytes that are not UTF-8."""
    return text.encode("utf-8", "surrogatepass")
