"""``python -m training``: the batch-job entry point.

    python -m training train     --config default [--set optim.epochs=5 ...] [--resume] [--device cuda:1]
    python -m training export    --checkpoint runs/NAME/best.pt --output models/NAME.onnx
    python -m training evaluate  models/NAME.onnx [--split test] [--holdout-classes ...]
    python -m training demo-data DIR [--per-class 300]   a demo shop catalogue (docs/own-data.md)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from training.config import EvalConfig, TrainConfig, load_config


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="default", help="TOML file, or the name of one in training/configs/")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.epochs=3 (repeatable)")
    parser.add_argument("--data-dir", help="shortcut for --set data.data_dir=DIR")
    parser.add_argument("--holdout-classes", help="comma-separated classes kept out of training (open-set split)")
    parser.add_argument("--seed", type=int, help="shortcut for --set seed=N")


def _eval_count(field: str) -> Callable[[str], int]:
    """An argparse type for an EvalConfig count: an integer of at least the minimum the config sets for
    ``field`` (so the flag and the config cannot disagree), refused with a one-line error otherwise."""
    minimum = next(rule.ge for rule in EvalConfig.model_fields[field].metadata if hasattr(rule, "ge"))

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below the minimum, {minimum}")
        return value
    return parse


def _device_arg(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--device", default="auto",
                        help=f"where {what} runs: auto (CUDA when present, else the CPU), cpu, cuda or cuda:N; "
                             "asking for CUDA where there is none is an error, never a quiet CPU run")


def config_overrides(args: argparse.Namespace) -> list[str]:
    """The `--set` overrides of a parsed `train` command, its shortcuts (--data-dir, --holdout-classes,
    --seed) included."""
    overrides = list(args.overrides)
    if args.data_dir:
        overrides.append(f"data.data_dir={json.dumps(args.data_dir)}")
    if args.holdout_classes:
        names = [n.strip() for n in args.holdout_classes.split(",") if n.strip()]
        overrides.append(f"data.holdout_classes={json.dumps(names)}")
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    return overrides


def main(argv: list[str] | None = None, prog: str = "python -m training") -> int:
    """Parse and run one command; ``prog`` is how the user called it (``likeness`` for the installed
    command), used in help, errors and the command lines recorded in runs and model cards."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        return _run(args, [*prog.split(), *argv])
    except _user_errors() as error:  # evaluated only when something is raised
        # A wrong checkpoint, a missing dataset, a bad data file: one line that says what to fix,
        # not a traceback.
        print(f"{prog} {args.command}: error: {error}", file=sys.stderr)
        return 2


def build_parser(prog: str = "python -m training") -> argparse.ArgumentParser:
    """The parser of every command, without running one (the documented commands' test parses them)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    _train_parser(commands)
    _export_parser(commands)
    _evaluate_parser(commands)
    _demo_parser(commands)
    return parser


def _train_parser(commands) -> None:
    train_p = commands.add_parser("train", help="train an embedding model")
    _config_args(train_p)
    train_p.add_argument("--resume", action="store_true", help="continue from the run directory's last.pt")
    train_p.add_argument("--no-progress", action="store_true", help="no progress bar (batch jobs, CI)")
    train_p.add_argument("--no-test", action="store_true",
                         help="skip measuring best.pt on the test split at the end (export measures it anyway)")
    _device_arg(train_p, "training (and its validation)")
    train_p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                         help="auto: bf16 autocast on a GPU that has it, fp16 with a loss scaler on one that does "
                              "not, fp32 on the CPU")
    train_p.add_argument("--workers", type=int, default=None,
                         help="DataLoader processes per rank (default: 0 on the CPU; on CUDA the cores shared "
                              "among this machine's ranks, at most 8)")
    train_p.add_argument("--channels-last", action="store_true",
                         help="keep convolution weights channels-last (NHWC), which tensor cores may run faster")


def _export_parser(commands) -> None:
    export_p = commands.add_parser("export", help="export a checkpoint to ONNX with its spec and model card")
    export_p.add_argument("--checkpoint", required=True)
    export_p.add_argument("--output", required=True, help="path of the .onnx file; the card is written beside it")
    export_p.add_argument("--name", help="model name in the spec (default: the run's name)")
    export_p.add_argument("--version", help="model version in the spec (default: the run's version)")
    export_p.add_argument("--data-dir", help="where the run's dataset is, if not where it was trained")
    export_p.add_argument("--open-set-checkpoint",
                          help="the same recipe trained with --holdout-classes: its open-set numbers go in the card")
    export_p.add_argument("--quantize", choices=["int8"],
                          help="ship the graph quantized to int8 (about half the CPU per image); thresholds and "
                               "every number in the card are then fitted and measured on the int8 graph")
    export_p.add_argument("--pixel-pca", type=int, default=0, metavar="DIMS",
                          help="append this many principal components of the pixels, fitted on the training split "
                               "(kinds of thing never trained on keep what pixels tell apart; models/default.md)")
    export_p.add_argument("--pixel-share", type=float, default=0.0, metavar="SHARE",
                          help="the pixel part's share of the served cosine, in (0, 1); with --pixel-pca")
    export_p.add_argument("--pixel-side", type=int, default=0, metavar="BLOCKS",
                          help="shrink the image to BLOCKS x BLOCKS block means before the PCA (a colour layout: "
                               "blurred copies of photos keep it; docs/near-duplicates.md); it must divide the "
                               "input side; with --pixel-pca")
    export_p.add_argument("--instance-share", type=float, default=None, metavar="SHARE",
                          help="serve a split model's instance half with this share of the cosine instead of the "
                               "one it was trained with (python -m bench instance-share measures each)")
    export_p.add_argument("--note", action="append", default=[], metavar="TEXT",
                          help="a line of your own for the card's 'How it was made' (repeatable): why this "
                               "backbone, where the data came from")
    _device_arg(export_p, "calibration and evaluation")


def _evaluate_parser(commands) -> None:
    eval_p = commands.add_parser("evaluate", help="evaluate an exported ONNX model (or a checkpoint)")
    eval_p.add_argument("model", help=".onnx file or .pt checkpoint")
    eval_p.add_argument("--dataset", default=None, help="dataset name (default: the one the model was trained on)")
    eval_p.add_argument("--data-dir")
    eval_p.add_argument("--split", choices=["test", "val"], default="test")
    eval_p.add_argument("--holdout-classes", help="also report the open-set numbers on these unseen classes")
    eval_p.add_argument("--pairs", type=_eval_count("pairs"), default=100_000, help="same and different pairs each, for pair metrics")
    eval_p.add_argument("--near-duplicates", type=_eval_count("near_duplicates"), default=1000, metavar="N",
                        help="originals edited for near-duplicate R@1 (the card uses 1000; the whole split, "
                             "10000, narrows the binomial error from about 0.7 to 0.2 points at R@1 0.95)")
    _device_arg(eval_p, "the model")


def _demo_parser(commands) -> None:
    demo_p = commands.add_parser("demo-data", help="write a demo shop catalogue of RGB photos (from Fashion-MNIST)",
                                 description=_demo_doc(), formatter_class=argparse.RawDescriptionHelpFormatter)
    demo_p.add_argument("out", help="the folder to write (train/, test/, train.csv, test.csv)")
    demo_p.add_argument("--per-class", type=int, default=300, help="photos per category, a fifth of them for test")
    demo_p.add_argument("--size", type=int, default=96, help="side of the square photos in pixels")
    demo_p.add_argument("--seed", type=int, default=0)
    demo_p.add_argument("--data-dir", help="where Fashion-MNIST is, if not in the usual places")


def _user_errors() -> tuple[type[Exception], ...]:
    """The errors that mean "your input is wrong" rather than "likeness is broken"."""
    from contract import ImageError, SpecError
    from training.checkpoint import CheckpointError
    from training.config import ConfigError
    from training.data.aspect_images import AspectDataError
    from training.data.formats import DatasetFormatError
    from training.data.sources import DatasetNotFound
    from training.export import ExportError
    from training.runtime import DeviceError

    return (ExportError, DatasetNotFound, DatasetFormatError, AspectDataError, SpecError, ImageError, DeviceError,
            CheckpointError, ConfigError)


def _demo_doc() -> str:
    from training.data import demo_catalogue

    return demo_catalogue.__doc__ or ""


def _report_test(run_dir: Path, config: TrainConfig, device) -> None:
    """Measure the kept checkpoint (best.pt) on the test split with PyTorch on ``device``, print
    it and save it as ``test.json``: what export measures again on the ONNX file for the card."""
    from training.evaluation import torch_embedder
    from training.evaluation.task_metrics import evaluate_split
    from training.tasks import load_task
    from training.trainer import CHECKPOINT_BEST, load_trained_model

    model, saved = load_trained_model(run_dir / CHECKPOINT_BEST)
    task = load_task(config)
    embedder = torch_embedder(model.to(device))
    test = task.splits.test
    metrics = {"checkpoint": str(run_dir / CHECKPOINT_BEST), "epoch": (saved.state.best or {}).get("epoch"),
               "test": evaluate_split(embedder, test.images, test.labels, config), **task.test_metrics(embedder)}
    (run_dir / "test.json").write_text(json.dumps(metrics, indent=2) + "\n")
    numbers = metrics["test"]
    print(f"test: P@1 {numbers['precision_at_1']:.4f}, MAP@R {numbers['map_at_r']:.4f}, pair ROC-AUC "
          f"{numbers['roc_auc']:.4f} on {numbers['items']} test images (best.pt, epoch {metrics['epoch']}, "
          f"measured with PyTorch; saved in {run_dir / 'test.json'}; export measures the ONNX file again "
          "and writes the card)", file=sys.stderr, flush=True)
    if "aspects" in metrics:
        accuracy = metrics["aspects"]["triplet_accuracy"]
        print("test triplet accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in accuracy.items()),
              file=sys.stderr, flush=True)


def _run(args: argparse.Namespace, command: list[str]) -> int:
    if args.command == "train":
        from training.runtime import Runtime
        from training.trainer import train

        config = load_config(args.config, config_overrides(args))
        runtime = Runtime.start(args.device, args.precision, args.workers, args.channels_last)
        run_dir = train(config, resume=args.resume, command=command,
                        progress=not args.no_progress, runtime=runtime)
        if not args.no_test and runtime.is_main:
            _report_test(run_dir, config, runtime.device)
        print(run_dir)
        return 0
    if args.command == "demo-data":
        from training.data.demo_catalogue import write_demo_catalogue

        counts = write_demo_catalogue(args.out, args.per_class, args.size, args.seed, args.data_dir)
        print(f"{counts['train']} training and {counts['test']} test photos in {args.out}/train and "
              f"{args.out}/test; aspects in {args.out}/train.csv and {args.out}/test.csv")
        return 0
    if args.command == "export":
        from training.export import export_checkpoint

        result = export_checkpoint(args.checkpoint, args.output, name=args.name, version=args.version,
                                   data_dir=args.data_dir, command=command,
                                   open_set_checkpoint=args.open_set_checkpoint, device=args.device,
                                   quantize=args.quantize, pixel_pca=args.pixel_pca, pixel_share=args.pixel_share,
                                   pixel_side=args.pixel_side,
                                   instance_share=args.instance_share, notes=args.note)
        print(json.dumps(result, indent=2))
        return 0
    if args.command == "evaluate":
        from training.evaluation.task_metrics import evaluate_model

        holdout = [n.strip() for n in args.holdout_classes.split(",")] if args.holdout_classes else None
        metrics = evaluate_model(args.model, dataset=args.dataset, data_dir=args.data_dir, split=args.split,
                                 holdout_classes=holdout, pairs=args.pairs, near_duplicates=args.near_duplicates,
                                 device=args.device)
        print(json.dumps(metrics, indent=2))
        return 0
    return 2
