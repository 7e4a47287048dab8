"""fit "content" and "content-robust" (contract.images.frame_content): an image with a border, bars or
padding of one colour added becomes the same model input as the image itself."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from contract import InputSpec, decode_image, prepare_image
from contract.images import frame_content
from training.evaluation.edits import bordered, letterboxed, padded_in_frame, png

GREY = InputSpec(height=28, width=28, channels=1, fit="content")
RGB = InputSpec(height=64, width=64, channels=3, fit="content")


def as_upload(image: Image.Image, spec: InputSpec) -> np.ndarray:
    return prepare_image(decode_image(png(image), max_pixels=10**7), spec).astype(int)


@pytest.mark.parametrize("edit", [lambda im: bordered(im, 0.07), lambda im: bordered(im, 0.06, 255),
                                  lambda im: bordered(bordered(im, 0.05, 255), 0.04, 90),
                                  lambda im: letterboxed(im, 16 / 9), lambda im: letterboxed(im, 3 / 4, 255)],
                         ids=["border", "white border", "two frames", "letterbox 16:9", "letterbox 3:4 white"])
def test_added_frames_leave_the_garments_input_as_it_was(fashion_test, edit):
    differences = []
    for image in fashion_test.images[:200]:
        garment = Image.fromarray(image[:, :, 0])
        differences.append(np.abs(as_upload(edit(garment), GREY) - as_upload(garment, GREY)).mean())
    assert np.median(differences) < 1.0 and np.mean(differences) < 4.0  # grey levels of 255


def test_padding_in_the_frame_is_undone_up_to_its_loss_of_resolution(fashion_test):
    """Shrunk to 80% of its frame, a garment has lost pixels no framing brings back; framed, it is
    still far nearer its original than as it came."""
    padded = InputSpec(height=28, width=28, channels=1, fit="pad")
    framed, unframed = [], []
    for image in fashion_test.images[:200]:
        garment = Image.fromarray(image[:, :, 0])
        shrunk = padded_in_frame(garment, 0.8)
        framed.append(np.abs(as_upload(shrunk, GREY) - as_upload(garment, GREY)).mean())
        unframed.append(np.abs(as_upload(shrunk, padded) - as_upload(garment, padded)).mean())
    assert np.median(framed) < 0.5 * np.median(unframed)


def test_a_product_photo_on_a_white_background_is_centred_and_filled():
    photo = Image.new("RGB", (200, 120), (255, 255, 255))
    photo.paste((200, 30, 30), (20, 30, 60, 90))  # a 40x60 red product near the left edge
    assert frame_content(photo).size == (40, 60)  # the background peeled, the product's own shape kept
    framed = prepare_image(photo, RGB)
    red = (framed[:, :, 1] < 128).nonzero()
    centre = (np.mean(red[0]) / framed.shape[0], np.mean(red[1]) / framed.shape[1])
    assert abs(centre[0] - 0.5) < 0.05 and abs(centre[1] - 0.5) < 0.05
    assert (red[0].max() - red[0].min()) / framed.shape[0] > 0.9  # it fills the frame's height


@pytest.mark.parametrize("size,colour", [((1, 1), 7), ((2, 3), 0), ((40, 40), 255), ((5, 300), 128)])
def test_images_without_content_or_too_small_to_frame_are_prepared(size, colour):
    for spec, mode in ((GREY, "L"), (RGB, "RGB")):
        image = Image.new(mode, size, colour if mode == "L" else (colour,) * 3)
        assert prepare_image(image, spec).shape == (spec.height, spec.width, spec.channels)


def test_a_dark_colour_on_black_counts_as_content():
    photo = Image.new("RGB", (60, 60), (0, 0, 0))
    photo.paste((0, 0, 90), (10, 10, 30, 50))  # dark blue: little luminance, plenty of blue
    assert frame_content(photo).size == (20, 40)


def test_a_caption_stops_the_peeling_at_its_own_edge(fashion_test):
    from training.evaluation.edits import text_overlay

    garment = Image.fromarray(fashion_test.images[0][:, :, 0])
    captioned = frame_content(text_overlay(garment, "NEW IN", 0.14, "bottom"))
    plain = frame_content(garment)
    assert captioned.width >= plain.width and captioned.height >= plain.height



def test_robust_framing_frames_a_catalogue_photo_and_its_edited_copies_alike(tmp_path):
    """fit "content-robust", on the demo catalogue's photos (garments on textured backgrounds, JPEGs):
    re-encoding, contrast and brightness leave a photo's frame where it was, where the strict rule
    of fit "content" moved it with the edit for a third to a half of the photos (JPEG 30: 55 of 100
    against 16); added frames are
    still undone."""
    from training.data.demo_catalogue import write_demo_catalogue
    from training.evaluation.near_duplicates import EDITS

    write_demo_catalogue(tmp_path / "shop", per_class=10, size=96, seed=3)
    photos = [Image.open(path).convert("RGB") for path in sorted((tmp_path / "shop").glob("*/*/*.jpg"))]
    edits = ["jpeg q30", "jpeg q50", "contrast x0.8", "brightness x1.15", "border 6%, white", "letterbox to 16:9"]
    moved = {robust: dict.fromkeys(edits, 0) for robust in (False, True)}
    for photo in photos:
        for name in edits:
            copy = decode_image(EDITS[name](photo), max_pixels=10**7)
            for robust in (False, True):
                a, b = frame_content(photo, robust), frame_content(copy, robust)
                if name in ("border 6%, white", "letterbox to 16:9"):  # the copy's frame is larger: compare shapes
                    moved[robust][name] += abs(a.width / a.height - b.width / b.height) > 0.1
                else:  # by more than 5 pixels of 96
                    moved[robust][name] += max(abs(a.width - b.width), abs(a.height - b.height)) > 5
    assert len(photos) == 100
    for name in edits[:4]:
        assert moved[True][name] <= 0.2 * len(photos) and moved[False][name] >= 3 * max(moved[True][name], 2), moved
    assert moved[True]["border 6%, white"] <= 2 and moved[True]["letterbox to 16:9"] < moved[False]["letterbox to 16:9"]
