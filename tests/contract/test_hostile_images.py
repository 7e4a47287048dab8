"""Hostile image files: whatever the bytes, decoding and preparing either gives the model's input
or raises ImageError with a known reason; nothing else escapes from Pillow."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from contract import ImageError, InputSpec, decode_image, load_image, open_image, prepare_image
from service.inference import make_thumbnail
from tests.hostile import crafted_files, encode, image_corpus, sample_image

GRAY28 = InputSpec(height=28, width=28, channels=1, fit="pad", resample="bilinear", pad_value=0)
RGB32 = InputSpec(height=32, width=32, channels=3, fit="crop", resample="bicubic", pad_value=0)
REASONS = {"empty", "not_an_image", "corrupt_image", "unsupported_image", "too_many_pixels", "too_much_decoding"}
CORPUS = image_corpus()


def outcome(data: bytes, spec: InputSpec = GRAY28, max_pixels: int = 25_000_000) -> str:
    """'ok' or the ImageError reason; any other exception fails the test that calls it."""
    try:
        image = decode_image(data, max_pixels=max_pixels)
        array = prepare_image(image, spec)
    except ImageError as exc:
        assert exc.reason in REASONS and exc.message, exc
        return exc.reason
    assert array.shape == (spec.height, spec.width, spec.channels) and array.dtype == np.uint8
    thumbnail = make_thumbnail(image)  # a convenience: may be None, may not raise
    assert thumbnail is None or thumbnail.startswith(b"\x89PNG")
    return "ok"


def test_the_corpus_is_broad():
    names = {name.split("-")[0] for name, _ in CORPUS}
    assert {"png", "jpeg", "gif", "bmp", "webp", "tiff", "ppm", "ico", "tga", "jpeg2000"} <= names
    assert len(CORPUS) > 1000


@pytest.mark.parametrize("spec", [GRAY28, RGB32], ids=["gray28", "rgb32"])
def test_every_corpus_file_is_prepared_or_refused_with_an_image_error(spec):
    outcomes = {name: outcome(data, spec) for name, data in CORPUS}
    assert "ok" in outcomes.values() and "corrupt_image" in outcomes.values()


@pytest.mark.parametrize("name,reason", [
    ("png-head20", "corrupt_image"),  # issue 17, finding 2: OSError from Image.open
    ("jpeg-head30", "corrupt_image"),
    ("png-ztxt-bomb", "corrupt_image"),  # ValueError: over Pillow's text limit
    ("png-iccp-bomb", "corrupt_image"),
    ("pgm-maxval-0", "corrupt_image"),  # ValueError from the PPM plugin
    ("pgm-maxval-99999999", "corrupt_image"),
    ("tiff-lab", "unsupported_image"),  # ValueError: LAB converts to nothing the model reads
    ("png-claims-50000x50000", "too_many_pixels"),
    ("tiff-tile-bomb", "too_much_decoding"),  # checked on the header: nothing is allocated
    ("jpeg-scan-bomb", "too_much_decoding"),
    ("eps", "not_an_image"),  # never handed to Ghostscript
    ("svg", "not_an_image"),
])
def test_each_known_way_to_break_the_decoder_has_its_reason(name, reason):
    assert outcome(dict(crafted_files())[name]) == reason


@pytest.mark.parametrize("mode,fmt", [("1", "PNG"), ("P", "PNG"), ("LA", "PNG"), ("I", "TIFF"), ("F", "TIFF"),
                                      ("I;16", "PNG"), ("CMYK", "JPEG"), ("YCbCr", "TIFF"), ("RGBA", "WEBP")])
def test_odd_modes_and_bit_depths_that_pillow_converts_are_prepared(mode, fmt):
    for spec in (GRAY28, RGB32):
        assert outcome(encode(sample_image(mode), fmt), spec) == "ok"


VALID = [encode(sample_image(mode), fmt) for fmt, mode in (
    ("PNG", "RGBA"), ("PNG", "P"), ("JPEG", "RGB"), ("GIF", "P"), ("BMP", "RGB"), ("WEBP", "RGB"), ("TIFF", "I;16"),
    ("TIFF", "RGB"), ("PPM", "L"))]


@st.composite
def mutated_files(draw) -> bytes:
    """A valid file of an accepted format with a few random edits: cuts, flips, insertions, deletions."""
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data) - 1))
        edit = draw(st.sampled_from(["flip", "byte", "insert", "delete", "cut"]))
        if edit == "flip":
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif edit == "byte":
            data[position] = draw(st.sampled_from([0, 0xFF, 0x7F, 0x80]))
        elif edit == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif edit == "delete":
            del data[position:position + draw(st.integers(1, 16))]
        else:
            del data[max(1, position):]
        if not data:
            break
    return bytes(data)


@settings(max_examples=400, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=mutated_files())
def test_mutated_files_of_every_accepted_format_never_escape_as_another_error(data):
    outcome(data)


@settings(max_examples=100, deadline=None, database=None, derandomize=True)
@given(data=st.binary(max_size=200))
def test_random_bytes_are_refused_with_an_image_error(data):
    assert outcome(data) != "ok"


def test_the_decode_budget_is_checked_before_any_pixel_is_decoded():
    """The bombs of issue #33 are refused on the header: in milliseconds and without the memory they ask for."""
    import resource
    import time

    from tests.hostile import jpeg_scan_bomb, tiff_tile_bomb

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for data in (tiff_tile_bomb(), jpeg_scan_bomb()):
        started = time.perf_counter()
        with pytest.raises(ImageError) as refused:
            open_image(data, max_pixels=25_000_000)
        assert refused.value.reason == "too_much_decoding" and time.perf_counter() - started < 0.1
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB: no 2 GB tile


def test_ordinary_tiffs_and_progressive_jpegs_are_within_the_budget():
    rng = np.random.default_rng(3)
    photo = Image.fromarray(rng.integers(0, 256, (300, 200, 3), dtype=np.uint8))
    for data in (encode(photo, "JPEG", progressive=True, quality=85), encode(photo, "TIFF", tile=(256, 256)),
                 encode(photo.convert("L"), "TIFF", compression="tiff_deflate")):
        spec = InputSpec(height=28, width=28, channels=1)
        assert prepare_image(load_image(open_image(data, max_pixels=10**6)), spec).shape == (28, 28, 1)
