"""The shipped demo galleries (a few hundred Fashion-MNIST test images, or demo shop photos for a
photo model), indexed into an empty index."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from contract import InputSpec
from service.index_store import IndexStore
from service.ingest import ingest_files
from service.model_runner import ModelRunner
from service.originals import Originals
from service.settings import REPO_ROOT

log = logging.getLogger("likeness.gallery")
MANIFEST = "manifest.json"


def shipped_gallery(spec: InputSpec) -> Path:
    """The shipped gallery that suits a model's input: photos for an RGB model of 64 pixels or more,
    Fashion-MNIST otherwise."""
    photos = spec.channels == 3 and min(spec.height, spec.width) >= 64
    return REPO_ROOT / "service" / ("gallery-photos" if photos else "gallery")


def seed_gallery(store: IndexStore, runner: ModelRunner, gallery_dir: Path, originals: Originals | None = None) -> int:
    """Index every image listed in ``gallery_dir/manifest.json``; return how many were added."""
    manifest_path = gallery_dir / MANIFEST
    if not manifest_path.is_file():
        log.warning("no demo gallery at %s; starting with an empty index", manifest_path)
        return 0
    entries = [(e["id"], gallery_dir / e["file"], e.get("metadata", {}))
               for e in json.loads(manifest_path.read_text())["items"]]
    added, skipped = ingest_files(store, runner, entries, max_pixels=10_000_000, originals=originals)
    for line in skipped:
        log.warning("demo gallery: skipped %s", line)
    log.info("indexed %d demo gallery images from %s", added, gallery_dir)
    return added
