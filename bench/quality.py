"""Retrieval quality against what users reach for instead, on the Fashion-MNIST test set.

    python -m bench quality [--model models/default.onnx]

The 10,000 test images are a leave-one-out gallery: every image queries all the others.
Candidates: raw pixels (cosine), PCA-64 of pixels (fitted on the training split), perceptual
hashes from the `imagehash` package (pHash, dHash, wHash; Hamming distance) and the likeness model
(through ONNX Runtime). Metrics: P@1, MAP@R, pair ROC-AUC on 100,000 + 100,000 seeded pairs, and
near-duplicate R@1 (training.evaluation.near_duplicates: edited copies of 1,000 seeded test images,
prepared as the service prepares an upload, searched against all test images).
Writes docs/quality.md, docs/results/quality.json and docs/quality.png.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image

from bench.common import DOCS, REPO, make_parser, markdown_table, page_header, write_json
from contract import InputSpec, ModelSpec
from training.data.sources import load_raw
from training.evaluation import embed_all, evaluate_embeddings, onnx_embedder
from training.evaluation.near_duplicates import near_duplicate_metrics

HASHES: dict[str, Callable[[Image.Image], imagehash.ImageHash]] = {
    "pHash (imagehash)": imagehash.phash,
    "dHash (imagehash)": imagehash.dhash,
    "wHash (imagehash)": imagehash.whash,
}


def hash_vectors(images: np.ndarray, function: Callable) -> np.ndarray:
    """64-bit hashes as ±1 vectors: their inner product is 64 - 2·Hamming distance, so cosine
    neighbours are exactly Hamming neighbours."""
    bits = np.stack([function(Image.fromarray(img[:, :, 0])).hash.flatten() for img in images]).astype(np.float32)
    signs = bits * 2 - 1
    return signs / np.sqrt(signs.shape[1])


def pixel_vectors(images: np.ndarray, basis: np.ndarray | None = None, mean: np.ndarray | None = None) -> np.ndarray:
    x = images.reshape(len(images), -1).astype(np.float32) / 255.0
    if basis is not None:
        x = (x - mean) @ basis
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def run(models: list[Path], pairs: int, limit: int, queries: int) -> dict[str, dict]:
    train, test = load_raw("fashion-mnist")
    if limit:
        test = test.subset(np.arange(limit))
    train_pixels = train.images[:20000].reshape(20000, -1).astype(np.float32) / 255.0
    mean = train_pixels.mean(axis=0)
    _, _, vt = np.linalg.svd(train_pixels - mean, full_matrices=False)
    # name -> (embedder of uint8 [N, H, W, C] batches, the gallery in its input layout, its input spec)
    gray = InputSpec(height=test.images.shape[1], width=test.images.shape[2], channels=1)
    candidates: dict[str, tuple] = {
        "raw pixels (cosine)": (lambda x: (pixel_vectors(x), None), test.images, gray),
        "PCA-64 of pixels": (lambda x: (pixel_vectors(x, vt[:64].T, mean), None), test.images, gray),
    }
    for name, function in HASHES.items():
        candidates[name] = (lambda x, f=function: (hash_vectors(x, f), None), test.images, gray)
    import onnx

    for model in models:
        spec = ModelSpec.from_metadata({p.key: p.value for p in onnx.load(str(model)).metadata_props})
        images = test.images if spec.input.channels == 1 else np.repeat(test.images, 3, axis=3)
        candidates[f"likeness {spec.name} {spec.version}"] = (onnx_embedder(model), images, spec.input)
    results = {}
    for name, (embedder, images, input_spec) in candidates.items():
        vectors, _ = embed_all(embedder, images)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        results[name] = evaluate_embeddings(vectors, test.labels, pairs, seed=202)
        results[name]["near_duplicates"] = near_duplicate_metrics(embedder, images, input_spec, queries,
                                                                  gallery_embeddings=vectors)
        r, near = results[name], results[name]["near_duplicates"]
        print(f"{name:32s} P@1 {r['precision_at_1']:.4f}  MAP@R {r['map_at_r']:.4f}  AUC {r['roc_auc']:.4f}  "
              f"near-dup R@1 mean {near['mean_recall_at_1']:.4f} worst {near['worst_recall_at_1']:.4f}", flush=True)
    return results


def plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(9, 3.8))
    for i, (key, label) in enumerate((("precision_at_1", "P@1"), ("map_at_r", "MAP@R"), ("roc_auc", "pair ROC-AUC"))):
        ax.bar(x + (i - 1) * 0.27, [results[n][key] for n in names], 0.27, label=label)
    ax.set_xticks(x, names, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_title("Fashion-MNIST test, leave-one-out retrieval")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def render(results: dict[str, dict], args: argparse.Namespace) -> str:
    rows = [[name, f"{r['near_duplicates']['mean_recall_at_1']:.4f}", f"{r['near_duplicates']['worst_recall_at_1']:.4f}",
             f"{r['precision_at_1']:.4f}", f"{r['r_precision']:.4f}", f"{r['map_at_r']:.4f}",
             f"{r['roc_auc']:.4f}", f"{r['eer']:.4f}"] for name, r in results.items()]
    edits = list(next(iter(results.values()))["near_duplicates"]["recall_at_1"])
    per_edit = [[edit, *(f"{r['near_duplicates']['recall_at_1'][edit]:.4f}" for r in results.values())]
                for edit in edits]
    items = next(iter(results.values()))["items"]
    queries = next(iter(results.values()))["near_duplicates"]["queries"]
    return "\n".join([
        *page_header("Retrieval quality against the usual alternatives"),
        f"Fashion-MNIST test set, {items:,} images as a leave-one-out gallery; pair metrics on "
        f"{args.pairs:,} same-class and {args.pairs:,} different-class seeded pairs. Perceptual hashes are 64-bit "
        "and compared by Hamming distance; PCA is fitted on 20,000 training images.",
        "",
        "**Two jobs.** *The same thing*: near-duplicate R@1 is the share of edited copies (each edit below "
        f"applied to {queries:,} seeded test images, saved as a file and prepared as the service prepares an "
        "upload) whose original comes first among all test images; ties are misses. *The same kind of thing*: "
        "P@1, MAP@R and the pair metrics by class.",
        "",
        markdown_table(["method", "near-dup R@1 (mean)", "near-dup R@1 (worst edit)", "P@1", "R-Precision",
                        "MAP@R", "pair ROC-AUC", "pair EER"], rows),
        "",
        "Near-duplicate R@1 by edit:",
        "",
        markdown_table(["edit", *results], per_edit),
        "",
        f"![quality]({args.output.with_suffix('.png').name})",
        "",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = make_parser("quality", __doc__)
    parser.add_argument("--model", type=Path, nargs="+", default=[REPO / "models" / "default.onnx",
                                                                   REPO / "models" / "default-int8.onnx",
                                                                   REPO / "models" / "csn.onnx"])
    parser.add_argument("--queries", type=int, default=1000, help="originals edited for near-duplicate R@1")
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--limit", type=int, default=0, help="use only the first N test images (smoke runs)")
    parser.add_argument("--output", type=Path, default=DOCS / "quality.md")
    args = parser.parse_args(argv)
    results = run(args.model, args.pairs, args.limit, args.queries)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    plot(results, args.output.with_suffix(".png"))
    args.output.write_text(render(results, args))
    write_json(args.output, {"results": results})
    print(f"wrote {args.output}")
