"""What a run really learns from: images and classes per split, the input, what was held out and why.

Training prints it when it starts and saves it as ``data.json`` in the run directory (and in the
checkpoint); export records it in the model's spec, and the model card describes the data from it,
so every number there is the one really used (a small catalogue holds out fewer than
``data.val_size`` validation images, for example).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from contract import InputSpec
from training.config import TrainConfig
from training.data.arrays import LabeledImages
from training.data.sources import FASHION_MNIST_CREDIT

# The datasets whose licence likeness knows; for anything else (your own photos) it records none.
CREDITS = {
    "fashion-mnist": FASHION_MNIST_CREDIT,
    "fashion-aspects": FASHION_MNIST_CREDIT + " (tinted by likeness)",
}
_SHOWN_CLASSES = 12


def data_summary(task: Any, config: TrainConfig, input_spec: InputSpec) -> dict[str, Any]:
    """The data of a loaded task (training.tasks), as plain JSON-able values."""
    data = config.data
    splits = task.splits
    parts = {"train": splits.train, "val": splits.val, "test": splits.test, "test_unseen": splits.test_unseen}
    summary: dict[str, Any] = {
        "dataset": data.dataset,
        "path": data.data_dir if data.dataset in ("folder", "aspects-csv", "mnist", "cifar10", "cifar100") else None,
        "test_from": _test_source(config),
        "licence": CREDITS.get(data.dataset),
        "input": input_spec.model_dump(),
        "splits": {name: _split_counts(part) for name, part in parts.items() if part is not None},
        "validation": {"asked": data.val_size, "used": len(splits.val), "seed": config.seed},
        "holdout_classes": list(data.holdout_classes),
        "train_limit": data.train_limit,
        "test_limit": data.test_limit,
    }
    if task.aspects:
        values = getattr(task, "aspect_values", None) or {}
        summary["aspects"] = {aspect: list(values.get(aspect, [])) for aspect in task.aspects}
    return summary


def _split_counts(part: LabeledImages) -> dict[str, Any]:
    counts = np.bincount(part.labels, minlength=len(part.classes)) if len(part) else np.zeros(0, int)
    return {"images": int(len(part)), "classes": int((counts > 0).sum()),
            "per_class": {name: int(n) for name, n in zip(part.classes, counts) if n}}


def _test_source(config: TrainConfig) -> str:
    data = config.data
    if data.dataset == "folder" and data.data_dir:
        root = Path(data.data_dir)
        if (root / "train").is_dir() and (root / "test").is_dir():
            return f"{Path(data.data_dir, 'test')} (the folder's own test split)"
        return f"a seeded fifth of {data.data_dir} (it has no train/ and test/ sub-folders)"
    if data.dataset == "aspects-csv":
        return f"{Path(data.data_dir or '.', 'test.csv')}"
    if data.dataset == "fashion-aspects":
        return "the Fashion-MNIST test split (untinted for the overall numbers, tinted for the aspects)"
    return f"the {data.dataset} test split"


def validation_note(summary: dict[str, Any]) -> str:
    """Why validation holds the number of images it does, in a few words."""
    validation = summary["validation"]
    train = summary["splits"]["train"]["images"] + validation["used"]
    if validation["used"] < validation["asked"]:
        return (f"data.val_size asks {validation['asked']}; at most a fifth of the {train} training images "
                "is held out")
    return f"data.val_size {validation['asked']}, stratified, seed {validation['seed']}"


def describe_source(summary: dict[str, Any]) -> str:
    """``image folder `shop``` or ``fashion-mnist``: where the images came from."""
    if summary["dataset"] == "folder":
        return f"image folder `{summary['path']}`"
    if summary["dataset"] == "aspects-csv":
        return f"aspect CSVs in `{summary['path']}` (train.csv, test.csv)"
    return summary["dataset"] + (f" from `{summary['path']}`" if summary.get("path") else "")


def describe_data(summary: dict[str, Any]) -> str:
    """One sentence for the model card: the source and the images really used in each split."""
    splits = summary["splits"]
    train, val, test = splits["train"], splits["val"], splits["test"]
    # With aspects, the classes are the combinations of aspect values that occur.
    kinds = f"combinations of {', '.join(summary['aspects'])}" if summary.get("aspects") else "classes"
    text = (f"{describe_source(summary)}: {train['images']} training images of {train['classes']} {kinds}, "
            f"{val['images']} held out for validation ({validation_note(summary)}), "
            f"{test['images']} test images from {summary['test_from']}")
    if summary.get("train_limit"):
        text += f"; training limited to {summary['train_limit']} images"
    if summary.get("holdout_classes"):
        text += f"; classes never seen in training: {', '.join(summary['holdout_classes'])}"
    return text


def format_data_summary(summary: dict[str, Any]) -> str:
    """Several lines for the start of a training run."""
    spec = InputSpec.model_validate(summary["input"])
    fit = f"fit {spec.fit}" + (f" (bars and transparency grey {spec.pad_value})" if spec.fit == "pad" else "")
    licence = summary["licence"] or "licence not recorded"
    lines = [f"data: {describe_source(summary)}; {licence}",
             f"  input: {spec.height}x{spec.width} {spec.mode}, {fit}, {spec.resample} filter "
             "(the exported model prepares uploads the same way)"]
    notes = {"val": validation_note(summary), "test": f"from {summary['test_from']}",
             "test_unseen": "classes held out of training"}
    for name, counts in summary["splits"].items():
        per_class = counts["per_class"]
        shown = ", ".join(f"{c} {n}" for c, n in list(per_class.items())[:_SHOWN_CLASSES])
        more = f", and {len(per_class) - _SHOWN_CLASSES} more" if len(per_class) > _SHOWN_CLASSES else ""
        note = f"; {notes[name]}" if name in notes else ""
        lines.append(f"  {name}: {counts['images']} images, {counts['classes']} classes ({shown}{more}){note}")
    held = summary["holdout_classes"]
    lines.append(f"  held out of training: {', '.join(held) + ' (open-set evaluation)' if held else 'nothing'}")
    for aspect, values in (summary.get("aspects") or {}).items():
        lines.append(f"  aspect {aspect}: {len(values)} values ({', '.join(values)})")
    return "\n".join(lines)
