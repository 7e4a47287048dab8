"""FAISS indexes behind one small interface: flat (exact), HNSW (graph) and IVF (inverted lists).

All hold L2-normalised vectors and score by inner product (= cosine), keyed by int64 labels.
Thin wrappers, explicit about what each FAISS index can and cannot do:

- flat: IndexIDMap2 over IndexFlatIP. Exact; removal is real.
- hnsw: IndexIDMap2 over IndexHNSWFlat. HNSW cannot remove, so removal is a tombstone that
  searches skip (an IDSelector), until :meth:`VectorIndex.needs_compaction` asks for a rebuild.
- ivf: IndexIVFFlat with a hashtable direct map, so removal and reconstruction are cheap. It must
  be trained; below ``min_train`` vectors it answers exactly from a flat index and trains itself
  (on all vectors it has) once there are enough.

Memory per vector, d = dimension (float32): flat 4d + 16 bytes (vector, id, reverse map);
hnsw 4d + 8·M + ~24 bytes (vector, level-0 links, id map), M = 32 by default: 4d + ~280;
ivf 4d + ~32 bytes (vector, id in its list, hashtable entry). docs/index.md has measured figures.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import faiss
import numpy as np

log = logging.getLogger("likeness.index")

IndexType = Literal["flat", "hnsw", "ivf"]


def numpy_method(index: faiss.Index, name: str):
    """The NumPy form of a FAISS method. faiss.contrib.torch_utils (imported by pytorch-metric-learning
    in training and benchmark processes) replaces methods by torch-aware ones that drop ``params``
    or return tensors, and keeps the originals as ``<name>_numpy``."""
    return getattr(index, f"{name}_numpy", None) or getattr(index, name)


@dataclass(frozen=True)
class IndexOptions:
    type: IndexType = "flat"
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 128
    ivf_nlist: int = 0  # 0 = about 4·sqrt(n) at training time
    ivf_nprobe: int = 32
    ivf_min_train: int = 10_000
    # HNSW: rebuild once this fraction of the stored vectors are tombstones.
    compact_fraction: float = 0.2
    # OpenMP threads per search (0 = FAISS's default, all cores). Set in the searching thread
    # itself: omp_set_num_threads only affects the thread that calls it, and searches run on
    # worker threads. With all cores, one query's parallel region waits at its barrier for a
    # thread the scheduler has given to another request (docs/benchmarks.md, serving).
    search_threads: int = 1


class VectorIndex:
    """One space's vectors. Not thread-safe by itself: the store's read/write lock guards it."""

    def __init__(self, dim: int, options: IndexOptions) -> None:
        self.dim = dim
        self.options = options
        self.dead: set[int] = set()  # HNSW tombstones
        self._next_training = options.ivf_min_train  # IVF: train once this many vectors are in
        self._dead_selector: tuple | None = None  # cached (IDSelectorNot, its IDSelectorBatch)
        self.index = self._new()

    # construction -----------------------------------------------------------------------------
    def _new(self) -> faiss.Index:
        o = self.options
        if o.type == "hnsw":
            hnsw = faiss.IndexHNSWFlat(self.dim, o.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = o.hnsw_ef_construction
            hnsw.hnsw.efSearch = o.hnsw_ef_search
            return faiss.IndexIDMap2(hnsw)
        # flat, and ivf until it is trained
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    @property
    def trained_ivf(self) -> bool:
        return isinstance(self.index, faiss.IndexIVF)

    @property
    def kind(self) -> str:
        if self.options.type == "ivf" and not self.trained_ivf:
            return f"ivf (untrained: exact until {self.options.ivf_min_train} vectors)"
        return self.options.type

    # writes -----------------------------------------------------------------------------------
    def add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        if len(labels) == 0:
            return
        numpy_method(self.index, "add_with_ids")(np.ascontiguousarray(vectors, dtype=np.float32),
                                                  np.asarray(labels, dtype=np.int64))
        if (self.options.type == "ivf" and not self.trained_ivf and self.index.ntotal >= self._next_training):
            try:
                self._train_ivf()
            except Exception:  # noqa: BLE001 - the vectors are in; an untrained IVF still answers exactly
                # A write that is in the log must stay readable whatever training does, so a failed
                # training leaves the exact stand-in in place and is tried again at twice the size.
                log.exception("IVF training on %d vectors failed; answering exactly for now", self.index.ntotal)
                self._next_training = 2 * int(self.index.ntotal)

    def remove(self, labels: np.ndarray) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        if len(labels) == 0:
            return
        if self.options.type == "hnsw":
            self.dead.update(int(x) for x in labels)
            self._dead_selector = None
        else:
            numpy_method(self.index, "remove_ids")(labels)

    def _train_ivf(self) -> None:
        """Move from the exact stand-in to a trained IVF holding the same vectors."""
        flat = self.index
        labels = faiss.vector_to_array(flat.id_map).astype(np.int64)
        vectors = numpy_method(flat.index, "reconstruct_n")(0, flat.ntotal)
        # About 4·sqrt(n) lists, but never fewer than 39 training points per list (FAISS's floor);
        # a set nlist is at most LIKENESS_IVF_MIN_TRAIN (settings.py), so never more lists than points.
        nlist = min(self.options.ivf_nlist, len(labels)) if self.options.ivf_nlist else \
            max(1, min(int(4 * np.sqrt(len(labels))), len(labels) // 39))
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(self.dim), self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = vectors if len(vectors) <= 256 * nlist else \
            vectors[np.random.default_rng(0).choice(len(vectors), 256 * nlist, replace=False)]
        numpy_method(ivf, "train")(sample)
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
        ivf.nprobe = self.options.ivf_nprobe
        numpy_method(ivf, "add_with_ids")(vectors, labels)
        self.index = ivf

    # reads ------------------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        """Live vectors (tombstones excluded)."""
        return int(self.index.ntotal) - len(self.dead)

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, labels) for one query, skipping tombstones and, if given, labels not ``allowed``."""
        # FAISS selectors do not own what they point to: every part stays referenced here until the
        # search returns.
        selector = allowed_selector = None
        if allowed is not None:
            selector = allowed_selector = faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64))
        if self.dead:
            dead_selector = self._dead_selector  # a local reference keeps the pair alive
            if dead_selector is None:
                batch = faiss.IDSelectorBatch(np.fromiter(self.dead, dtype=np.int64))
                dead_selector = self._dead_selector = (faiss.IDSelectorNot(batch), batch)
            not_dead = dead_selector[0]
            selector = not_dead if allowed_selector is None else faiss.IDSelectorAnd(allowed_selector, not_dead)
        params = faiss.SearchParameters(sel=selector) if selector is not None else None
        if self.options.search_threads:
            faiss.omp_set_num_threads(self.options.search_threads)
        k = max(1, min(k, int(self.index.ntotal)))
        scores, labels = numpy_method(self.index, "search")(query.reshape(1, -1).astype(np.float32), k, params=params)
        keep = labels[0] >= 0
        return scores[0][keep], labels[0][keep]

    def reconstruct(self, labels: np.ndarray) -> np.ndarray:
        """Stored vectors for live labels, [len(labels), dim]."""
        if len(labels) == 0:
            return np.zeros((0, self.dim), np.float32)
        reconstruct = numpy_method(self.index, "reconstruct")
        return np.stack([reconstruct(int(label)) for label in labels]).astype(np.float32)

    def needs_compaction(self) -> bool:
        stored = int(self.index.ntotal)
        return bool(self.dead) and len(self.dead) >= max(1, self.options.compact_fraction * stored)

    # persistence ------------------------------------------------------------------------------
    def serialize(self) -> np.ndarray:
        return faiss.serialize_index(self.index)

    def restore(self, blob: np.ndarray, dead: np.ndarray) -> None:
        index = faiss.deserialize_index(blob)
        if isinstance(index, faiss.IndexIVF):
            index.nprobe = self.options.ivf_nprobe
        elif self.options.type == "hnsw":
            faiss.downcast_index(index.index).hnsw.efSearch = self.options.hnsw_ef_search
        self.index = index
        self.dead = set(int(x) for x in dead)
        self._dead_selector = None
