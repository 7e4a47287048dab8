"""Write the service's demo galleries: a seeded, class-balanced sample of Fashion-MNIST *test* images,
as they are (for the Fashion-MNIST models) or as demo product photos (for a photo model).

    python -m training.gallery --out service/gallery --per-class 30
    python -m training.gallery --out service/gallery-photos --per-class 12 --photos
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from training.data.sources import FASHION_MNIST_CREDIT, load_raw


def write_gallery(out: Path, per_class: int, seed: int, data_dir: str | None = None) -> int:
    _, test = load_raw("fashion-mnist", data_dir)
    rng = np.random.default_rng(seed)
    chosen = np.sort(np.concatenate([rng.choice(np.flatnonzero(test.labels == c), per_class, replace=False)
                                     for c in range(len(test.classes))]))
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    items = []
    for index in chosen:
        label = int(test.labels[index])
        name = f"fmnist-test-{index:05d}.png"
        Image.fromarray(test.images[index, :, :, 0], mode="L").save(out / name, optimize=True)
        items.append({"id": f"fmnist-test-{index:05d}", "file": name,
                      "metadata": {"label": str(label), "class": test.classes[label],
                                   "source": f"Fashion-MNIST test image {index}"}})
    manifest = {
        "description": f"{len(items)} Fashion-MNIST test images, {per_class} per class, sampled with seed {seed}.",
        "credit": FASHION_MNIST_CREDIT,
        "command": f"python -m training.gallery --out {out} --per-class {per_class} --seed {seed}",
        "items": items,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return len(items)


def write_photo_gallery(out: Path, per_class: int, seed: int, size: int = 128, data_dir: str | None = None) -> int:
    """Demo product photos (training.data.demo_catalogue: a recoloured garment on a background) of
    seeded Fashion-MNIST test images, as JPEG."""
    from training.data.demo_catalogue import CATEGORIES, COLOURS, product_photo

    _, test = load_raw("fashion-mnist", data_dir)
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.jpg"):
        old.unlink()
    items = []
    for label in range(len(test.classes)):
        for index in np.sort(rng.choice(np.flatnonzero(test.labels == label), per_class, replace=False)):
            colour = list(COLOURS)[rng.integers(len(COLOURS))]
            name = f"photo-{CATEGORIES[label]}-{index:05d}.jpg"
            (out / name).write_bytes(product_photo(test, int(index), COLOURS[colour], size, rng))
            items.append({"id": name.removesuffix(".jpg"), "file": name,
                          "metadata": {"class": test.classes[label], "colour": colour,
                                       "source": f"Fashion-MNIST test image {index}, as a demo product photo"}})
    manifest = {
        "description": f"{len(items)} demo product photos of Fashion-MNIST test garments, {per_class} per class, "
                       f"{size} px, seed {seed}.",
        "credit": FASHION_MNIST_CREDIT,
        "command": f"python -m training.gallery --out {out} --per-class {per_class} --seed {seed} --photos",
        "items": items,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return len(items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("service/gallery"))
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir")
    parser.add_argument("--photos", action="store_true", help="demo product photos instead of the images as they are")
    args = parser.parse_args()
    write = write_photo_gallery if args.photos else write_gallery
    print(write(args.out, args.per_class, args.seed, data_dir=args.data_dir), "images written to", args.out)


if __name__ == "__main__":
    main()
