"""A demo shop catalogue of RGB product photos, made from Fashion-MNIST, to try the own-data path.

    likeness demo-data shop [--per-class 300] [--size 96] [--seed 0]

Each photo is a Fashion-MNIST garment recoloured in one of :data:`COLOURS`, scaled (60-95 % of the
photo) and placed near the centre (up to 8 % off), as product photos are, on a background of one of
:data:`BACKGROUNDS` (with a gradient and grain), saved as a JPEG:

    shop/train/CATEGORY/NNNNN.jpg    from Fashion-MNIST's training images
    shop/test/CATEGORY/NNNNN.jpg     from its test images (a fifth of the photos)
    shop/train.csv, shop/test.csv    path,category,colour: the aspects of each photo
    shop/CREDIT.txt                  where the garments come from, and the command that made it

Everything is seeded: the same command writes the same files.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image

from training.data.arrays import LabeledImages
from training.data.sources import FASHION_MNIST_CLASSES, FASHION_MNIST_CREDIT, load_raw

# Folder names of the categories (Fashion-MNIST's "t-shirt/top" cannot be a folder name).
CATEGORIES = [name.replace("/", "-").replace(" ", "-") for name in FASHION_MNIST_CLASSES]
# Garment colours: a shop's, not the tints of the built-in fashion-aspects data.
COLOURS: dict[str, tuple[int, int, int]] = {
    "navy": (30, 45, 110),
    "maroon": (120, 25, 40),
    "mustard": (215, 165, 30),
    "olive": (110, 120, 40),
    "teal": (20, 130, 130),
    "pink": (235, 120, 170),
    "charcoal": (60, 60, 65),
    "ivory": (245, 240, 220),
}
BACKGROUNDS: list[tuple[int, int, int]] = [
    (236, 236, 236), (250, 246, 235), (214, 226, 240), (225, 240, 225), (200, 185, 165), (90, 100, 110),
]


def write_demo_catalogue(out: str | Path, per_class: int = 300, size: int = 96, seed: int = 0,
                         data_dir: str | None = None) -> dict[str, int]:
    """Write ``per_class`` photos of each category (a fifth of them under test/); return the counts."""
    if per_class < 5:
        raise ValueError("--per-class must be at least 5 (a fifth of the photos are the test split)")
    out = Path(out)
    train_source, test_source = load_raw("fashion-mnist", data_dir)
    test_per_class = per_class // 5
    rng = np.random.default_rng(seed)
    counts = {}
    for split, source, n in (("train", train_source, per_class - test_per_class), ("test", test_source, test_per_class)):
        rows = []
        for label, category in enumerate(CATEGORIES):
            folder = out / split / category
            folder.mkdir(parents=True, exist_ok=True)
            for index in np.sort(rng.choice(np.flatnonzero(source.labels == label), n, replace=False)):
                colour = list(COLOURS)[rng.integers(len(COLOURS))]
                photo = product_photo(source, int(index), COLOURS[colour], size, rng)
                path = folder / f"{index:05d}.jpg"
                path.write_bytes(photo)
                rows.append((path.relative_to(out).as_posix(), category, colour))
        with (out / f"{split}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "category", "colour"])
            writer.writerows(rows)
        counts[split] = len(rows)
    (out / "CREDIT.txt").write_text(
        f"A demo catalogue written by `likeness demo-data {out} --per-class {per_class} --size {size} --seed {seed}`:\n"
        f"garments from {FASHION_MNIST_CREDIT},\nrecoloured and placed on coloured backgrounds by likeness.\n")
    return counts


def product_photo(source: LabeledImages, index: int, colour: tuple[int, int, int], size: int,
           rng: np.random.Generator) -> bytes:
    """One garment, recoloured (its grey levels become shading), scaled and placed; JPEG bytes."""
    gray = source.images[index, :, :, 0].astype(np.float32) / 255.0
    side = max(8, round(size * rng.uniform(0.6, 0.95)))
    garment = np.asarray(Image.fromarray((gray * 255).astype(np.uint8)).resize((side, side), Image.Resampling.BICUBIC),
                         dtype=np.float32) / 255.0
    alpha = np.clip(garment * 4.0, 0.0, 1.0)[:, :, None]  # the dark Fashion-MNIST background becomes transparent
    shade = 0.45 + 0.55 * garment[:, :, None]
    front = np.array(colour, np.float32)[None, None, :] * shade
    background = np.array(BACKGROUNDS[rng.integers(len(BACKGROUNDS))], np.float32)
    tilt = rng.uniform(-25, 25)  # a soft vertical gradient, then grain
    canvas = background[None, None, :] + np.linspace(-tilt, tilt, size, dtype=np.float32)[:, None, None]
    canvas = np.repeat(canvas, size, axis=1) + rng.normal(0, 4, (size, size, 3)).astype(np.float32)
    jitter = round(size * 0.08)
    top, left = (int(np.clip((size - side) // 2 + rng.integers(-jitter, jitter + 1), 0, size - side)) for _ in range(2))
    window = canvas[top:top + side, left:left + side]
    canvas[top:top + side, left:left + side] = window * (1 - alpha) + front * alpha
    out = io.BytesIO()
    Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).save(out, format="JPEG", quality=90)
    return out.getvalue()
