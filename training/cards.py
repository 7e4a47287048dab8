"""Model cards: a Markdown page beside each exported model, written from its spec alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from contract import ModelSpec
from training.card_sections import ROWS, fmt, near_duplicate_section, open_set_section
from training.data.sources import FASHION_MNIST_CREDIT
from training.models.trunks import WEIGHT_SOURCES


def _metrics_table(metrics: dict[str, Any]) -> list[str]:
    splits = [s for s in ("test", "test_unseen") if s in metrics]
    header = "| metric | " + " | ".join(
        "test (seen classes)" if s == "test" and "test_unseen" in metrics else
        ("test (unseen classes: " + ", ".join(metrics[s].get("classes", [])) + ")" if s == "test_unseen" else s)
        for s in splits) + " |"
    lines = [header, "|---|" + "---|" * len(splits)]
    for key, label in ROWS:
        lines.append(f"| {label} | " + " | ".join(fmt(metrics[s].get(key, "")) for s in splits) + " |")
    lines.append("| images | " + " | ".join(fmt(metrics[s].get("items", "")) for s in splits) + " |")
    return lines


def render_model_card(spec: ModelSpec, path: str) -> str:
    """The card of the model at ``path`` (as the export command was given it: the re-measure
    command names it)."""
    sections = [_header(spec, path), _decision_section(spec), _extra_sections(spec), _made_section(spec, path),
                _closing_sections(spec)]
    return "\n".join(line for section in sections for line in section) + "\n"


def _header(spec: ModelSpec, path: str) -> list[str]:
    test = spec.metrics.get("test", {})
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
        f"{test.get('items', '?')} test images and seeded, balanced same/different pairs.",
        "",
        *_metrics_table(spec.metrics),
        "",
    ]
    if "near_duplicates" in test:
        out += near_duplicate_section(test["near_duplicates"])
    return out


def _decision_section(spec: ModelSpec) -> list[str]:
    calib = spec.metrics.get("test", {}).get("calibration")
    out = [
        "## Decision and calibration",
        "",
        f"- Decision: cosine >= {spec.decision.threshold:.4f} means *the same kind of thing* (same class; "
        f"{spec.decision.rule}).",
        f"- Probability: Platt scaling, P(same) = 1 / (1 + exp(-({spec.calibration.a:.3f} * cosine + "
        f"{spec.calibration.b:.3f}))), fitted on {spec.calibration.fitted_on}; it assumes equal priors.",
    ]
    if calib:
        out.append(f"- On test pairs: accuracy at the threshold {calib['accuracy_at_threshold']:.4f}, "
                   f"expected calibration error {calib['ece']:.4f}, Brier score {calib['brier']:.4f}.")
    if spec.near_duplicate is not None:
        over = ("the cosine of embedding dimensions "
                f"{spec.near_duplicate_dims[0]} to {spec.near_duplicate_dims[1] - 1} (the instance subspace)"
                if spec.near_duplicate_dims else "the cosine")
        out.append(f"- The same image: {over} >= {spec.near_duplicate.threshold:.4f} ({spec.near_duplicate.rule}); "
                   "`/similarity` and `/search` answer it as `near_duplicate`, and `GET /duplicates` groups by it.")
    out += [f"- Aspect `{name}`: threshold {d.threshold:.4f} ({d.rule})." for name, d in spec.aspect_decisions.items()]
    return out + [""]


def _extra_sections(spec: ModelSpec) -> list[str]:
    metrics, out = spec.metrics, []
    if metrics.get("open_set_recipe"):
        out += open_set_section(metrics["open_set_recipe"])
    extra = {k: v for k, v in metrics.items() if k not in ("test", "test_unseen", "export", "open_set_recipe")}
    if extra:
        out += ["## Task-specific results", "", *_nested(extra), ""]
    return out


def _made_section(spec: ModelSpec, path: str) -> list[str]:
    training, export = spec.training, spec.metrics.get("export", {})
    return [
        "## How it was made",
        "",
        f"- Data: {training.get('data', '?')}.",
        f"- Backbone: {_describe_backbone(training.get('backbone', {}))}{_served_share(training)}.",
        *_pixel_pca_lines(training.get("pixel_pca")),
        f"- Objective: {_describe(training.get('objective', {}))}.",
        f"- Optimiser: {_describe(training.get('optim', {}))}; augmentation: {_describe(training.get('augment', {}))}.",
        f"- Checkpoint kept: epoch {training.get('epochs_trained')} of the "
        f"{training.get('optim', {}).get('epochs')}-epoch schedule ({_selection(training)}); "
        f"seed {training.get('seed')}; torch {training.get('torch')}.",
        f"- ONNX vs PyTorch: max |difference| {export.get('onnx_max_abs_diff', float('nan')):.2e} at batch sizes "
        f"{export.get('parity_batches')}; static NSL layers folded into plain convolutions: {export.get('static_layers_folded')}.",
        *_quantization_lines(export.get("quantization")),
        *(f"- Note: {note}" for note in training.get("notes") or []),
        "",
        *_train_commands(training),
        "Export (calibrates on validation pairs, measures the test split, writes this card):",
        "",
        "```",
        str(training.get("export_command")),
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


def _train_commands(training: dict[str, Any]) -> list[str]:
    """The command that trained the model; for a fine-tune, the earlier stages' commands before it."""
    earlier = training.get("earlier_stages") or []
    if not earlier:
        return ["Train:", "", "```", str(training.get("train_command")), "```", ""]
    lines = [f"Train, in {len(earlier) + 1} stages, each starting from the weights the one before wrote, with a "
             "fresh optimiser and schedule:", ""]
    for number, stage in enumerate(earlier, start=1):
        seconds = stage.get("train_seconds")
        took = f", {seconds / 60:.0f} min in the training loop" if seconds else ""
        lines += [f"{number}. {stage.get('epochs_trained')} epochs{took}, writes `{stage.get('checkpoint')}`:", "",
                  "```", str(stage.get("train_command")), "```", ""]
    return lines + [f"{len(earlier) + 1}. the last stage:", "", "```", str(training.get("train_command")), "```", ""]


def _program(training: dict[str, Any]) -> str:
    """``likeness`` or ``python -m training``: however the export command was called."""
    export = str(training.get("export_command") or "")
    return "likeness" if export.split(" ", 1)[0].endswith("likeness") else "python -m training"


def _is_fashion_mnist(training: dict[str, Any]) -> bool:
    dataset = (training.get("data_summary") or training.get("data_config") or {}).get("dataset", "fashion-mnist")
    return dataset in ("fashion-mnist", "fashion-aspects")


def _data_and_licence(training: dict[str, Any]) -> list[str]:
    """The data really used and its licence where likeness knows it; your own photos have none recorded."""
    summary = training.get("data_summary")
    if summary is None:  # exported before the data summary existed: those models are Fashion-MNIST's
        return [f"Trained and evaluated on {FASHION_MNIST_CREDIT}."]
    lines = [f"Trained and evaluated on {training.get('data', summary['dataset'])}.", ""]
    if not summary.get("aspects"):  # with aspects, the classes are combinations of their values
        classes = summary["splits"]["train"]["per_class"]
        lines.append(f"Classes ({len(classes)}): {', '.join(classes)}.")
    for aspect, values in (summary.get("aspects") or {}).items():
        lines.append(f"Aspect `{aspect}` ({len(values)} values): {', '.join(values)}.")
    lines += ["", summary["licence"] + "." if summary.get("licence") else
              "Licence: not recorded by likeness; the terms of whoever owns these images apply."]
    return lines


def _seen(spec: ModelSpec) -> str:
    """What the model has seen, in one sentence."""
    size = f"{spec.input.height}x{spec.input.width}"
    if _is_fashion_mnist(spec.training):
        return f"It has seen {size} centred product images on a dark background."
    summary = spec.training.get("data_summary") or {}
    train = summary.get("splits", {}).get("train", {})
    return (f"It has seen {train.get('images', '?')} training images of {train.get('classes', '?')} classes, "
            f"prepared to {size} {spec.input.mode} (fit `{spec.input.fit}`).")


def _selection(training: dict[str, Any]) -> str:
    """Whether the exported weights are the run's best on validation (best.pt) or another epoch's
    (last.pt): a checkpoint carries its own epoch and the best one of its run."""
    if training.get("epochs_trained") == training.get("best_epoch"):
        return f"best {training.get('selected_on')} on validation"
    return f"not the best on validation: {training.get('selected_on')} peaked at epoch {training.get('best_epoch')}"


def write_model_card(onnx_path: str | Path, spec: ModelSpec) -> Path:
    onnx_path = Path(onnx_path)
    card = onnx_path.with_suffix(".md")
    card.write_text(render_model_card(spec, str(onnx_path)))
    return card


def _describe(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items() if v not in (None, [], ""))


def _describe_backbone(backbone: dict[str, Any]) -> str:
    trunk = backbone.get("trunk", "small-cnn")
    if trunk != "small-cnn":
        return _describe_pretrained(backbone, trunk)
    where = []  # hybrids: where the NS layers are (the other convs are plain)
    if backbone.get("ns_last_stages"):
        where.append(f"in the last {backbone['ns_last_stages']} stage(s)")
    if backbone.get("ns_per_stage"):
        where.append(f"as the last {backbone['ns_per_stage']} conv(s) of a stage")
    placement = f" {' and '.join(where)} only, plain elsewhere" if where else ""
    return (f"layer `{backbone.get('layer')}` (predictor `{backbone.get('predictor')}`){placement}, widths "
            f"{backbone.get('widths')}, {backbone.get('depth')} {'convs' if where else 'NS-convs'} per stage, "
            f"{backbone.get('embedding_dim')}-d embedding{_split(backbone)}, masks `{backbone.get('masks')}`"
            + (", anti-aliased pooling" if backbone.get("antialias") else ""))


def _describe_pretrained(backbone: dict[str, Any], trunk: str) -> str:
    """A pretrained trunk: where its weights came from (and their licence), what sits above it."""
    weights = backbone.get("trunk_weights")
    source = WEIGHT_SOURCES.get(trunk, trunk) if weights == "imagenet" else f"weights from {weights}"
    head = backbone.get("head_layer", "none")
    return (f"pretrained trunk `{trunk}` ({source}), fine-tuned"
            + (", its BatchNorm statistics kept" if backbone.get("freeze_bn") else "")
            + (f"; one `{head}` NS conv block on its last feature map" if head != "none" else "; no NSL layer above it")
            + f"; {backbone.get('embedding_dim')}-d embedding{_split(backbone)}, masks `{backbone.get('masks')}`")


def _served_share(training: dict[str, Any]) -> str:
    trained, served = training.get("instance_share_trained"), training.get("backbone", {}).get("instance_share")
    if trained is None or served is None or trained == served:
        return ""
    return f"; trained with share {trained:.2f}, served with {served:.2f} (set at export)"


def _pixel_pca_lines(pixel_pca: dict[str, Any] | None) -> list[str]:
    if not pixel_pca:
        return []
    dims, share = pixel_pca["dims"], pixel_pca["share"]
    return [f"- Pixel subspace (added at export): the last {dims} dimensions are the image's pixels projected on "
            f"the first {dims} principal components of {pixel_pca['images']} training images, "
            f"L2-normalised; cosine = {1 - share:.2f} x the learned embedding's + {share:.2f} x the pixel part's. "
            "On kinds of thing it never saw, the pixels keep what a class-trained network discards."]


def _split(backbone: dict[str, Any]) -> str:
    """The split embedding, when there is one: which dimensions learn what, and how the cosine weighs them."""
    k = backbone.get("instance_dims") or 0
    if not k:
        return ""
    share = backbone.get("instance_share", 0.0)
    return (f" (the first {backbone['embedding_dim'] - k} dimensions learn the kind of thing, the last {k} the image "
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


def _quantization_lines(quantization: dict[str, Any] | None) -> list[str]:
    if not quantization:
        return []
    agree = quantization["agreement"]
    return [f"- Quantized: {quantization['format']} ({', '.join(quantization['ops'])}; weights "
            f"{quantization['weights']}, activations {quantization['activations']} from "
            f"{quantization['calibration_images']} seeded {quantization['calibration_split']} images"
            + (f"; {quantization['kept_float']} kept float" if quantization.get("kept_float") else "")
            + f"). Cosine to the float "
            f"graph on {agree['images']} test images: mean {agree['mean_cosine']:.4f}, min {agree['min_cosine']:.4f}. "
            "Thresholds, calibration and every number above were fitted and measured on the int8 graph. It is "
            "made for CPUs (int8 convolutions take about half the time of float32's there); on a GPU, serve "
            "the float graph."]
