"""Adding image files to the index in bulk: the demo gallery at startup and `python -m service.jobs add-folder`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from contract import ImageError, decode_image, prepare_image
from service.index_store import IndexStore, NewItem
from service.inference import make_thumbnail
from service.item_fields import id_problem, value_problem
from service.model_runner import Embeddings, ModelRunner
from service.originals import Originals, write_items


def item_vectors(out: Embeddings, row: int) -> np.ndarray:
    """One image's vectors as the index stores them: [1 + A, D], overall first, then each aspect."""
    if out.aspects is None:
        return out.embedding[row][None, :]
    return np.concatenate([out.embedding[row][None, :], out.aspects[row]], axis=0)


def ingest_files(store: IndexStore, runner: ModelRunner, entries: list[tuple[str, Path, dict]], max_pixels: int,
                 batch_size: int = 64, progress: Callable[[int], None] | None = None,
                 max_id_length: int = 256, originals: Originals | None = None) -> tuple[int, list[str]]:
    """Embed and upsert ``(id, path, metadata)`` entries in batches (keeping each file's bytes in
    ``originals``, when given); unusable files are skipped and reported (one line each), never
    half-added. Returns (items added, skipped lines)."""
    added, skipped = 0, []
    for start in range(0, len(entries), batch_size):
        arrays, items, files = [], [], []
        for item_id, path, metadata in entries[start:start + batch_size]:
            # The API's rules: an id or metadata no read could return (a file name that is not
            # UTF-8, say) is skipped here rather than refused by the store for the whole batch.
            problem = id_problem(item_id, max_id_length) or value_problem(metadata)
            if problem:
                skipped.append(f"{path}: {problem}")
                continue
            try:
                data = path.read_bytes()
                image = decode_image(data, max_pixels=max_pixels, name=str(path))
                array = prepare_image(image, runner.spec.input, name=str(path))
            except (ImageError, OSError) as exc:
                skipped.append(f"{path}: {getattr(exc, 'message', exc)}")
                continue
            arrays.append(array)
            items.append(NewItem(item_id, np.empty(0), metadata, make_thumbnail(image)))
            files.append(data)
        if arrays:
            out = runner.embed(np.stack(arrays))
            for row, item in enumerate(items):
                item.vectors = item_vectors(out, row)
            added += len(write_items(store, originals, items, files if originals is not None else None))
        if progress:
            progress(min(batch_size, len(entries) - start))
    return added, skipped
