"""NSL ablation: every layer type trained with the same budget, seeds and schedule on Fashion-MNIST.

    python -m bench nsl-ablation [--epochs 5] [--train-limit 20000] [--seeds 0 1]

For each variant and seed: train, fold, export to ONNX, evaluate the ONNX graph on the full test
split (P@1, MAP@R, pair ROC-AUC). Then, side by side in this one run: parameters, MACs per image,
training images/s (measured during training) and ONNX Runtime CPU inference images/s (interleaved
rounds, median). Writes docs/nsl-ablation.md and docs/results/nsl-ablation.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.common import (
    DOCS,
    interleaved_rates,
    make_parser,
    markdown_table,
    page_header,
    slug,
    train_or_reuse,
    write_json,
)
from training.config import load_config
from training.evaluation import embed_all, evaluate_embeddings, onnx_embedder


@dataclass(frozen=True)
class Variant:
    name: str
    layer: str
    predictor: str = "plain"
    extra: tuple[str, ...] = ()  # more config overrides

    @property
    def overrides(self) -> list[str]:
        """The config overrides that make this variant."""
        return [f'model.layer="{self.layer}"', f'model.predictor="{self.predictor}"', *self.extra]


VARIANTS = [
    Variant("plain", "plain"),
    Variant("static-diag", "static-diag"),
    Variant("static-full", "static-full"),
    Variant("dynamic-diag", "dynamic-diag"),
    Variant("dynamic-full", "dynamic-full"),
    Variant("dynamic-diag, sphere predictor", "dynamic-diag", "sphere"),
    Variant("sphere (cosine SphereConv layer)", "sphere"),
    Variant("dynamic-lowrank (r=1)", "dynamic-lowrank", extra=("model.rank=1",)),
    Variant("dynamic-lowrank (r=1), last conv per stage", "dynamic-lowrank", extra=("model.rank=1", "model.ns_per_stage=1")),
    Variant("dynamic-diag, last stage only", "dynamic-diag", extra=("model.ns_last_stages=1",)),
]


def count_macs(model: torch.nn.Module, spec) -> int:
    """Multiply-accumulates per image of convolutions, matmuls and einsums (elementwise ops not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    images = torch.zeros(1, spec.height, spec.width, spec.channels, dtype=torch.uint8)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(images)
    return counter.get_total_flops() // 2


def run_variant(variant: Variant, seed: int, args: argparse.Namespace, work: Path) -> dict:
    from training.export import export_onnx
    from training.layers import fold_static_layers
    from training.tasks import load_task
    from training.trainer import load_trained_model

    overrides = [*variant.overrides, f"optim.epochs={args.epochs}", f"data.train_limit={args.train_limit}",
                 f"seed={seed}", f'output_dir="{work}/{slug(variant.name)}-{seed}"', 'name="ablation"']
    overrides += args.set
    config = load_config(args.config, overrides)
    run_dir = train_or_reuse(config, resume=True)  # resume=True continues an interrupted run
    model, saved = load_trained_model(run_dir / "best.pt")
    params = sum(p.numel() for p in model.parameters())
    history = saved.state.history
    train_rate = statistics.mean(h["train_images_per_s"] for h in history)  # as it ran (maybe shared)
    fold_static_layers(model)
    spec = saved.input
    onnx_path = run_dir / "model.onnx"
    export_onnx(model, spec, onnx_path, aspects=False)
    task = load_task(config)
    embeddings, _ = embed_all(onnx_embedder(onnx_path), task.splits.test.images)
    metrics = evaluate_embeddings(embeddings, task.splits.test.labels, pairs=50_000, seed=202)
    return {"variant": variant.name, "seed": seed, "params": params, "macs": count_macs(model, spec),
            "run_images_per_s": train_rate, "onnx": str(onnx_path), **metrics}


def untrained_cost(variant: Variant, config_name: str, overrides: list[str], work: Path) -> dict:
    """Parameters, MACs and an exported ONNX graph of an untrained model: cost does not depend on
    the weights, so variants too slow to train within the session can still be priced."""
    from contract import InputSpec
    from training.export import export_onnx
    from training.layers import fold_static_layers
    from training.models import build_model

    config = load_config(config_name, [*overrides, *variant.overrides])
    model = build_model(config.model, 1, [0.3], [0.35]).eval()
    params = sum(p.numel() for p in model.parameters())
    fold_static_layers(model)
    spec = InputSpec(height=28, width=28, channels=1)
    onnx_path = work / f"cost-{slug(variant.name)}.onnx"
    export_onnx(model, spec, onnx_path, aspects=False)
    return {"variant": variant.name, "params": params, "macs": count_macs(model, spec), "onnx": str(onnx_path)}


def measure_training(variants: list[Variant], config_name: str, overrides: list[str], batch: int,
                     repeats: int) -> dict[str, float]:
    """Training images/s per variant: forward, loss and backward on one fixed batch, in interleaved
    rounds (median), all threads. Measured apart from the accuracy runs, so those can share the
    machine without skewing this column."""
    from training.config import load_config
    from training.models import build_model
    from training.objectives import build_objective

    images = torch.randint(0, 256, (batch, 28, 28, 1), dtype=torch.uint8)
    labels = torch.arange(batch) % 10
    steps = {}
    for variant in variants:
        config = load_config(config_name, [*overrides, *variant.overrides])
        model = build_model(config.model, 1, [0.3], [0.35]).train()
        objective = build_objective(config.objective, 10, config.model.embedding_dim)
        optimizer = torch.optim.AdamW([*model.parameters(), *objective.parameters()], lr=1e-4)

        def step(model=model, objective=objective, optimizer=optimizer) -> int:
            loss = objective(model, {"images": images, "labels": labels}).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            return batch

        step()  # warm-up
        steps[variant.name] = step
    return interleaved_rates(steps, repeats, min_seconds=1.0)


def measure_inference(onnx_paths: dict[str, str], batch: int, repeats: int) -> dict[str, float]:
    import onnxruntime as ort

    images = np.random.default_rng(0).integers(0, 256, (batch, 28, 28, 1), dtype=np.uint8)
    calls = {}
    for name, path in onnx_paths.items():
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        calls[name] = (lambda s: (lambda: (s.run(None, {"images": images}), batch)[1]))(session)
    return interleaved_rates(calls, repeats)


def _mean_spread(values: list[float]) -> str:
    mean = statistics.mean(values)
    spread = (max(values) - min(values)) / 2 if len(values) > 1 else 0.0
    return f"{mean:.4f} ± {spread:.4f}"


def render(results: list[dict], inference: dict[str, float], training: dict[str, float],
           args: argparse.Namespace, costs: list[dict] | None = None) -> str:
    by_variant: dict[str, list[dict]] = {}
    for row in results:
        by_variant.setdefault(row["variant"], []).append(row)
    plain_rate, plain_train = inference.get("plain"), training.get("plain")
    rows = []
    for name, runs in by_variant.items():
        first = runs[0]
        rate, train_rate = inference.get(name, float("nan")), training.get(name, float("nan"))
        rows.append([
            name,
            _mean_spread([r["precision_at_1"] for r in runs]),
            _mean_spread([r["map_at_r"] for r in runs]),
            _mean_spread([r["roc_auc"] for r in runs]),
            f"{first['params']:,}",
            f"{first['macs'] / 1e6:.1f} M",
            f"{train_rate:.0f}" + (f" ({plain_train / train_rate:.1f}x)" if plain_train else ""),
            f"{rate:.0f}" + (f" ({plain_rate / rate:.2f}x)" if plain_rate else ""),
        ])
    table = markdown_table(["variant", "P@1", "MAP@R", "pair ROC-AUC", "params (trained)", "MACs/image",
                            "train img/s (plain's cost x)", "ONNX Runtime CPU img/s, batch 64 (plain's cost x)"], rows)
    plain = by_variant["plain"]
    plain_p1 = statistics.mean(r["precision_at_1"] for r in plain)
    verdicts = []
    for name, runs in by_variant.items():
        if name == "plain":
            continue
        p1 = [r["precision_at_1"] for r in runs]
        delta = statistics.mean(p1) - plain_p1
        noise = max(max(p1) - min(p1), max(r["precision_at_1"] for r in plain) - min(r["precision_at_1"] for r in plain))
        word = "better than" if delta > noise else ("worse than" if delta < -noise else "indistinguishable from")
        verdicts.append(f"- **{name}**: P@1 {delta * 100:+.2f} points vs plain; seed spread {noise * 100:.2f} "
                        f"points, so {word} plain at this budget.")
    seeds = ", ".join(str(s) for s in args.seeds)
    return "\n".join([
        *page_header("NSL ablation on Fashion-MNIST"),
        f"Budget, the same for every variant: config `{args.config}` with {args.epochs} epochs on "
        f"{args.train_limit or 'all'} training images, seeds {seeds}, identical schedule and augmentation. "
        f"Metrics are on the {results[0]['items']:,}-image Fashion-MNIST test split, measured on the exported ONNX graph (static layers "
        "folded): mean ± half the range over seeds. Parameters count what is trained (static M included; "
        "folding removes it). MACs count convolutions, matmuls and einsums per image. Training and inference "
        f"images/s were measured after all runs, in interleaved rounds (median of {args.repeats}) on fixed batches "
        "with all cores, so their ratios are side by side; the accuracy runs themselves may have shared the machine.",
        "",
        table,
        "",
        "## Verdict, computed from the table",
        "",
        *verdicts,
        "",
        *_cost_section(costs or [], inference, training),
    ])


def _cost_section(costs: list[dict], inference: dict[str, float], training: dict[str, float]) -> list[str]:
    if not costs:
        return []
    plain_rate, plain_train = inference.get("plain"), training.get("plain")
    rows = [[c["variant"], f"{c['params']:,}", f"{c['macs'] / 1e6:.1f} M",
             f"{training[c['variant']]:.0f}" + (f" ({plain_train / training[c['variant']]:.1f}x)" if plain_train else ""),
             f"{inference[c['variant']]:.0f}" + (f" ({plain_rate / inference[c['variant']]:.2f}x)" if plain_rate else "")]
            for c in costs]
    return ["## Cost only (not trained in this run)", "",
            "Untrained models of the same width, measured in the same interleaved rounds as the table above "
            "(cost does not depend on the weights); their accuracy was not measured.", "",
            markdown_table(["variant", "params", "MACs/image", "train img/s (plain's cost x)",
                            "ONNX Runtime CPU img/s, batch 64 (plain's cost x)"], rows), ""]


def select_variants(requested: list[str] | None) -> list[Variant]:
    """All variants, or those named; a word that is no variant's name selects every variant of
    that layer type ("dynamic-diag" alone would otherwise also pull in its sphere-predictor twin).
    ``plain`` is always in: every cost and accuracy in the table is read against it."""
    if not requested:
        return list(VARIANTS)
    names = {v.name for v in VARIANTS}
    return [v for v in VARIANTS
            if v.name == "plain" or v.name in requested or any(r not in names and r == v.layer for r in requested)]


def main(argv: list[str] | None = None) -> None:
    parser = make_parser("nsl-ablation", __doc__)
    parser.add_argument("--config", default="class-only")  # the recipe these pages were made with
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train-limit", type=int, default=20000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--variants", nargs="+", help="subset of variant names (default: all)")
    parser.add_argument("--cost-only", nargs="+", default=[], help="variants priced untrained (no accuracy)")
    parser.add_argument("--set", action="append", default=[], help="extra config overrides for every run")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--work-dir", type=Path, help="where runs go (default: a temporary directory)")
    parser.add_argument("--output", type=Path, default=DOCS / "nsl-ablation.md")
    args = parser.parse_args(argv)
    variants = select_variants(args.variants)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or Path(tmp)
        results = []
        for variant in variants:
            for seed in args.seeds:
                row = run_variant(variant, seed, args, work)
                print(f"{variant.name:38s} seed {seed}: P@1 {row['precision_at_1']:.4f} MAP@R {row['map_at_r']:.4f} "
                      f"AUC {row['roc_auc']:.4f} ({row['run_images_per_s']:.0f} img/s as run)", flush=True)
                results.append(row)
        torch.set_num_threads(os.cpu_count() or 1)
        priced = [v for v in VARIANTS if v.name in args.cost_only and v not in variants]
        costs = [untrained_cost(v, args.config, args.set, work) for v in priced]
        first_seed = {r["variant"]: r["onnx"] for r in results if r["seed"] == args.seeds[0]}
        first_seed.update({c["variant"]: c["onnx"] for c in costs})
        inference = measure_inference(first_seed, batch=64, repeats=args.repeats)
        for name, rate in inference.items():
            print(f"ONNX Runtime CPU, batch 64: {name:38s} {rate:8.0f} img/s", flush=True)
        training = measure_training([*variants, *priced], args.config, args.set, batch=128, repeats=max(3, args.repeats // 2))
        for name, rate in training.items():
            print(f"training step, batch 128:   {name:38s} {rate:8.0f} img/s", flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(results, inference, training, args, costs))
    write_json(args.output, {"results": results, "costs": costs,
                             "inference_images_per_s": inference, "training_images_per_s": training})
    print(f"wrote {args.output}")
