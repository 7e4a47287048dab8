"""Retrieval, then a pixel check: can an exact second stage decide "the same image" where the
embedding's cosine cannot? (issue #29 names the design; this measures it before anything ships it.)

    python -m bench pixel-check [--model models/default.onnx] [--originals 100] [--candidates 10]
    python -m bench pixel-check --model models/photo.onnx --data-dir SHOP --output docs/pixel-check-photos.md

For seeded originals of the Fashion-MNIST test set (or of a photo folder's test split, prepared as
the model's spec says; compared at CHECK_SIDE pixels at most) and each measured edit
(training/evaluation/edits.py), the copy is prepared as the service prepares an upload and embedded;
the model proposes its ``--candidates`` nearest gallery images. The check then aligns the copy onto
each candidate: the copy, mirrored or not, is scaled (0.8x to 1.25x) and rotated (-6 to 6 degrees)
about its centre, each of those 100 versions is compared with the candidate shifted by up to 4
pixels each way, and the check's score is the best normalised cross-correlation (zero-mean, as
OpenCV's TM_CCOEFF_NORMED). The same check runs between each original and the model's
``--candidates`` nearest *other* images (near-identical images of the data set left out, as the
decision's fit does): its 1% point is the check's threshold.

Reported per edit and family: R@1 of the embedding alone, R@1 when the check re-orders the
candidates, and the share of copies the check calls the same image at its threshold. Writes
docs/pixel-check.md and docs/results/pixel-check.json.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from bench.common import DOCS, REPO, make_parser, markdown_table, page_header, write_json
from contract import ModelSpec
from training.data.sources import load_raw
from training.evaluation import embed_all, onnx_embedder
from training.evaluation.near_duplicates import EDITS, FAMILIES, edited_queries, families_of, query_sample
from training.evaluation.same_image import dataset_near_duplicates

SCALES = np.linspace(0.8, 1.25, 10)
ANGLES = (-6.0, -3.0, 0.0, 3.0, 6.0)
SHIFT = 4
FALSE_POSITIVES = 0.01
# Photos are compared at this side at most (block means): 64 pixels keep a garment's shape and the
# background's texture, and a 4-pixel shift then spans 6% of the frame.
CHECK_SIDE = 64


def _unit_rows(rows: np.ndarray) -> np.ndarray:
    """Each row zero-mean and of unit length (a flat image has a zero row: it matches nothing)."""
    rows = rows - rows.mean(axis=1, keepdims=True)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-6)


def aligned_versions(image: np.ndarray) -> np.ndarray:
    """[100, H*W]: ``image`` (float grey [H, W]) mirrored or not, scaled and rotated about its
    centre, edges repeated; each row zero-mean, unit length."""
    height, width = image.shape
    centre = np.array([(height - 1) / 2, (width - 1) / 2])
    versions = []
    for source in (image, image[:, ::-1]):
        for scale in SCALES:
            for angle in np.deg2rad(ANGLES):
                # affine_transform maps output coordinates to input ones: the inverse of the warp.
                rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
                inverse = rotation.T / scale
                offset = centre - inverse @ centre
                versions.append(ndimage.affine_transform(source, inverse, offset, order=1, mode="nearest"))
    return _unit_rows(np.stack(versions).reshape(len(versions), -1))


def shifted_windows(image: np.ndarray) -> np.ndarray:
    """[(2*SHIFT+1)^2, H*W]: ``image`` moved by every shift up to SHIFT pixels, edges repeated;
    rows zero-mean, unit length."""
    height, width = image.shape
    padded = np.pad(image, SHIFT, mode="edge")
    windows = [padded[dy:dy + height, dx:dx + width] for dy in range(2 * SHIFT + 1) for dx in range(2 * SHIFT + 1)]
    return _unit_rows(np.stack(windows).reshape(len(windows), -1))


def check_score(versions: np.ndarray, candidate: np.ndarray) -> float:
    """The check: the best correlation of any aligned version of the copy with any shift of the candidate."""
    return float((versions @ shifted_windows(candidate).T).max())


def grey(images: np.ndarray) -> np.ndarray:
    """float grey [N, h, w] in [0, 1], shrunk by whole block means to CHECK_SIDE pixels at most."""
    out = images[..., :3].mean(axis=-1).astype(np.float32) / 255.0
    factor = max(1, out.shape[1] // CHECK_SIDE)
    if factor > 1:
        n, height, width = out.shape
        out = out[:, :height // factor * factor, :width // factor * factor]
        out = out.reshape(n, height // factor, factor, width // factor, factor).mean(axis=(2, 4))
    return out


def gallery_images(spec: ModelSpec, data_dir: Path | None) -> tuple[np.ndarray, str]:
    """The gallery: Fashion-MNIST's test split, or a photo folder's (its own test split), as the spec prepares them."""
    if data_dir is None:
        images = load_raw("fashion-mnist", fit=spec.input.fit)[1].images
        return images, f"{len(images):,} Fashion-MNIST test images"
    from training.data.sources import load_splits

    splits = load_splits("folder", str(data_dir), image_size=spec.input.height, channels=spec.input.channels,
                         fit=spec.input.fit, pad_value=spec.input.pad_value, resample=spec.input.resample)
    return splits.test.images, f"{len(splits.test.images):,} test photos of {data_dir.name}/"


def main(argv: list[str] | None = None) -> None:
    parser = make_parser("pixel-check", __doc__)
    parser.add_argument("--model", type=Path, default=REPO / "models" / "default.onnx")
    parser.add_argument("--originals", type=int, default=100)
    parser.add_argument("--candidates", type=int, default=10)
    parser.add_argument("--data-dir", type=Path, default=None, help="a photo folder (one sub-folder per class): "
                        "its test split is the gallery, instead of Fashion-MNIST's")
    parser.add_argument("--output", type=Path, default=DOCS / "pixel-check.md")
    args = parser.parse_args(argv)
    if args.originals < 1 or args.candidates < 1:
        parser.error("--originals and --candidates must be at least 1")
    started = time.perf_counter()
    import onnx

    spec = ModelSpec.from_metadata({p.key: p.value for p in onnx.load(str(args.model)).metadata_props})
    gallery, described = gallery_images(spec, args.data_dir)
    embedder = onnx_embedder(args.model)
    embeddings, _ = embed_all(embedder, gallery, 1024)
    originals = query_sample(len(gallery), args.originals)
    near = dataset_near_duplicates(gallery)
    pixels = grey(gallery)

    others = []
    for original in originals:
        scores = embeddings @ embeddings[original]
        scores[original] = -np.inf
        scores[near[original]] = -np.inf
        versions = aligned_versions(pixels[original])
        others.append(max(check_score(versions, pixels[c]) for c in np.argsort(-scores)[:args.candidates]))
    others = np.sort(others)[::-1]
    threshold = float(others[int(FALSE_POSITIVES * len(others))]) + 1e-6

    per_edit = {}
    for name, edit in EDITS.items():
        copies = edited_queries(gallery[originals], spec.input, edit)
        copy_embeddings, _ = embed_all(embedder, copies, 1024)
        found = reranked = called = 0
        for copy, embedding, original in zip(grey(copies), copy_embeddings, originals):
            candidates = np.argsort(-(embeddings @ embedding))[:args.candidates]
            same = [c for c in candidates if c == original or near[original, c]]
            versions = aligned_versions(copy)
            checked = [check_score(versions, pixels[c]) for c in candidates]
            found += bool(same) and candidates[0] in same
            reranked += bool(same) and candidates[int(np.argmax(checked))] in same
            called += check_score(versions, pixels[original]) >= threshold
        n = len(originals)
        per_edit[name] = {"embedding_r1": found / n, "checked_r1": reranked / n, "called": called / n}
        print(f"{name}: {per_edit[name]}", flush=True)

    # Per family: the worst edit's R@1 (as the cards give it), and the mean share called the same image.
    worst = {key: families_of({name: v[key] for name, v in per_edit.items()}) for key in ("embedding_r1", "checked_r1")}
    families = {family: {"embedding_r1": worst["embedding_r1"][family], "checked_r1": worst["checked_r1"][family],
                         "called": float(np.mean([per_edit[name]["called"] for name in edits]))}
                for family, edits in FAMILIES.items()}
    seconds = time.perf_counter() - started
    rows = [[family, f"{v['embedding_r1']:.2f}", f"{v['checked_r1']:.2f}", f"{v['called']:.2f}"]
            for family, v in families.items()]
    lines = page_header("Retrieval, then a pixel check") + [
        f"Model: `{args.model.relative_to(REPO) if args.model.is_relative_to(REPO) else args.model}` "
        f"({spec.name} {spec.version}); {len(originals)} seeded originals of the {described}, compared at "
        f"{pixels.shape[1]} pixels, each edit's copy against the model's {args.candidates} nearest candidates; "
        f"{seconds / 60:.1f} min. What the check is: the top of `bench/pixel_check.py`.",
        "",
        f"The check's threshold: **{threshold:.4f}**, the score at which {FALSE_POSITIVES:.0%} of the originals' "
        "nearest other images (the model's candidates, near-identical images left out) pass it.",
        "",
        "Per family: the worst edit's R@1 of the embedding alone and with the check re-ordering the candidates, "
        "and the mean share of copies the check calls the same image.",
        "",
        markdown_table(["family", "R@1, embedding", "R@1, checked", "called the same image"], rows),
        "",
        "Per edit:",
        "",
        markdown_table(["edit", "R@1, embedding", "R@1, checked", "called"],
                       [[name, f"{v['embedding_r1']:.2f}", f"{v['checked_r1']:.2f}", f"{v['called']:.2f}"]
                        for name, v in per_edit.items()]),
        "",
    ]
    args.output.write_text("\n".join(lines))
    write_json(args.output, {"model": f"{spec.name} {spec.version}", "originals": len(originals),
                             "candidates": args.candidates, "threshold": threshold, "families": families,
                             "edits": per_edit, "seconds": round(seconds, 1)})
    print(f"wrote {args.output}")
