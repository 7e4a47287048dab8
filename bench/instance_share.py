"""How much of the served cosine should the instance subspace get?

    python -m bench instance-share [--model models/default.onnx ...] [--open-set-checkpoint PATH ...]

A split model (``model.instance_dims`` > 0) serves ``(1 - share) x class cosine + share x instance
cosine``. ``share`` changes no weight: it only weighs the two L2-normalised halves of the served
embedding, so every share can be measured from one pass over the test images. For each exported
model: P@1, MAP@R and pair ROC-AUC on the 10,000 Fashion-MNIST test images, and near-duplicate R@1
(training.evaluation.near_duplicates: mean over the edits and the worst edit) for each share. For
each open-set checkpoint given (the recipe trained without coat, shirt, sneaker and ankle boot):
MAP@R and P@1 on those unseen classes' test images. Writes docs/instance-share.md and its JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx

from bench.common import DOCS, make_parser, markdown_table, page_header, write_json
from contract import ModelSpec
from training.data.sources import load_raw
from training.evaluation import embed_all, evaluate_embeddings, retrieval_metrics
from training.evaluation.embed import onnx_embedder, torch_embedder
from training.evaluation.near_duplicates import EDITS, edited_queries, exact_copies, query_sample, recall_at_1

REPO = Path(__file__).resolve().parents[1]
SHARES = [0.0, 0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0]


def checkpoint_about(checkpoint: Path, saved) -> dict:
    """Where a checkpoint's rows come from: its path, seed, and the epoch selection kept of the schedule."""
    return {"checkpoint": str(checkpoint), "seed": saved.config.seed, "epochs": saved.state.epoch,
            "schedule": saved.config.optim.epochs}


def kept_checkpoint(about: dict) -> str:
    """The seed and kept epoch of :func:`checkpoint_about`, as the pages show them."""
    return f"seed {about['seed']}, epoch {about['epochs']} of {about['schedule']}"


def _halves(embeddings: np.ndarray, instance_dims: int) -> tuple[np.ndarray, np.ndarray]:
    """The served embedding's class and instance parts, each L2-normalised again."""
    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return unit(embeddings[:, :-instance_dims]), unit(embeddings[:, -instance_dims:])


def reweigh(halves: tuple[np.ndarray, np.ndarray], share: float) -> np.ndarray:
    """Concatenate two L2-normalised parts so that the dot product is (1 - share) x the first's cosine
    + share x the second's: the class and instance halves here, the learned and pixel parts in
    bench/pixel_share.py (the graph does the same in training.models.embedding.weigh)."""
    kind, own = halves
    return np.concatenate([kind * (1 - share) ** 0.5, own * share ** 0.5], axis=1).astype(np.float32)


def _learned_dims(spec: ModelSpec) -> int:
    """How many leading dimensions the network learned: a pixel subspace added at export
    (training/models/pixel_fusion.py) follows them and is left out here."""
    return spec.embedding_dim - (spec.training.pixel_pca.dims if spec.training.pixel_pca else 0)


def _instance_dims(spec: ModelSpec) -> tuple[int, float]:
    backbone = spec.training.backbone
    dims = int(backbone.get("instance_dims") or 0)
    if not dims:
        raise SystemExit(f"{spec.name} {spec.version} has no instance subspace (model.instance_dims is 0)")
    return dims, float(backbone["instance_share"])


def model_rows(model: Path, queries: int, pairs: int, limit: int = 0) -> tuple[dict, list[dict]]:
    spec = ModelSpec.from_metadata({p.key: p.value for p in onnx.load(str(model)).metadata_props})
    dims, shipped = _instance_dims(spec)
    _, test = load_raw("fashion-mnist")
    if limit:
        test = test.subset(np.arange(min(limit, len(test))))
    images = test.images if spec.input.channels == 1 else np.repeat(test.images, 3, axis=3)
    served, learned = onnx_embedder(model), _learned_dims(spec)

    def embedder(batch: np.ndarray) -> tuple[np.ndarray, None]:
        return served(batch)[0][:, :learned], None

    gallery = _halves(embed_all(embedder, images)[0], dims)
    originals = query_sample(len(images), queries)
    same = exact_copies(images, originals)
    edited = {name: _halves(embed_all(embedder, edited_queries(images[originals], spec.input, edit))[0], dims)
              for name, edit in EDITS.items()}
    rows = []
    for share in SHARES:
        served = reweigh(gallery, share)
        retrieval = retrieval_metrics(served, test.labels)
        per_edit = {name: recall_at_1(reweigh(query, share), served, originals, same) for name, query in edited.items()}
        worst = min(per_edit, key=per_edit.get)
        rows.append({"share": share, "precision_at_1": retrieval["precision_at_1"], "map_at_r": retrieval["map_at_r"],
                     "roc_auc": evaluate_embeddings(served, test.labels, pairs)["roc_auc"],
                     "near_duplicate_mean": float(np.mean(list(per_edit.values()))),
                     "near_duplicate_worst": per_edit[worst], "worst_edit": worst})
    shown = model.resolve().relative_to(REPO) if model.resolve().is_relative_to(REPO) else model
    about = {"model": f"{spec.name} {spec.version}", "path": str(shown), "instance_dims": dims, "shipped_share": shipped,
             "pixel_dims": spec.embedding_dim - learned,
             "queries": int(len(originals)), "gallery": int(len(images)), "pairs": pairs}
    return about, rows


def open_set_rows(checkpoint: Path) -> tuple[dict, list[dict]]:
    from training.tasks import load_task
    from training.trainer import load_trained_model

    model, saved = load_trained_model(checkpoint)
    dims = saved.config.model.instance_dims
    if not dims:
        raise SystemExit(f"{checkpoint} has no instance subspace (model.instance_dims is 0)")
    unseen = load_task(saved.config).splits.test_unseen
    if unseen is None:
        raise SystemExit(f"{checkpoint} held no classes out; an open-set checkpoint needs holdout_classes")
    halves = _halves(embed_all(torch_embedder(model), unseen.images)[0], dims)
    rows = []
    for share in SHARES:
        retrieval = retrieval_metrics(reweigh(halves, share), unseen.labels)
        rows.append({"share": share, "unseen_precision_at_1": retrieval["precision_at_1"],
                     "unseen_map_at_r": retrieval["map_at_r"]})
    about = {**checkpoint_about(checkpoint, saved), "holdout_classes": list(saved.config.data.holdout_classes),
             "train_limit": saved.config.data.train_limit, "instance_share": saved.config.model.instance_share, "unseen_images": int(len(unseen))}
    return about, rows


def render(models: list[tuple[dict, list[dict]]], open_sets: list[tuple[dict, list[dict]]]) -> str:
    lines = page_header("The instance share of the served cosine")
    for about, rows in models:
        lines += [f"Model: {about['model']} (`{about['path']}`), instance subspace {about['instance_dims']} "
                  f"dimensions, shipped with share {about['shipped_share']}. Same weights in every row: only the "
                  f"weighting of the two halves changes. P@1, MAP@R: the {about['gallery']:,} Fashion-MNIST test "
                  f"images; pair ROC-AUC: {about['pairs']:,} seeded balanced pairs; near-duplicate R@1: "
                  f"{about['queries']:,} seeded originals, each edit of training/evaluation/near_duplicates.py, "
                  f"searched against all {about['gallery']:,}."
                  + (f" The model's pixel subspace ({about['pixel_dims']} dimensions, added at export) is left out: "
                     "these rows weigh the learned embedding's two halves only." if about.get("pixel_dims") else ""), ""]
        lines.append(markdown_table(
            ["share", "P@1", "MAP@R", "pair ROC-AUC", "near-dup R@1 (mean)", "near-dup R@1 (worst)", "worst edit"],
            [[f"{r['share']:.2f}", f"{r['precision_at_1']:.4f}", f"{r['map_at_r']:.4f}", f"{r['roc_auc']:.4f}",
              f"{r['near_duplicate_mean']:.4f}", f"{r['near_duplicate_worst']:.4f}", r["worst_edit"]] for r in rows]))
        lines.append("")
    for about, rows in open_sets:
        lines += [f"Open set: `{about['checkpoint']}` ({kept_checkpoint(about)}, "
                  f"train_limit {about['train_limit'] or 'none'}; held out {', '.join(about['holdout_classes'])}; "
                  f"{about['unseen_images']:,} unseen test images).", ""]
        lines.append(markdown_table(["share", "unseen P@1", "unseen MAP@R"],
                                    [[f"{r['share']:.2f}", f"{r['unseen_precision_at_1']:.4f}",
                                      f"{r['unseen_map_at_r']:.4f}"] for r in rows]))
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = make_parser("instance-share", __doc__)
    parser.add_argument("--model", type=Path, nargs="+", default=[REPO / "models" / "default.onnx"],
                        help="exported models with a split embedding (model.instance_dims > 0)")
    parser.add_argument("--open-set-checkpoint", type=Path, nargs="*", default=[])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--limit", type=int, default=0, help="use only the first N test images (smoke runs)")
    parser.add_argument("--output", type=Path, default=DOCS / "instance-share.md")
    args = parser.parse_args(argv)
    models = [model_rows(path, args.queries, args.pairs, args.limit) for path in args.model]
    open_sets = [open_set_rows(path) for path in args.open_set_checkpoint]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(models, open_sets))
    write_json(args.output, {"models": models, "open_sets": open_sets})
    for about, rows in models:
        shipped = next((r for r in rows if r["share"] == about["shipped_share"]), {})
        print(about["model"], json.dumps(shipped))
    print(f"wrote {args.output}")
