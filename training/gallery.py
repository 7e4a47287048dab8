"""Write the service's demo gallery: a seeded, class-balanced sample of Fashion-MNIST *test* images.

    python -m training.gallery --out service/gallery --per-class 30
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from training.cards import FASHION_MNIST_CREDIT
from training.data.sources import load_raw


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("service/gallery"))
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir")
    args = parser.parse_args()
    print(write_gallery(args.out, args.per_class, args.seed, args.data_dir), "images written to", args.out)


if __name__ == "__main__":
    main()
