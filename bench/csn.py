"""Conditional similarity: CSN against the paper's baselines, with the same budget.

    python -m bench csn [--epochs 4] [--triplets 40000]

Models, each trained with the same epochs, triplets per epoch, seed and schedule on tinted
Fashion-MNIST (aspects: category, group, color):
- standard triplet network (the paper's baseline): one embedding, the triplet loss alone, blind to
  which aspect a triplet is about;
- one embedding with all of CSN's losses but no masks (a stronger baseline: its per-aspect proxy
  losses know the aspects);
- task-specific networks: one network per aspect, trained on that aspect's triplets only (the set
  costs three times the compute of one model);
- CSN with fixed disjoint masks, and with learned masks.

All are scored on one fixed list of test triplets (drawn once, seeded) from the tinted test split:
triplet accuracy per aspect and overall, and per-aspect retrieval P@1. Writes docs/csn.md and
docs/results/csn.json.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    DOCS,
    make_parser,
    markdown_table,
    page_header,
    slug,
    train_or_reuse,
    write_json,
)
from training.config import load_config
from training.data.aspect_triplets import triplet_accuracy
from training.data.aspects import AspectTask
from training.data.fashion_aspects import FASHION_ASPECTS
from training.evaluation import embed_all, retrieval_metrics, torch_embedder

NO_MASKS_SAME_LOSSES = "one embedding, CSN's losses, no masks"
ENTRIES = {
    # The paper's baseline: triplet loss only, on one embedding, blind to the triplets' aspect.
    "standard triplet network": ('model.masks="none"', "objective.aspect_weight=0.0", "objective.overall_weight=0.0"),
    # A stronger baseline: every loss CSN gets (the per-aspect proxy losses and the joint-label
    # ArcFace know the aspects), but no masks, so every aspect shares one space.
    NO_MASKS_SAME_LOSSES: ('model.masks="none"',),
    "task-specific networks": ('model.masks="none"',),
    "CSN, fixed masks": ('model.masks="fixed"',),
    "CSN, learned masks": ('model.masks="learned"',),
}


def train_one(args: argparse.Namespace, work: Path, name: str, overrides: tuple[str, ...],
              aspects: list[str]) -> Any:
    from training.trainer import load_trained_model

    config = load_config(args.config, [*args.set, *overrides, f"optim.epochs={args.epochs}",
                                       f"data.train_triplets={args.triplets}", f"seed={args.seed}",
                                       "data.aspects=[" + ", ".join(f'"{a}"' for a in aspects) + "]",
                                       f'output_dir="{work}/{slug(name)}"', 'name="csn-bench"'])
    model, _ = load_trained_model(train_or_reuse(config) / "best.pt")
    return model


def aspect_space(model, images: np.ndarray, aspects: int) -> np.ndarray:
    embeddings, per_aspect = embed_all(torch_embedder(model), images)
    if per_aspect is not None:
        return per_aspect
    return np.repeat(embeddings[:, None, :], aspects, axis=1)


def score(space: np.ndarray, task: AspectTask) -> dict[str, Any]:
    accuracy = triplet_accuracy(space, task.test_triplets, task.aspects)
    precision = {a: retrieval_metrics(np.ascontiguousarray(space[:, i]), task.test.labels[a])["precision_at_1"]
                 for i, a in enumerate(task.aspects)}
    return {"triplet_accuracy": accuracy, "precision_at_1": precision}


def render(rows: dict[str, dict], args: argparse.Namespace, task: AspectTask) -> str:
    aspects = task.aspects
    table = [[name, *[f"{r['triplet_accuracy'][a] * 100:.2f}" for a in aspects],
              f"**{r['triplet_accuracy']['overall'] * 100:.2f}**", *[f"{r['precision_at_1'][a]:.4f}" for a in aspects]]
             for name, r in rows.items()]
    lines = [
        *page_header("Conditional similarity (CSN) on tinted Fashion-MNIST"),
        f"Every model: config `{args.config}`, {args.epochs} epochs of {args.triplets:,} freshly drawn training "
        f"triplets, seed {args.seed}. Test: {len(task.test_triplets):,} fixed triplets (equal shares per aspect) "
        f"drawn once from the {len(task.test):,} tinted test images; accuracy = share of triplets where the "
        "anchor's cosine to the close item beats its cosine to the far one, in the triplet's aspect space. "
        "P@1: leave-one-out retrieval on the tinted test images with each aspect's labels.",
        "",
        markdown_table(["model", *[f"triplet acc. {a} (%)" for a in aspects], "triplet acc. overall (%)",
                        *[f"P@1 {a}" for a in aspects]], table),
        "",
    ]
    for baseline in ("standard triplet network", NO_MASKS_SAME_LOSSES):
        if "CSN, learned masks" in rows and baseline in rows:
            gap = (rows["CSN, learned masks"]["triplet_accuracy"]["overall"]
                   - rows[baseline]["triplet_accuracy"]["overall"]) * 100
            lines.append(f"CSN with learned masks vs {baseline}, overall: {gap:+.2f} points.")
            lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = make_parser("csn", __doc__)
    parser.add_argument("--config", default="csn")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--triplets", type=int, default=40_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--entries", nargs="+", choices=list(ENTRIES))
    parser.add_argument("--set", action="append", default=[], help="overrides for every model")
    parser.add_argument("--work-dir", type=Path)
    parser.add_argument("--output", type=Path, default=DOCS / "csn.md")
    args = parser.parse_args(argv)
    # One task fixes the evaluation for everyone: test images, labels and the test triplet list.
    task = AspectTask(load_config(args.config, [*args.set, f"seed={args.seed}",
                                                "data.aspects=" + "[" + ", ".join(f'"{a}"' for a in FASHION_ASPECTS) + "]"]))
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or Path(tmp)
        for name in args.entries or list(ENTRIES):
            overrides = ENTRIES[name]
            if name == "task-specific networks":
                spaces = [aspect_space(train_one(args, work, f"{name}-{a}", overrides, [a]), task.test.images, 1)[:, 0]
                          for a in task.aspects]
                space = np.stack(spaces, axis=1)
            else:
                space = aspect_space(train_one(args, work, name, overrides, task.aspects), task.test.images,
                                     len(task.aspects))
            rows[name] = score(space, task)
            accuracy = rows[name]["triplet_accuracy"]
            print(f"{name:28s} " + "  ".join(f"{k} {v * 100:.2f}" for k, v in accuracy.items()), flush=True)
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(render(rows, args, task))
            write_json(args.output, {"rows": rows})
    print(f"wrote {args.output}")
