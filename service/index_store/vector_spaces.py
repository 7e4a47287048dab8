"""The embedded store's derived vector indexes: one FAISS index per space (the overall embedding
and each aspect), kept in step, with a snapshot that can be written and restored.

A snapshot is one file (written to a temp file, fsynced, renamed over the old one, directory
fsynced) holding every space's serialized index, its HNSW tombstones, the change sequence number
it includes and a SHA-256 per array. :meth:`VectorSpaces.restore` refuses (returns None, with a
log line) one that is missing, torn, for another configuration or failing its checksum.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from service.index_store.faiss_index import IndexOptions, VectorIndex

log = logging.getLogger("likeness.index")


class VectorSpaces:
    """``spaces`` names in order; vectors come as [n, len(spaces), dim]. Not thread-safe by
    itself: the store's lock guards it."""

    def __init__(self, spaces: list[str], dim: int, options: IndexOptions) -> None:
        self.spaces = spaces
        self.dim = dim
        self.options = options
        self.indexes = {space: VectorIndex(dim, options) for space in spaces}

    def empty_copy(self, spaces: list[str] | None = None) -> dict[str, VectorIndex]:
        return {space: VectorIndex(self.dim, self.options) for space in (spaces or self.spaces)}

    def add(self, labels: np.ndarray, vectors: np.ndarray, indexes: dict[str, VectorIndex] | None = None) -> None:
        for space, index in (self.indexes if indexes is None else indexes).items():
            index.add(labels, np.ascontiguousarray(vectors[:, self.spaces.index(space)]))

    def remove(self, labels: np.ndarray, indexes: dict[str, VectorIndex] | None = None) -> None:
        for index in (self.indexes if indexes is None else indexes).values():
            index.remove(np.asarray(labels, dtype=np.int64))

    def needs_compaction(self) -> bool:
        return any(index.needs_compaction() for index in self.indexes.values())

    def with_tombstones(self) -> list[str]:
        return [space for space, index in self.indexes.items() if index.dead]

    def stats(self) -> dict[str, Any]:
        return {"spaces": {space: index.ntotal for space, index in self.indexes.items()},
                "kind": {space: index.kind for space, index in self.indexes.items()},
                "tombstones": sum(len(index.dead) for index in self.indexes.values())}

    # snapshot and restore --------------------------------------------------------------------
    def _identity(self) -> dict[str, Any]:
        return {"dim": self.dim, "spaces": self.spaces, "index": self.options.type}

    def serialize(self, seq: int) -> bytes:
        """Every space as one snapshot file's bytes, recording that it includes changes up to ``seq``."""
        arrays = {}
        for s, space in enumerate(self.spaces):
            index = self.indexes[space]
            arrays[f"index_{s}"] = index.serialize()
            arrays[f"dead_{s}"] = np.fromiter(index.dead, dtype=np.int64, count=len(index.dead))
        manifest = {**self._identity(), "seq": seq,
                    "sha256": {k: hashlib.sha256(v.tobytes()).hexdigest() for k, v in arrays.items()}}
        buffer = io.BytesIO()
        np.savez(buffer, manifest=np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8), **arrays)
        return buffer.getvalue()

    def restore(self, path: Path) -> tuple[int, dict[str, tuple[np.ndarray, np.ndarray]]] | None:
        """Read and verify a snapshot: (seq, space -> (index blob, tombstones)), or None (logged) if
        it is missing, unreadable, for another configuration or fails its checksum. Nothing is
        applied until :meth:`apply`."""
        if not path.is_file():
            return None
        try:
            with np.load(path) as archive:
                manifest = json.loads(archive["manifest"].tobytes())
                if {k: manifest.get(k) for k in ("dim", "spaces", "index")} != self._identity():
                    log.warning("index snapshot %s is for another configuration; rebuilding from the table", path)
                    return None
                arrays = {k: archive[k] for k in manifest["sha256"]}
        except Exception as exc:  # noqa: BLE001 - any unreadable snapshot means the same: rebuild
            log.warning("index snapshot %s is torn or unreadable (%s); dropped, rebuilding from the table", path, exc)
            return None
        for name, array in arrays.items():
            if hashlib.sha256(array.tobytes()).hexdigest() != manifest["sha256"][name]:
                log.warning("index snapshot %s fails its checksum (%s); dropped, rebuilding from the table", path, name)
                return None
        return int(manifest["seq"]), {space: (arrays[f"index_{s}"], arrays[f"dead_{s}"])
                                      for s, space in enumerate(self.spaces)}

    def apply(self, restored: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        for space, (blob, dead) in restored.items():
            self.indexes[space].restore(blob, dead)


def atomic_write(path: Path, data: bytes) -> None:
    """Temp file, fsync, rename over the target, fsync the directory: all of it or none of it."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
