"""The model card's measured sections: the same image (per edit and family, the decision and its
curve) and the open-set numbers of the recipe."""

from __future__ import annotations

from typing import Any

from contract import SizedThreshold
from contract.records import NearDuplicateMetrics, OpenSetRecord, PixelPca, RetrievalMetrics, SameImageDecision
from training.evaluation.near_duplicates import FAMILIES

ROWS = [
    ("precision_at_1", "Precision@1 (leave-one-out)"),
    ("r_precision", "R-Precision"),
    ("map_at_r", "MAP@R"),
    ("roc_auc", "pair ROC-AUC"),
    ("eer", "pair EER"),
    ("tar_at_far_1e3", "TAR @ FAR=1e-3"),
]


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def near_duplicate_section(near: NearDuplicateMetrics) -> list[str]:
    decision = near.decision
    accepted = decision.copies_accepted_by_edit if decision else {}
    lines = [
        "## The same image: does a copy find its original, and is it called a copy?",
        "",
        f"{near.queries} seeded test images, each edited as below (training/evaluation/edits.py: the light edits, "
        "the edits users make, by family, and the mirror), saved as a file and prepared as the service prepares an "
        f"upload, then searched against all {near.gallery} test images. R@1: the original scores above every "
        "other image (ties count as misses). Called a copy: the copy's same-image score against its original is at "
        "or above the spec's `near_duplicate` threshold.",
        "",
        "| family | edit | R@1 | called a copy |",
        "|---|---|---|---|",
    ]
    for family, edits in FAMILIES.items():
        for name in edits:
            if name in near.recall_at_1:
                called = f"{accepted[name]:.4f}" if name in accepted else ""
                lines.append(f"| {family} | {name} | {near.recall_at_1[name]:.4f} | {called} |")
    lines += [f"| | **mean** | **{near.mean_recall_at_1:.4f}** | "
              + (f"**{decision.copies_accepted:.4f}** |" if decision else "|"),
              f"| | **worst** ({near.worst_edit}) | **{near.worst_recall_at_1:.4f}** | |", ""]
    return lines + (_decision_lines(decision) if decision else [])


def sized_threshold_lines(table: list[SizedThreshold]) -> list[str]:
    """The spec's thresholds by catalogue size, as the card's table (none for older specs)."""
    if not table:
        return []
    return ["- The same rate asks less of a smaller catalogue (its images' nearest others are further away): "
            "the service takes the threshold for its index's size, linear in log(items) between these points, "
            "the first below them and the last above them:", "",
            "  | items in the index | " + " | ".join(f"{p.items:,}" for p in table) + " |",
            "  |---|" + "---|" * len(table),
            "  | threshold | " + " | ".join(f"{p.threshold:.4f}" for p in table) + " |", ""]


def _decision_lines(decision: SameImageDecision) -> list[str]:
    if not decision.curve:  # a spec exported before the curve (likeness 3.x)
        return [f"\"The same image\" threshold (the spec's `near_duplicate`, fitted on validation): cosine >= "
                f"{decision.threshold:.4f}. On test it accepts {decision.copies_accepted:.2%} of the edited "
                f"copies and {decision.nearest_others_accepted:.2%} of each original's nearest other image.", ""]
    which = (f"the threshold for a catalogue of {decision.catalogue_items:,} images, from the spec's "
             "`near_duplicate_by_items`" if decision.catalogue_items else "the spec's `near_duplicate`")
    lines = [f"\"The same image\" ({which}, fitted on validation): same-image score >= "
             f"{decision.threshold:.4f}. On test it calls {decision.copies_accepted:.2%} of the copies above "
             f"copies, and {decision.nearest_others_accepted:.2%} of the originals' nearest other images "
             f"(by the same score; {decision.near_identical_left_out} test images with a near-identical twin "
             "in the split left out). The curve, on test:", "",
             "| threshold | nearest other images called copies | copies called copies |", "|---|---|---|"]
    lines += [f"| {point['threshold']:.4f} | {point['nearest_others_accepted']:.4f} | {point['copies_accepted']:.4f} |"
              for point in decision.curve]
    return lines + [""]


def open_set_section(open_set: OpenSetRecord) -> list[str]:
    seen, unseen = open_set.seen, open_set.unseen
    lines = [
        "## Open-set numbers of this recipe",
        "",
        f"The same recipe trained without {', '.join(open_set.holdout_classes)} (those classes reached neither "
        "training, validation nor calibration), measured on the test images of the classes it saw and of the "
        "classes it never saw. The closed-set numbers above are for the shipped model, trained on all classes. "
        "Baselines and other objectives on the same split: docs/openset.md in the likeness repository.",
        "",
        "| metric | seen classes | unseen classes |",
        "|---|---|---|",
    ]
    for key, label in ROWS[:4]:
        lines.append(f"| {label} | {fmt(getattr(seen, key))} | {fmt(getattr(unseen, key))} |")
    for name, shot in unseen.few_shot.items():
        lines.append(f"| {name} accuracy ({shot['episodes']} episodes) | | "
                     f"{shot['accuracy']:.4f} ± {shot['ci95']:.4f} |")
    if open_set.unseen_raw_pixels:
        lines += _pixel_baseline_lines(open_set, open_set.unseen_raw_pixels)
    return lines + ["", "Trained with:", "", "```", str(open_set.train_command), "```", ""]


def _pixel_baseline_lines(open_set: OpenSetRecord, pixels: RetrievalMetrics) -> list[str]:
    """Raw pixels on the unseen classes, the baseline a learned embedding must beat there."""
    unseen, learned = open_set.unseen, open_set.unseen_learned_only
    delta = (unseen.map_at_r - pixels.map_at_r) * 100
    lines = ["", f"Raw pixels (cosine) on the same unseen-class images: P@1 {pixels.precision_at_1:.4f}, "
                 f"MAP@R {pixels.map_at_r:.4f}, pair ROC-AUC {pixels.roc_auc:.4f}; this recipe's unseen-class "
                 f"MAP@R is {delta:+.2f} points from theirs."]
    if learned:
        lines += ["", f"Without its pixel subspace, the learned embedding alone reaches unseen-class MAP@R "
                      f"{learned.map_at_r:.4f} ({(learned.map_at_r - pixels.map_at_r) * 100:+.2f} points "
                      f"from raw pixels) and P@1 {learned.precision_at_1:.4f}."]
    ours, theirs = unseen.map_at_r_by_class, pixels.map_at_r_by_class
    if ours and theirs:
        alone = learned.map_at_r_by_class if learned else {}
        head = "| unseen class | MAP@R, this recipe | MAP@R, raw pixels |" + (" MAP@R, learned part alone |" if alone else "")
        lines += ["", head, "|---|---|---|" + ("---|" if alone else ""),
                  *(f"| {name} | {value:.4f} | {theirs.get(name, float('nan')):.4f} |"
                    + (f" {alone.get(name, float('nan')):.4f} |" if alone else "") for name, value in ours.items())]
    return lines


def pixel_pca_lines(pixel_pca: PixelPca | None) -> list[str]:
    """The card's line for a pixel subspace added at export (none without one)."""
    if not pixel_pca:
        return []
    dims, share, side = pixel_pca.dims, pixel_pca.share, pixel_pca.side
    pixels = f"{side}x{side} block means (a colour layout)" if side else "pixels"
    why = ("A blurred copy keeps its colour layout, which the learned embedding gives less weight."
           if side else "On kinds of thing it never saw, the pixels keep what a class-trained network discards.")
    return [f"- Pixel subspace (added at export): the last {dims} dimensions are the image's {pixels} projected on "
            f"the first {dims} principal components of {pixel_pca.images} training images, "
            f"L2-normalised; cosine = {1 - share:.2f} x the learned embedding's + {share:.2f} x the pixel part's. "
            + why]
