"""Which recipe does both jobs: the same image after edits, and the same kind of thing?

    python -m bench similarity-ablation [--epochs 3] [--train-limit 15000] [--seeds 0 1]

Every variant trains with the same budget, backbone, schedule and seeds on the 6 seen Fashion-MNIST
classes (coat, shirt, sneaker and ankle boot held out, as in docs/openset.md), so one run gives all
four numbers side by side: near-duplicate R@1 (training.evaluation.near_duplicates: edited copies of
seeded seen-class test images, prepared as the service prepares an upload, searched against all
seen-class test images; mean over the edits and the worst edit), P@1 and MAP@R on the seen classes,
and MAP@R on the unseen classes. Raw pixels, PCA-64 and pHash are measured on the same images.
Writes docs/similarity-ablation.md and docs/results/similarity-ablation.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imagehash
import numpy as np

from bench.common import DOCS, make_parser, markdown_table, page_header, slug, train_or_reuse, write_json
from bench.openset import HOLDOUT
from bench.quality import hash_vectors
from training.config import load_config
from training.evaluation.embed import pixel_embedder


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: tuple[str, ...] = ()


NS20 = ('objective.name="normalized-softmax"', "objective.scale=20", "model.embedding_dim=64")
ARC64 = ('objective.name="arcface"', "objective.scale=64", "model.embedding_dim=64")
NONE = ("objective.instance_weight=0",)
NTXENT = ('objective.instance_loss="ntxent"', "objective.instance_temperature=0.1")
MARGIN = ('objective.instance_loss="margin"', "objective.instance_margin=0.1")
SPLIT = ("model.embedding_dim=128", "model.instance_dims=64", "model.instance_share=0.3")
# Each variant spells out its whole objective and embedding, so the table does not move when
# default.toml does.
VARIANTS = [
    Variant("arcface, scale 64, class only (the 1.1.0 objective)", (*ARC64, *NONE)),
    Variant("normalized-softmax, scale 20, class only", (*NS20, *NONE)),
    Variant("arcface + NT-Xent instance x1", (*ARC64, *NTXENT, "objective.instance_weight=1.0")),
    Variant("arcface + NT-Xent instance x0.5", (*ARC64, *NTXENT, "objective.instance_weight=0.5")),
    Variant("arcface + margin instance x1 (margin 0.1)", (*ARC64, *MARGIN, "objective.instance_weight=1.0")),
    Variant("arcface + NT-Xent instance x1, temperature 0.2", (*ARC64, 'objective.instance_loss="ntxent"',
                                                               "objective.instance_temperature=0.2",
                                                               "objective.instance_weight=1.0")),
    Variant("arcface + NT-Xent instance x1, 128-d", (*ARC64, *NTXENT, "objective.instance_weight=1.0",
                                                     "model.embedding_dim=128")),
    Variant("arcface + NT-Xent instance x1, 128-d, anti-aliased pooling",
            (*ARC64, *NTXENT, "objective.instance_weight=1.0", "model.embedding_dim=128", "model.antialias=true")),
    Variant("arcface + NT-Xent instance x1, 128-d, anti-aliased pooling, zoom p=0.6",
            (*ARC64, *NTXENT, "objective.instance_weight=1.0", "model.embedding_dim=128", "model.antialias=true",
             "augment.edit_zoom=0.6")),
    Variant("arcface + NT-Xent instance x1, 128-d split 64/64 (share 0.3)",
            (*ARC64, *NTXENT, "objective.instance_weight=1.0", *SPLIT)),
    Variant(SHIPPED := "arcface + NT-Xent instance x1, 128-d split 64/64 (share 0.3), anti-aliased pooling",
            (*ARC64, *NTXENT, "objective.instance_weight=1.0", *SPLIT, "model.antialias=true")),
    Variant("the same, arcface scale 32",
            (*ARC64, *NTXENT, "objective.instance_weight=1.0", *SPLIT, "model.antialias=true", "objective.scale=32")),
    Variant("the same, arcface scale 16",
            (*ARC64, *NTXENT, "objective.instance_weight=1.0", *SPLIT, "model.antialias=true", "objective.scale=16")),
    Variant("the same, arcface scale 8",
            (*ARC64, *NTXENT, "objective.instance_weight=1.0", *SPLIT, "model.antialias=true", "objective.scale=8")),
    Variant("the same, instance x2",
            (*ARC64, *NTXENT, "objective.instance_weight=2.0", *SPLIT, "model.antialias=true")),
    Variant("the same, stronger edits (rescale from 0.3x, colour 0.4)",
            (*ARC64, *NTXENT, "objective.instance_weight=1.0", *SPLIT, "model.antialias=true",
             "augment.edit_min_scale=0.3", "augment.edit_color=0.4")),
    Variant("the same, dynamic-diag NSL in the last stage",
            (*ARC64, *NTXENT, "objective.instance_weight=1.0", *SPLIT, "model.antialias=true",
             'model.layer="dynamic-diag"', "model.ns_last_stages=1")),
]
# Trained with every --seeds value; the others with the first seed only (a budget of 2 cores).
FINALISTS = ["arcface, scale 64, class only (the 1.1.0 objective)", SHIPPED, "the same, arcface scale 16"]


def run_variant(variant: Variant, seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from training.evaluation import torch_embedder
    from training.trainer import load_trained_model

    # One shared space, plain pooling, unless the variant says otherwise (default.toml may not).
    overrides = ["model.instance_dims=0", "model.antialias=false",
                 f"data.holdout_classes={_toml_list(HOLDOUT)}", f"optim.epochs={args.epochs}",
                 f"data.train_limit={args.train_limit}", f"seed={seed}", 'name="similarity-ablation"',
                 f'output_dir="{work}/{slug(variant.name)}-{seed}"', *args.set, *variant.overrides]
    config = load_config(args.config, overrides)
    model, _ = load_trained_model(train_or_reuse(config, resume=True) / "best.pt")
    return {"variant": variant.name, "seed": seed, **measure(torch_embedder(model), args, seed)}


def measure(embedder, args: argparse.Namespace, seed: int = 0) -> dict[str, Any]:
    """The four numbers of one embedder on the held-out split (the split depends on the seed)."""
    from contract import InputSpec
    from training.evaluation import embed_all, pair_metrics, retrieval_metrics
    from training.evaluation.near_duplicates import near_duplicate_metrics
    from training.tasks import load_task

    task = load_task(load_config(args.config, [f"data.holdout_classes={_toml_list(HOLDOUT)}", f"seed={seed}", *args.set]))
    test, unseen = task.splits.test, task.splits.test_unseen
    seen_embeddings, _ = embed_all(embedder, test.images)
    seen = retrieval_metrics(seen_embeddings, test.labels)
    unseen_embeddings, _ = embed_all(embedder, unseen.images)
    near = near_duplicate_metrics(embedder, test.images, InputSpec(height=28, width=28, channels=1), args.queries,
                                  gallery_embeddings=seen_embeddings)
    auc = pair_metrics(seen_embeddings, test.labels, min(50_000, 10 * len(test)), seed=202)[0]["roc_auc"]
    return {"near_duplicates": near, "seen_precision_at_1": seen["precision_at_1"], "seen_map_at_r": seen["map_at_r"],
            "seen_roc_auc": auc, "unseen_map_at_r": retrieval_metrics(unseen_embeddings, unseen.labels)["map_at_r"]}


def baselines(args: argparse.Namespace) -> list[dict[str, Any]]:
    from training.tasks import load_task

    task = load_task(load_config(args.config, [f"data.holdout_classes={_toml_list(HOLDOUT)}", *args.set]))
    pixels = task.splits.train.images.reshape(len(task.splits.train), -1).astype(np.float32) / 255.0
    mean = pixels.mean(axis=0)
    _, _, vt = np.linalg.svd(pixels[:20000] - mean, full_matrices=False)
    embedders = {"raw pixels (cosine)": pixel_embedder(), "PCA-64 of pixels": pixel_embedder(vt[:64].T, mean),
                 "pHash (imagehash)": lambda x: (hash_vectors(x, imagehash.phash), None)}
    return [{"variant": name, "seed": 0, **measure(fn, args)} for name, fn in embedders.items()]


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


def _mean_spread(values: list[float]) -> str:
    mean = statistics.mean(values)
    return f"{mean:.4f} ± {(max(values) - min(values)) / 2:.4f}" if len(values) > 1 else f"{mean:.4f}"


def render(results: list[dict], args: argparse.Namespace) -> str:
    by_variant: dict[str, list[dict]] = {}
    for row in results:
        by_variant.setdefault(row["variant"], []).append(row)
    rows = [[name,
             _mean_spread([r["near_duplicates"]["mean_recall_at_1"] for r in runs]),
             _mean_spread([r["near_duplicates"]["worst_recall_at_1"] for r in runs]),
             _mean_spread([r["seen_precision_at_1"] for r in runs]),
             _mean_spread([r["seen_map_at_r"] for r in runs]),
             _mean_spread([r["seen_roc_auc"] for r in runs]),
             _mean_spread([r["unseen_map_at_r"] for r in runs]),
             str(len(runs))] for name, runs in by_variant.items()]
    return "\n".join([
        *page_header("Similarity ablation: the same image and the same kind of thing"),
        f"Budget, the same for every trained variant: config `{args.config}` with {args.epochs} epochs on "
        f"{args.train_limit or 'all'} training images of the 6 seen classes, seeds {', '.join(map(str, args.seeds))}, "
        f"overrides {' '.join(args.set) or 'none'} plus the variant's own (docs/results/similarity-ablation.json). "
        f"Finalists (every seed): {'; '.join(f for f in (args.finalists if args.finalists is not None else FINALISTS))}; "
        "the other variants ran the first seed only. "
        f"Held out: {', '.join(HOLDOUT)}. Near-duplicate R@1: {args.queries} seeded seen-class test images, "
        "each edit of training/evaluation/near_duplicates.py applied and the file prepared as the service "
        "prepares an upload, searched against all 6,000 seen-class test images (ties are misses). Mean ± half "
        "the range over seeds; baselines have no seed.",
        "",
        markdown_table(["variant", "near-dup R@1 (mean of edits)", "near-dup R@1 (worst edit)", "seen P@1",
                        "seen MAP@R", "seen pair ROC-AUC", "unseen MAP@R", "seeds"], rows),
        "",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = make_parser("similarity-ablation", __doc__)
    parser.add_argument("--config", default="default")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-limit", type=int, default=15000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--variants", nargs="+", help="names of the variants to run (default: all)")
    parser.add_argument("--finalists", nargs="*", help="variants trained with every seed (default: the shipped "
                        "recipe, the 1.1.0 objective and the shipped recipe at ArcFace scale 16); the others use "
                        "the first seed")
    parser.add_argument("--set", action="append", default=[], help="config override for every variant")
    parser.add_argument("--work-dir", type=Path, help="keep runs here (reused when rerun)")
    parser.add_argument("--no-baselines", action="store_true", help="skip raw pixels, PCA and pHash")
    parser.add_argument("--output", type=Path, default=DOCS / "similarity-ablation.md")
    args = parser.parse_args(argv)
    variants = [v for v in VARIANTS if not args.variants or v.name in args.variants]
    finalists = args.finalists if args.finalists is not None else FINALISTS
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or Path(tmp)
        results = baselines(args) if not args.no_baselines else []
        for variant in variants:
            for seed in args.seeds if variant.name in finalists else args.seeds[:1]:
                row = run_variant(variant, seed, args, work)
                near = row["near_duplicates"]
                print(f"{variant.name} seed {seed}: near-dup {near['mean_recall_at_1']:.4f} / worst "
                      f"{near['worst_recall_at_1']:.4f}, seen P@1 {row['seen_precision_at_1']:.4f}, "
                      f"AUC {row['seen_roc_auc']:.4f}, unseen MAP@R {row['unseen_map_at_r']:.4f}", flush=True)
                results.append(row)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(results, args))
    write_json(args.output, {"results": results})
    print(f"wrote {args.output}")
