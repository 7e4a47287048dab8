"""Duplicates across a catalogue: what `GET /duplicates` and `likeness index duplicates` do, against
what users reach for instead, on the Fashion-MNIST test set.

    python -m bench dedup [--model models/default.onnx --model models/csn.onnx] [--copies 1000]

The catalogue: the 10,000 test images plus ``--copies`` edited copies of seeded originals, each made by
one of the measured edits in turn (training/evaluation/edits.py: the light edits, the edits users
make, the mirror), saved as a file and prepared as an upload. The truth: each copy is the same image
as its original, and so are test images that are near-identical themselves (pixel level,
training.evaluation.same_image), counted apart. Every method gives pairs of "the same image", scored
as they are (precision and recall of the pairs, as imagededup answers), and joined into groups (a
copy of a copy is in its original's group: what GET /duplicates answers) and scored as the pairs
within groups.

- likeness: the model through ONNX Runtime, then service.copies.duplicate_groups on a real embedded
  index (the code GET /duplicates runs), at the model's own same-image threshold;
- pHash and dHash (the imagehash package) at Hamming distance 10 of 64 bits (imagededup's default);
- a CNN cosine at 0.9 (imagededup's default for its CNN): the same model's whole embedding.

Times: embedding or hashing the catalogue, and grouping, on this machine. Writes docs/dedup.md and
docs/results/dedup.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image

from bench.common import DOCS, REPO, make_parser, markdown_table, page_header, write_json
from contract import ModelSpec, decode_image, prepare_image
from training.data.sources import load_raw
from training.evaluation import embed_all, onnx_embedder
from training.evaluation.near_duplicates import EDITS, query_sample
from training.evaluation.same_image import dataset_near_duplicates

HASH_DISTANCE = 10
CNN_COSINE = 0.9


def catalogue(copies: int) -> tuple[list[Image.Image], set[tuple[int, int]], int]:
    """The decoded catalogue images, the true pairs (index pairs, first < second) and how many of
    them are near-identical test images rather than injected copies."""
    _, test = load_raw("fashion-mnist")
    originals = query_sample(len(test.images), copies, seed=29)
    images = [Image.fromarray(image[:, :, 0]) for image in test.images]
    edits = list(EDITS.values())
    truth = set()
    for n, original in enumerate(originals):
        data = edits[n % len(edits)](images[original])
        truth.add((int(original), len(images)))
        images.append(decode_image(data, max_pixels=10**8))
    near = dataset_near_duplicates(test.images)
    twins = {(int(a), int(b)) for a, b in zip(*np.nonzero(np.triu(near)))}
    return images, truth | twins, len(twins - truth)


def groups_to_pairs(groups: list[list[int]]) -> set[tuple[int, int]]:
    return {(a, b) for group in groups for i, a in enumerate(sorted(group)) for b in sorted(group)[i + 1:]}


def join(edges: list[tuple[int, int]], count: int) -> list[list[int]]:
    """Connected components of ``edges`` over ``count`` nodes (groups of two or more)."""
    parent = list(range(count))

    def root(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for a, b in edges:
        parent[root(a)] = root(b)
    members: dict[int, list[int]] = {}
    for node in range(count):
        members.setdefault(root(node), []).append(node)
    return [m for m in members.values() if len(m) > 1]


def score(found: set[tuple[int, int]], truth: set[tuple[int, int]]) -> dict[str, float]:
    hits = len(found & truth)
    return {"pairs_found": len(found), "true_pairs_found": hits,
            "precision": round(hits / len(found), 4) if found else 1.0, "recall": round(hits / len(truth), 4)}


Found = tuple[set[tuple[int, int]], float, float]  # pairs, seconds to embed or hash, seconds to pair


def hash_method(images: list[Image.Image], function) -> Found:
    started = time.perf_counter()
    bits = np.stack([function(image).hash.flatten() for image in images]).astype(np.float32)
    hashed = time.perf_counter() - started
    started = time.perf_counter()
    edges = []
    for start in range(0, len(bits), 2048):
        block = bits[start:start + 2048]
        distance = block @ (1 - bits).T + (1 - block) @ bits.T
        for i, j in zip(*np.nonzero(distance <= HASH_DISTANCE)):
            if start + i < j:
                edges.append((start + int(i), int(j)))
    return set(edges), hashed, time.perf_counter() - started


def likeness_methods(images: list[Image.Image], model: Path) -> dict[str, Found]:
    """The model's same-image groups (service.copies on a real embedded index) and, from the same
    embeddings, a plain cosine at CNN_COSINE."""
    import onnx

    from service.copies import same_image_pairs
    from service.index_store import EmbeddedStore, NewItem

    spec = ModelSpec.from_metadata({p.key: p.value for p in onnx.load(str(model)).metadata_props})
    started = time.perf_counter()
    prepared = np.stack([prepare_image(image, spec.input) for image in images])
    embeddings, aspects = embed_all(onnx_embedder(model), prepared)
    embedded = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as folder:
        store = EmbeddedStore(folder, spec.embedding_dim, spec.aspects, {"name": spec.name, "version": spec.version})
        store.open()
        vectors = embeddings[:, None] if aspects is None else np.concatenate([embeddings[:, None], aspects], axis=1)
        for start in range(0, len(images), 1000):
            store.upsert([NewItem(f"{i:06d}", vectors[i]) for i in range(start, min(start + 1000, len(images)))])
        started = time.perf_counter()
        threshold = spec.same_image_threshold(store.count())  # as the service decides for this index
        pairs = same_image_pairs(store, spec, threshold)
        grouped = time.perf_counter() - started
        store.close()
    own = {(int(a), int(b)) for a, b in pairs}
    started = time.perf_counter()
    edges = []
    for start in range(0, len(embeddings), 2048):
        similar = embeddings[start:start + 2048] @ embeddings.T
        edges += [(start + int(i), int(j)) for i, j in zip(*np.nonzero(similar >= CNN_COSINE)) if start + i < j]
    cosine_grouped = time.perf_counter() - started
    return {f"likeness ({spec.name} {spec.version}, same-image threshold {threshold:.4f})":
            (own, embedded, grouped),
            f"CNN cosine >= {CNN_COSINE} ({spec.name} {spec.version} embedding)": (set(edges), embedded, cosine_grouped)}


def main(argv: list[str] | None = None) -> None:
    parser: argparse.ArgumentParser = make_parser("dedup", __doc__)
    parser.add_argument("--model", type=Path, action="append", help="repeatable (default: models/default.onnx)")
    parser.add_argument("--copies", type=int, default=1000)
    parser.add_argument("--output", type=Path, default=DOCS / "dedup.md")
    args = parser.parse_args(argv)
    models = args.model or [REPO / "models" / "default.onnx"]
    images, truth, twins = catalogue(args.copies)
    methods: dict[str, Found] = {}
    for model in models:
        methods.update(likeness_methods(images, model))
    for name, function in (("pHash", imagehash.phash), ("dHash", imagehash.dhash)):
        methods[f"{name} (imagehash), Hamming <= {HASH_DISTANCE}"] = hash_method(images, function)
    rows, results = [], {}
    for name, (pairs, prepare_s, pair_s) in methods.items():
        groups = join(sorted(pairs), len(images))
        result = {"pairs": score(pairs, truth), "groups": {**score(groups_to_pairs(groups), truth), "count": len(groups)},
                  "embed_or_hash_s": round(prepare_s, 2), "pair_s": round(pair_s, 2),
                  "items_per_s": round(len(images) / (prepare_s + pair_s), 1)}
        results[name] = result
        rows.append([name, f"{result['pairs']['precision']:.4f}", f"{result['pairs']['recall']:.4f}",
                     f"{result['groups']['precision']:.4f}", f"{result['groups']['recall']:.4f}", str(len(groups)),
                     f"{prepare_s:.1f}", f"{pair_s:.1f}", f"{result['items_per_s']:.0f}"])
        print(f"{name}: pairs {result['pairs']}, groups {result['groups']}", flush=True)
    lines = page_header("Duplicates across a catalogue") + [
        f"{len(images):,} images: the 10,000 Fashion-MNIST test images and {args.copies:,} edited copies of seeded "
        f"test images (each measured edit in turn). {len(truth):,} true pairs: the copies with their originals, and "
        f"{twins} pair(s) of test images that are near-identical themselves. Pairs within each method's groups, "
        "scored against them; times on this machine, one process.", "",
        markdown_table(["method", "pair precision", "pair recall", "group precision", "group recall", "groups",
                        "embed or hash (s)", "pair (s)", "items/s"], rows), ""]
    args.output.write_text("\n".join(lines))
    write_json(args.output, {"images": len(images), "copies": args.copies, "true_pairs": len(truth),
                             "near_identical_pairs": twins, "methods": results})
    print(f"wrote {args.output}")
