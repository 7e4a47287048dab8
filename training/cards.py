"""Model cards: a Markdown page beside each exported model, written from its spec alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from contract import ModelSpec
from contract.records import ExportCheck, MetricsRecord, Quantization, TrainingRecord
from training.card_sections import (
    ROWS,
    fmt,
    near_duplicate_section,
    open_set_section,
    pixel_pca_lines,
    sized_threshold_lines,
)
from training.config import ModelConfig
from training.data.sources import FASHION_MNIST_CREDIT
from training.models.trunks import WEIGHT_SOURCES


def _metrics_table(metrics: MetricsRecord) -> list[str]:
    splits = {name: split for name, split in (("test", metrics.test), ("test_unseen", metrics.test_unseen)) if split}
    header = "| metric | " + " | ".join(
        "test (seen classes)" if name == "test" and metrics.test_unseen else
        ("test (unseen classes: " + ", ".join(split.classes) + ")" if name == "test_unseen" else name)
        for name, split in splits.items()) + " |"
    lines = [header, "|---|" + "---|" * len(splits)]
    for key, label in ROWS:
        lines.append(f"| {label} | " + " | ".join(fmt(getattr(split, key)) for split in splits.values()) + " |")
    lines.append("| images | " + " | ".join(fmt(split.items) for split in splits.values()) + " |")
    return lines


def render_model_card(spec: ModelSpec, path: str) -> str:
    """The card of the model at ``path`` (as the export command was given it: the re-measure
    command names it)."""
    sections = [_header(spec, path), _decision_section(spec), _extra_sections(spec), _made_section(spec, path),
                _closing_sections(spec)]
    return "\n".join(line for section in sections for line in section) + "\n"


def _header(spec: ModelSpec, path: str) -> list[str]:
    test = spec.metrics.test
    out = [
        f"# {spec.name} {spec.version}",
        "",
        f"`{Path(path).name}`: an image-embedding model for likeness. Input: uint8 images "
        f"{spec.input.height}x{spec.input.width}, {spec.input.channels} channel(s) ({spec.input.mode}), "
        f"fit `{spec.input.fit}`, filter `{spec.input.resample}`. Output: `embedding`, "
        f"{spec.embedding_dim}-d, L2-normalised; similarity is the cosine."
        + (f" Aspects (`aspect_embeddings`, in order): {', '.join(spec.aspects)}." if spec.aspects else ""),
        "",
        "## Numbers",
        "",
        "All numbers below were measured by the export command on the ONNX graph itself "
        "(through ONNX Runtime), not on the PyTorch model. Pair metrics use "
        f"{test.items if test else '?'} test images and seeded, balanced same/different pairs.",
        "",
        *_metrics_table(spec.metrics),
        "",
    ]
    if test and test.near_duplicates:
        out += near_duplicate_section(test.near_duplicates)
    return out


def _decision_section(spec: ModelSpec) -> list[str]:
    calib = spec.metrics.test.calibration if spec.metrics.test else None
    out = [
        "## Decision and calibration",
        "",
        f"- Decision: cosine >= {spec.decision.threshold:.4f} means *the same kind of thing* (same class; "
        f"{spec.decision.rule}).",
        f"- Probability: Platt scaling, P(same) = 1 / (1 + exp(-({spec.calibration.a:.3f} * cosine + "
        f"{spec.calibration.b:.3f}))), fitted on {spec.calibration.fitted_on}; it assumes equal priors.",
    ]
    if calib:
        out.append(f"- On test pairs: accuracy at the threshold {calib.accuracy_at_threshold:.4f}, "
                   f"expected calibration error {calib.ece:.4f}, Brier score {calib.brier:.4f}.")
    if spec.near_duplicate is not None:
        over = ("the cosine of embedding dimensions "
                f"{spec.near_duplicate_dims[0]} to {spec.near_duplicate_dims[1] - 1} (the instance subspace)"
                if spec.near_duplicate_dims else "the cosine")
        out.append(f"- The same image: {over} >= {spec.near_duplicate.threshold:.4f} ({spec.near_duplicate.rule}); "
                   "`/similarity` and `/search` answer it as `near_duplicate`, and `GET /duplicates` groups by it.")
        out += sized_threshold_lines(spec.near_duplicate_by_items)
    out += [f"- Aspect `{name}`: threshold {d.threshold:.4f} ({d.rule})." for name, d in spec.aspect_decisions.items()]
    return out + ([""] if out[-1] else [])


def _extra_sections(spec: ModelSpec) -> list[str]:
    metrics, out = spec.metrics, []
    if metrics.open_set_recipe:
        out += open_set_section(metrics.open_set_recipe)
    if metrics.task_results:
        out += ["## Task-specific results", "", *_nested(metrics.task_results), ""]
    return out


def _made_section(spec: ModelSpec, path: str) -> list[str]:
    training = spec.training
    return [
        "## How it was made",
        "",
        f"- Data: {training.data}.",
        f"- Backbone: {_describe_backbone(ModelConfig.model_validate(training.backbone))}{_served_share(training)}.",
        *pixel_pca_lines(training.pixel_pca),
        f"- Objective: {_describe(training.objective)}.",
        f"- Optimiser: {_describe(training.optim)}; augmentation: {_describe(training.augment)}.",
        f"- Checkpoint kept: epoch {training.epochs_trained} of the "
        f"{training.optim.get('epochs')}-epoch schedule ({_selection(training)}); "
        f"seed {training.seed}; torch {training.torch}.",
        *_export_check_lines(spec.metrics.export),
        *(f"- Note: {note}" for note in training.notes),
        "",
        *_train_commands(training),
        "Export (calibrates on validation pairs, measures the test split, writes this card):",
        "",
        "```",
        str(training.export_command),
        "```",
        "",
        "Re-measure this file:",
        "",
        "```",
        f"{_program(training)} evaluate {path}",
        "```",
        "",
    ]


def _closing_sections(spec: ModelSpec) -> list[str]:
    return [
        "## Data and licence",
        "",
        *_data_and_licence(spec.training),
        "",
        "## Limitations",
        "",
        f"- {_seen(spec)} Photos unlike them (other backgrounds, framing, scale or kinds of thing) are out of "
        "distribution, and its scores there are not calibrated.",
        "- The probability is calibrated for balanced same/different pairs; with another prior, "
        "shift the logit by log(prior odds).",
    ]


def _train_commands(training: TrainingRecord) -> list[str]:
    """The command that trained the model; for a fine-tune, the earlier stages' commands before it."""
    earlier = training.earlier_stages
    if not earlier:
        return ["Train:", "", "```", str(training.train_command), "```", ""]
    lines = [f"Train, in {len(earlier) + 1} stages, each starting from the weights the one before wrote, with a "
             "fresh optimiser and schedule:", ""]
    for number, stage in enumerate(earlier, start=1):
        seconds = stage.train_seconds
        took = f", {seconds / 60:.0f} min in the training loop" if seconds else ""
        lines += [f"{number}. {stage.epochs_trained} epochs{took}, writes `{stage.checkpoint}`:", "",
                  "```", str(stage.train_command), "```", ""]
    return lines + [f"{len(earlier) + 1}. the last stage:", "", "```", str(training.train_command), "```", ""]


def _program(training: TrainingRecord) -> str:
    """``likeness`` or ``python -m training``: however the export command was called."""
    export = training.export_command or ""
    return "likeness" if export.split(" ", 1)[0].endswith("likeness") else "python -m training"


def _is_fashion_mnist(training: TrainingRecord) -> bool:
    if training.data_summary:
        dataset = training.data_summary.dataset
    else:  # exported before the data summary existed
        dataset = training.data_config.get("dataset", "fashion-mnist")
    return dataset in ("fashion-mnist", "fashion-aspects")


def _data_and_licence(training: TrainingRecord) -> list[str]:
    """The data really used and its licence where likeness knows it; your own photos have none recorded."""
    summary = training.data_summary
    if summary is None:  # exported before the data summary existed: those models are Fashion-MNIST's
        return [f"Trained and evaluated on {FASHION_MNIST_CREDIT}."]
    lines = [f"Trained and evaluated on {training.data}.", ""]
    if not summary.aspects:  # with aspects, the classes are combinations of their values
        classes = summary.splits["train"].per_class
        lines.append(f"Classes ({len(classes)}): {', '.join(classes)}.")
    for aspect, values in (summary.aspects or {}).items():
        lines.append(f"Aspect `{aspect}` ({len(values)} values): {', '.join(values)}.")
    lines += ["", summary.licence + "." if summary.licence else
              "Licence: not recorded by likeness; the terms of whoever owns these images apply."]
    return lines


def _seen(spec: ModelSpec) -> str:
    """What the model has seen, in one sentence."""
    size = f"{spec.input.height}x{spec.input.width}"
    if _is_fashion_mnist(spec.training):
        return f"It has seen {size} centred product images on a dark background."
    summary = spec.training.data_summary
    train = summary.splits.get("train") if summary else None
    return (f"It has seen {train.images if train else '?'} training images of {train.classes if train else '?'} classes, "
            f"prepared to {size} {spec.input.mode} (fit `{spec.input.fit}`).")


def _selection(training: TrainingRecord) -> str:
    """Whether the exported weights are the run's best on validation (best.pt) or another epoch's
    (last.pt): a checkpoint carries its own epoch and the best one of its run."""
    if training.epochs_trained == training.best_epoch:
        return f"best {training.selected_on} on validation"
    return f"not the best on validation: {training.selected_on} peaked at epoch {training.best_epoch}"


def write_model_card(onnx_path: str | Path, spec: ModelSpec) -> Path:
    onnx_path = Path(onnx_path)
    card = onnx_path.with_suffix(".md")
    card.write_text(render_model_card(spec, str(onnx_path)))
    return card


def _describe(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items() if v not in (None, [], ""))


def _describe_backbone(backbone: ModelConfig) -> str:
    if backbone.trunk != "small-cnn":
        return _describe_pretrained(backbone)
    where = []  # hybrids: where the NS layers are (the other convs are plain)
    if backbone.ns_last_stages:
        where.append(f"in the last {backbone.ns_last_stages} stage(s)")
    if backbone.ns_per_stage:
        where.append(f"as the last {backbone.ns_per_stage} conv(s) of a stage")
    placement = f" {' and '.join(where)} only, plain elsewhere" if where else ""
    return (f"layer `{backbone.layer}` (predictor `{backbone.predictor}`){placement}, widths "
            f"{backbone.widths}, {backbone.depth} {'convs' if where else 'NS-convs'} per stage, "
            f"{backbone.embedding_dim}-d embedding{_split(backbone)}, masks `{backbone.masks}`"
            + (", anti-aliased pooling" if backbone.antialias else ""))


def _describe_pretrained(backbone: ModelConfig) -> str:
    """A pretrained trunk: where its weights came from (and their licence), what sits above it."""
    weights, head = backbone.trunk_weights, backbone.head_layer
    source = WEIGHT_SOURCES.get(backbone.trunk, backbone.trunk) if weights == "imagenet" else f"weights from {weights}"
    return (f"pretrained trunk `{backbone.trunk}` ({source}), fine-tuned"
            + (", its BatchNorm statistics kept" if backbone.freeze_bn else "")
            + (f"; one `{head}` NS conv block on its last feature map" if head != "none" else "; no NSL layer above it")
            + f"; {backbone.embedding_dim}-d embedding{_split(backbone)}, masks `{backbone.masks}`")


def _served_share(training: TrainingRecord) -> str:
    trained, served = training.instance_share_trained, training.backbone.get("instance_share")
    if trained is None or served is None or trained == served:
        return ""
    return f"; trained with share {trained:.2f}, served with {served:.2f} (set at export)"


def _split(backbone: ModelConfig) -> str:
    """The split embedding, when there is one: which dimensions learn what, and how the cosine weighs them."""
    k, share = backbone.instance_dims, backbone.instance_share
    if not k:
        return ""
    return (f" (the first {backbone.embedding_dim - k} dimensions learn the kind of thing, the last {k} the image "
            f"itself; cosine = {1 - share:.2f} x the first part's + {share:.2f} x the second's)")


def _nested(values: dict[str, Any], indent: str = "") -> list[str]:
    lines = []
    for key, value in values.items():
        if isinstance(value, dict):
            lines.append(f"{indent}- {key}:")
            lines += _nested(value, indent + "  ")
        else:
            lines.append(f"{indent}- {key}: {fmt(value)}")
    return lines


def _export_check_lines(export: ExportCheck | None) -> list[str]:
    if export is None:
        return []
    return [f"- ONNX vs PyTorch: max |difference| {export.onnx_max_abs_diff:.2e} at batch sizes "
            f"{export.parity_batches}; static NSL layers folded into plain convolutions: {export.static_layers_folded}.",
            *_quantization_lines(export.quantization)]


def _quantization_lines(quantization: Quantization | None) -> list[str]:
    if not quantization:
        return []
    agree = quantization.agreement
    return [f"- Quantized: {quantization.format} ({', '.join(quantization.ops)}; weights "
            f"{quantization.weights}, activations {quantization.activations} from "
            f"{quantization.calibration_images} seeded {quantization.calibration_split} images"
            + (f"; {quantization.kept_float} kept float" if quantization.kept_float else "")
            + f"). Cosine to the float "
            f"graph on {agree['images']} test images: mean {agree['mean_cosine']:.4f}, min {agree['min_cosine']:.4f}. "
            "Thresholds, calibration and every number above were fitted and measured on the int8 graph. It is "
            "made for CPUs (int8 convolutions take about half the time of float32's there); on a GPU, serve "
            "the float graph."]
