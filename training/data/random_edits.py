"""The edits users make, drawn at random for the instance term's edited view (training.data.torch_data):
the kinds training/evaluation/edits.py measures, with random strengths, positions, colours and texts."""

from __future__ import annotations

import random
import string

from PIL import Image

from training.evaluation.edits import (
    BLACK,
    WHITE,
    blurred,
    bordered,
    cut_side,
    letterboxed,
    logo_overlay,
    padded_in_frame,
    rotated,
    sharpened,
    text_overlay,
)

_CORNERS = ("top left", "top right", "bottom left", "bottom right")
# Texts training draws from: letters and digits, never the measured "©2026" or "NEW IN".
_LETTERS = string.ascii_letters + string.digits


def _random_grey(rng: random.Random) -> int | None:
    """The image's own background half the time, else white, black or any grey."""
    pick = rng.random()
    if pick < 0.5:
        return None
    if pick < 0.7:
        return WHITE
    if pick < 0.8:
        return BLACK
    return rng.randrange(256)


def _random_geometry(image: Image.Image, rng: random.Random) -> Image.Image:
    kind = rng.randrange(5)
    if kind == 0:
        return bordered(image, rng.uniform(0.02, 0.15), _random_grey(rng))
    if kind == 1:
        return letterboxed(image, rng.choice((rng.uniform(1.1, 2.0), rng.uniform(0.5, 0.9))), _random_grey(rng))
    if kind == 2:
        return padded_in_frame(image, rng.uniform(0.7, 0.95), _random_grey(rng), rng.uniform(-1, 1),
                               rng.uniform(-1, 1))
    if kind == 3:
        return rotated(image, rng.uniform(-7, 7), _random_grey(rng))
    return cut_side(image, rng.uniform(0.03, 0.18), rng.choice(("left", "right", "top", "bottom")))


def _random_overlay(image: Image.Image, rng: random.Random) -> Image.Image:
    if rng.random() < 0.6:
        text = "".join(rng.choice(_LETTERS) for _ in range(rng.randint(1, 7)))
        corner = rng.choice((*_CORNERS, "bottom"))
        solid = rng.random() < 0.5
        return text_overlay(image, text, rng.uniform(0.12, 0.28), corner, rng.choice((WHITE, BLACK, 128)),
                            1.0 if solid else rng.uniform(0.3, 0.7))
    colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    return logo_overlay(image, rng.uniform(0.08, 0.22), rng.choice(_CORNERS),
                        rng.choice(("disc", "square", "triangle")), colour)


def _random_filter(image: Image.Image, rng: random.Random) -> Image.Image:
    if rng.random() < 0.5:
        return blurred(image, rng.uniform(0.3, 1.2))
    return sharpened(image, rng.randint(50, 250))


def random_user_edit(image: Image.Image, rng: random.Random) -> Image.Image:
    """One or two of the user edit kinds (geometry, overlay, filter), with random settings; the image's
    own size and mode may change (borders and cuts), as an upload's would."""
    kinds = [_random_geometry, _random_overlay, _random_filter]
    chosen = rng.sample(kinds, 2 if rng.random() < 0.35 else 1)
    if _random_geometry in chosen:  # geometry first: an overlay is added to the frame a user posts
        chosen.remove(_random_geometry)
        chosen.insert(0, _random_geometry)
    for edit in chosen:
        image = edit(image, rng)
    return image
