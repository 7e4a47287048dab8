"""How many pixel dimensions, and how much of the served cosine, should the pixel subspace get?

    python -m bench pixel-share --checkpoint RUN/best.pt --open-set-checkpoint TWIN/best.pt ... [--dims 16 32 64]
    python -m bench pixel-share --checkpoint runs/photos/best.pt --side 8 --split val --output docs/pixel-share-photos.md

``export --pixel-pca DIMS --pixel-share SHARE`` serves ``(1 - share) x learned cosine + share x
pixel-PCA cosine`` (training/models/pixel_fusion.py), the PCA fitted on the run's training split.
No weight changes with the share, so every (dims, share) is measured from one pass of the network:
for the shipped recipe's checkpoint, P@1, MAP@R and pair ROC-AUC on its test images and near-duplicate
R@1 (mean and worst edit); for each open-set checkpoint (the recipe trained without some classes;
give several seeds), MAP@R, P@1 and pair ROC-AUC on the unseen classes' test images beside raw pixels'.
``--side N`` takes the PCA of N x N block means (a colour layout, ``export --pixel-side``) instead of
every pixel; ``--split val`` measures the recipe's rows on the validation split, so that the choice
is not made on the test images. Writes docs/pixel-share.md (or ``--output``) and its JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench.common import DOCS, make_parser, markdown_table, page_header, write_json
from bench.instance_share import checkpoint_about, kept_checkpoint, reweigh
from training.evaluation import embed_all, evaluate_embeddings
from training.evaluation.embed import pixel_embedder, torch_embedder
from training.evaluation.near_duplicates import EDITS, edited_queries, exact_copies, query_sample, recall_at_1
from training.models.pixel_fusion import fit_pixel_pca

DIMS = [16, 32, 64]
SHARES = [0.0, 0.05, 0.1, 0.15, 0.2, 0.3]


def _load(checkpoint: Path):
    from training.tasks import load_task
    from training.trainer import load_trained_model

    model, saved = load_trained_model(checkpoint)
    return model, saved, load_task(saved.config)


def _pca_embedders(train_images: np.ndarray, dims: list[int], side: int = 0) -> dict[int, object]:
    embedders = {}
    for d in dims:
        mean, basis = fit_pixel_pca(train_images, d, side=side)
        embedders[d] = pixel_embedder(basis, mean, side)
    return embedders


def recipe_rows(checkpoint: Path, dims: list[int], shares: list[float], queries: int, pairs: int,
                limit: int = 0, side: int = 0, split: str = "test") -> tuple[dict, list[dict]]:
    model, saved, task = _load(checkpoint)
    test = getattr(task.splits, split)
    images, labels = (test.images[:limit], test.labels[:limit]) if limit else (test.images, test.labels)
    learned = torch_embedder(model)
    originals = query_sample(len(images), queries)
    same = exact_copies(images, originals)
    edited = {name: edited_queries(images[originals], saved.input, edit) for name, edit in EDITS.items()}
    gallery = embed_all(learned, images)[0]
    queried = {name: embed_all(learned, batch)[0] for name, batch in edited.items()}
    rows = []
    for d, pca in _pca_embedders(task.splits.train.images, dims, side).items():
        pixel_gallery = embed_all(pca, images)[0]
        pixel_queries = {name: embed_all(pca, batch)[0] for name, batch in edited.items()}
        for share in shares:
            served = reweigh((gallery, pixel_gallery), share)
            per_edit = {name: recall_at_1(reweigh((queried[name], pixel_queries[name]), share), served, originals,
                                                 same)
                        for name in edited}
            worst = min(per_edit, key=per_edit.get)
            scores = evaluate_embeddings(served, labels, pairs)
            rows.append({"dims": d, "share": share, "precision_at_1": scores["precision_at_1"],
                         "map_at_r": scores["map_at_r"], "roc_auc": scores["roc_auc"],
                         "near_duplicate_mean": float(np.mean(list(per_edit.values()))),
                         "near_duplicate_worst": per_edit[worst], "worst_edit": worst})
    about = {**checkpoint_about(checkpoint, saved), "images": int(len(images)), "queries": int(len(originals)),
             "pairs": pairs, "side": side, "split": split}
    return about, rows


def open_set_rows(checkpoint: Path, dims: list[int], shares: list[float], pairs: int) -> tuple[dict, list[dict]]:
    model, saved, task = _load(checkpoint)
    unseen = task.splits.test_unseen
    if unseen is None:
        raise SystemExit(f"{checkpoint} held no classes out; an open-set checkpoint needs holdout_classes")
    learned = embed_all(torch_embedder(model), unseen.images)[0]
    pixels = evaluate_embeddings(embed_all(pixel_embedder(), unseen.images)[0], unseen.labels, pairs)
    rows = []
    for d, pca in _pca_embedders(task.splits.train.images, dims).items():  # fitted on the seen classes only
        projected = embed_all(pca, unseen.images)[0]
        for share in shares:
            scores = evaluate_embeddings(reweigh((learned, projected), share), unseen.labels, pairs)
            rows.append({"dims": d, "share": share, "unseen_precision_at_1": scores["precision_at_1"],
                         "unseen_map_at_r": scores["map_at_r"], "unseen_roc_auc": scores["roc_auc"],
                         "over_pixels": scores["map_at_r"] - pixels["map_at_r"]})
    about = {**checkpoint_about(checkpoint, saved), "holdout_classes": list(saved.config.data.holdout_classes),
             "train_limit": saved.config.data.train_limit, "unseen_images": int(len(unseen)), "pixels_map_at_r": pixels["map_at_r"],
             "pixels_precision_at_1": pixels["precision_at_1"], "pixels_roc_auc": pixels["roc_auc"]}
    return about, rows


def render(recipe: tuple[dict, list[dict]] | None, open_sets: list[tuple[dict, list[dict]]]) -> str:
    lines = page_header("The pixel subspace's share of the served cosine")
    lines += ["Share 0 is the learned embedding alone. The PCA is fitted on each run's own training split "
              "(an open-set run never sees its held-out classes), as `export --pixel-pca` fits it.", ""]
    if recipe:
        about, rows = recipe
        layout = (f" The pixels are {about['side']}x{about['side']} block means (a colour layout)."
                  if about.get("side") else "")
        lines += [f"Shipped recipe: `{about['checkpoint']}` ({kept_checkpoint(about)}).{layout} "
                  f"P@1, MAP@R: {about['images']:,} {about.get('split', 'test')} images; pair ROC-AUC: {about['pairs']:,} seeded balanced "
                  f"pairs; near-duplicate R@1: {about['queries']:,} seeded originals, each edit of "
                  "training/evaluation/near_duplicates.py, searched against all of them.", ""]
        lines.append(markdown_table(
            ["PCA dims", "share", "P@1", "MAP@R", "pair ROC-AUC", "near-dup R@1 (mean)", "near-dup R@1 (worst)",
             "worst edit"],
            [[str(r["dims"]), f"{r['share']:.2f}", f"{r['precision_at_1']:.4f}", f"{r['map_at_r']:.4f}",
              f"{r['roc_auc']:.4f}", f"{r['near_duplicate_mean']:.4f}", f"{r['near_duplicate_worst']:.4f}",
              r["worst_edit"]] for r in rows]))
        lines.append("")
    for about, rows in open_sets:
        lines += [f"Open set: `{about['checkpoint']}` ({kept_checkpoint(about)}, train_limit "
                  f"{about['train_limit'] or 'none'}; held out {', '.join(about['holdout_classes'])}; "
                  f"{about['unseen_images']:,} unseen test images). Raw pixels on them: MAP@R "
                  f"{about['pixels_map_at_r']:.4f}, P@1 {about['pixels_precision_at_1']:.4f}, pair ROC-AUC "
                  f"{about['pixels_roc_auc']:.4f}.", ""]
        lines.append(markdown_table(
            ["PCA dims", "share", "unseen P@1", "unseen MAP@R", "vs raw pixels (points)", "unseen pair ROC-AUC"],
            [[str(r["dims"]), f"{r['share']:.2f}", f"{r['unseen_precision_at_1']:.4f}", f"{r['unseen_map_at_r']:.4f}",
              f"{r['over_pixels'] * 100:+.2f}", f"{r['unseen_roc_auc']:.4f}"] for r in rows]))
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = make_parser("pixel-share", __doc__)
    parser.add_argument("--checkpoint", type=Path, help="the shipped recipe's run (seen-class and near-duplicate rows)")
    parser.add_argument("--open-set-checkpoint", type=Path, nargs="*", default=[])
    parser.add_argument("--dims", type=int, nargs="+", default=DIMS)
    parser.add_argument("--shares", type=float, nargs="+", default=SHARES)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--limit", type=int, default=0, help="use only the first N test images (smoke runs)")
    parser.add_argument("--side", type=int, default=0, help="PCA of side x side block means (export --pixel-side)")
    parser.add_argument("--split", choices=("test", "val"), default="test",
                        help="the recipe's rows on its test or its validation split")
    parser.add_argument("--output", type=Path, default=DOCS / "pixel-share.md")
    args = parser.parse_args(argv)
    if not args.checkpoint and not args.open_set_checkpoint:
        parser.error("give --checkpoint, --open-set-checkpoint or both")
    recipe = (recipe_rows(args.checkpoint, args.dims, args.shares, args.queries, args.pairs, args.limit,
                          args.side, args.split)
              if args.checkpoint else None)
    open_sets = [open_set_rows(path, args.dims, args.shares, args.pairs) for path in args.open_set_checkpoint]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(recipe, open_sets))
    write_json(args.output, {"recipe": recipe, "open_sets": open_sets})
    for about, rows in open_sets:
        best = max(rows, key=lambda r: r["unseen_map_at_r"])
        print(about["checkpoint"], json.dumps(best))
    print(f"wrote {args.output}")
