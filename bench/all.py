"""``python -m bench all``: every benchmark, with the arguments that made the pages in ``docs/``.

Each writes its own page under ``docs/`` (table, plot where there is one, the exact command and
the machine) and its raw numbers under ``docs/results/``; ``docs/benchmarks.md`` summarises them.
On 2 cores the whole run takes hours, most of it the training benchmarks (csn, openset,
nsl-ablation); ``--only`` runs a subset and ``--skip`` leaves some out.
"""

from __future__ import annotations

import importlib
import sys
import time

from bench.common import REPO, make_parser

# Fast first, so a partial run still refreshes the serving and quality pages. The training
# benchmarks use budgets that fit an afternoon on 2 cores; each page states its budget.
RUNS: dict[str, list[str]] = {
    "quality": [],
    # The shipped model's share swept; the open-set runs of the similarity ablation when they exist.
    "instance-share": [],
    # The pixel subspace swept on the runs `make train` leaves (the shipped recipe and its open-set
    # twin); docs/pixel-share.md adds the similarity ablation's small-budget open-set seeds.
    "pixel-share": ["--checkpoint", "runs/fmnist-default/best.pt",
                    "--open-set-checkpoint", "runs/fmnist-default-openset/best.pt"],
    "nsl-kernels": [],
    "serving": ["--repeats", "3"],
    # The before-figure of issue 21 (server CPU per request) is the service code of this commit.
    # and the int8 graph the CPU image serves runs beside the float model.
    "serving-cpu": ["--baseline", "9a39b7f", "--seconds", "3", "--extra-model",
                    f"int8={REPO / 'models' / 'default-int8.onnx'}"],
    # Issue 29's serving cost: this tree against the service code before the same-image work (framing,
    # the copies marked in /search), each on the model its commit shipped.
    "serving-same-image": ["--baseline", "3275c6c", "--baseline-model", "--no-plain", "--seconds", "4", "--clients",
                           "8", "--endpoints", "similarity", "search", "--output", "docs/serving-cpu-same-image.md",
                           "--note", "Issue 29: this tree against the service code before the same-image work (3275c6c), on the same model file."],
    # Issue 30: serving at photo size, float and int8, each with dynamic batching on and off.
    "serving-photo": ["--model", "models/photo.onnx", "--extra-model", f"int8={REPO / 'models' / 'photo-int8.onnx'}",
                      "--unbatched", "--no-plain", "--seconds", "6",
                      "--endpoints", "similarity", "search", "--output", "docs/serving-photo.md",
                      "--note", "Issue 30: serving at photo size, dynamic batching on and off."],
    "load": ["--rounds", "2"],
    "index": [],
    # Issue 19: embedded flat/HNSW against Milvus Lite at 100k vectors; 1 against 2 API workers on Milvus.
    "milvus": [],
    # Issue 29: duplicates across the catalogue, both shipped Fashion-MNIST models against pHash/dHash.
    "dedup": ["--model", "models/default.onnx", "--model", "models/csn.onnx"],
    # Issue 29: could a pixel check after retrieval decide "the same image"? (about 8 minutes)
    "pixel-check": ["--model", "models/default.onnx", "--originals", "100"],
    # Issue 31: the default model's index migrated to the CSN model under load.
    "migration": [],
    "csn": ["--epochs", "2", "--triplets", "20000"],
    # The objective and ablation tables compare on the earlier, smaller backbone ([32, 64, 128] x 3
    # convs): pinned here so they stay reproducible whatever the default recipe becomes.
    "openset": ["--epochs", "3", "--set", "model.widths=[32,64,128]", "--set", "model.depth=3"],
    "nsl-ablation": ["--set", "model.widths=[16,32,64]", "--set", "model.depth=3", "--set", "optim.threads=1"],
    # Issue 30: the demo shop from raw pixels to the fine-tuned pretrained trunk (about two hours).
    "photos": [],
    "similarity-ablation": ["--seeds", "0", "1", "2", "--set", "model.widths=[16,32,64,128]",
                            "--set", "model.depth=[1,1,1,1]", "--set", "optim.threads=1"],
}
ORDER = list(RUNS)
# Pages made by another benchmark's script with other arguments.
SCRIPT_OF = {"serving-photo": "serving-cpu", "serving-same-image": "serving-cpu"}


def main(argv: list[str] | None = None) -> None:
    from bench.__main__ import BENCHMARKS

    parser = make_parser("all", __doc__)
    parser.add_argument("--only", nargs="+", choices=ORDER)
    parser.add_argument("--skip", nargs="+", choices=ORDER, default=[])
    args = parser.parse_args(argv)
    for name in args.only or ORDER:
        if name in args.skip:
            continue
        started = time.perf_counter()
        print(f"== python -m bench {name}", file=sys.stderr, flush=True)
        importlib.import_module(BENCHMARKS[SCRIPT_OF.get(name, name)]).main(list(RUNS[name]))
        print(f"== {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
