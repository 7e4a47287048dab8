"""The shipped demo gallery: a few hundred Fashion-MNIST test images, indexed into an empty index."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from contract import decode_image, prepare_image
from service.index_store import IndexStore, NewItem
from service.inference import make_thumbnail
from service.model_runner import ModelRunner

log = logging.getLogger("likeness.gallery")
MANIFEST = "manifest.json"


def seed_gallery(store: IndexStore, runner: ModelRunner, gallery_dir: Path, batch_size: int = 64) -> int:
    """Index every image listed in ``gallery_dir/manifest.json``; return how many were added."""
    manifest_path = gallery_dir / MANIFEST
    if not manifest_path.is_file():
        log.warning("no demo gallery at %s; starting with an empty index", manifest_path)
        return 0
    entries = json.loads(manifest_path.read_text())["items"]
    added = 0
    for start in range(0, len(entries), batch_size):
        chunk = entries[start:start + batch_size]
        images = [decode_image((gallery_dir / e["file"]).read_bytes(), max_pixels=10_000_000, name=e["file"])
                  for e in chunk]
        out = runner.embed(np.stack([prepare_image(img, runner.spec.input) for img in images]))
        items = []
        for i, (entry, image) in enumerate(zip(chunk, images)):
            vectors = out.embedding[i][None, :] if out.aspects is None else \
                np.concatenate([out.embedding[i][None, :], out.aspects[i]])
            items.append(NewItem(entry["id"], vectors, entry.get("metadata", {}), make_thumbnail(image)))
        added += len(store.upsert(items))
    log.info("indexed %d demo gallery images from %s", added, gallery_dir)
    return added
