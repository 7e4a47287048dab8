"""``fashion-aspects``: real Fashion-MNIST images with three aspects.

- ``category``: the 10 classes;
- ``group``: tops (t-shirt/top, pullover, coat, shirt), bottoms (trouser), dresses, footwear
  (sandal, sneaker, ankle boot), bags;
- ``color``: each image tinted with one of the 8 colours of :data:`PALETTE` (``white`` is the
  untinted image), chosen per image by a seeded generator.
"""

from __future__ import annotations

import numpy as np

from training.data.arrays import LabeledImages
from training.data.aspect_images import AspectImages
from training.data.sources import FASHION_MNIST_CLASSES, framed_images

# name -> RGB. Distinct hues at full saturation; white leaves the grey image as it is.
PALETTE: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "red": (230, 25, 40),
    "orange": (245, 130, 30),
    "yellow": (240, 220, 20),
    "green": (40, 180, 60),
    "cyan": (30, 210, 230),
    "blue": (30, 70, 230),
    "purple": (150, 40, 190),
}
GROUPS: dict[str, list[str]] = {
    "tops": ["t-shirt/top", "pullover", "coat", "shirt"],
    "bottoms": ["trouser"],
    "dresses": ["dress"],
    "footwear": ["sandal", "sneaker", "ankle boot"],
    "bags": ["bag"],
}
FASHION_ASPECTS = ["category", "group", "color"]


# Saturated tints between the palette's hues, for the test of colours training never saw.
UNSEEN_COLOURS: dict[str, tuple[int, int, int]] = {
    "lime": (160, 230, 20), "magenta": (240, 30, 170), "teal": (10, 140, 120), "sky": (90, 170, 255),
    "pink": (255, 110, 180),
}


def tint(gray: np.ndarray, colors: np.ndarray, palette: dict[str, tuple[int, int, int]] = PALETTE) -> np.ndarray:
    """uint8 [N, H, W, 1] grey images times a per-image colour of ``palette`` -> uint8 [N, H, W, 3]."""
    rgb = np.array(list(palette.values()), dtype=np.float32)[colors] / 255.0  # [N, 3]
    return np.round(gray.astype(np.float32) * rgb[:, None, None, :]).astype(np.uint8)


def fashion_aspects(gray: LabeledImages, seed: int, colors: np.ndarray | None = None, fit: str = "pad") -> AspectImages:
    """Tint Fashion-MNIST images (seeded colour per image unless ``colors`` is given) and label aspects;
    the tinted images are prepared with ``fit`` as the service prepares uploads of them."""
    if colors is None:
        colors = np.random.default_rng(seed).integers(0, len(PALETTE), len(gray))
    return AspectImages(
        framed_images(tint(gray.images, colors), fit),
        fashion_aspect_labels(gray.labels, colors),
        {"category": list(FASHION_MNIST_CLASSES), "group": list(GROUPS), "color": list(PALETTE)},
    )


def fashion_aspect_labels(categories: np.ndarray, colors: np.ndarray) -> dict[str, np.ndarray]:
    """Each aspect's labels of garments of ``categories`` tinted in ``colors``."""
    group_of = {cls: g for g, (name, members) in enumerate(GROUPS.items()) for cls in members}
    groups = np.array([group_of[FASHION_MNIST_CLASSES[c]] for c in categories], dtype=np.int64)
    return {"category": categories.astype(np.int64), "group": groups, "color": colors.astype(np.int64)}


