"""Bulk ingest (the demo gallery, ``python -m service.jobs add-folder``): a file or entry that the
API would refuse is skipped with a line saying why, never half-added and never the whole batch."""

from __future__ import annotations

import numpy as np

from service.index_store import EmbeddedStore
from service.ingest import ingest_files
from service.model_runner import ModelRunner
from tests.conftest import DEFAULT_MODEL, png_bytes
from tests.hostile import crafted_files


def test_unusable_files_and_entries_are_skipped_with_a_reason(tmp_path):
    runner = ModelRunner(DEFAULT_MODEL, device="cpu")
    store = EmbeddedStore(tmp_path / "data", runner.spec.embedding_dim, runner.spec.aspects,
                       {"name": runner.spec.name, "version": runner.spec.version})
    store.open()
    crafted = dict(crafted_files())
    files = {"good.png": png_bytes(np.zeros((28, 28), np.uint8)), "lab.tif": crafted["tiff-lab"],
             "cut.png": crafted["png-head20"], "ztxt.png": crafted["png-ztxt-bomb"]}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    entries = [(name.split(".")[0], tmp_path / name, {}) for name in files]
    entries += [("nan", tmp_path / "good.png", {"x": float("nan")}), ("bad\udcff", tmp_path / "good.png", {})]
    added, skipped = ingest_files(store, runner, entries, max_pixels=1_000_000, batch_size=3)
    assert added == 1 and len(skipped) == 5
    assert store.get("good") is not None and len(store) == 1
    assert any("cannot be converted" in line for line in skipped)  # the LAB image
    assert any("not finite" in line for line in skipped) and any("UTF-8" in line for line in skipped)
    store.close()
