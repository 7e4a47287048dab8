"""Data with several notions of similarity (aspects), and triplets sampled the CSN way.

``fashion-aspects``: real Fashion-MNIST images with three aspects.
- ``category``: the 10 classes;
- ``group``: tops (t-shirt/top, pullover, coat, shirt), bottoms (trouser), dresses, footwear
  (sandal, sneaker, ankle boot), bags;
- ``color``: each image tinted with one of the 8 colours of :data:`PALETTE` (``white`` is the
  untinted image), chosen per image by a seeded generator.

``aspects-csv``: your own data, ``data_dir`` holding ``train.csv`` and ``test.csv``, each with a
``path`` column (relative to the CSV) and one column per aspect; validation is carved out of
``train.csv`` (docs/own-data.md).

Triplets (Veit et al.): for an aspect, an anchor and a *close* item share the aspect's value and a
*far* item does not; the aspect index comes with the triplet. Validation and test triplets are
fixed lists drawn once from their splits by seed; training triplets are redrawn every epoch (seeded
by epoch), so a longer run sees more distinct triplets.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from contract import InputSpec, load_image_file
from training.config import TrainConfig
from training.data.arrays import LabeledImages, stratified_split
from training.data.sources import (
    FASHION_MNIST_CLASSES,
    Splits,
    folder_input_spec,
    framed_images,
    input_spec_for,
    load_raw,
    validation_size,
)
from training.data.torch_data import Transform, make_augment, make_edit_augment

# name -> RGB. Distinct hues at full saturation; white leaves the grey image as it is.
PALETTE: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "red": (230, 25, 40),
    "orange": (245, 130, 30),
    "yellow": (240, 220, 20),
    "green": (40, 180, 60),
    "cyan": (30, 210, 230),
    "blue": (30, 70, 230),
    "purple": (150, 40, 190),
}
GROUPS: dict[str, list[str]] = {
    "tops": ["t-shirt/top", "pullover", "coat", "shirt"],
    "bottoms": ["trouser"],
    "dresses": ["dress"],
    "footwear": ["sandal", "sneaker", "ankle boot"],
    "bags": ["bag"],
}
FASHION_ASPECTS = ["category", "group", "color"]


class AspectDataError(ValueError):
    """Aspect data or a triplet list that cannot be used; the message names the file and row."""


@dataclass
class AspectImages:
    images: np.ndarray  # uint8 [N, H, W, C]
    labels: dict[str, np.ndarray]  # aspect -> int64 [N]
    values: dict[str, list[str]]  # aspect -> value names

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: np.ndarray) -> AspectImages:
        return AspectImages(self.images[index], {a: v[index] for a, v in self.labels.items()}, self.values)

    def as_labeled(self, aspect: str) -> LabeledImages:
        return LabeledImages(self.images, self.labels[aspect], self.values[aspect])

    def joint_labels(self, aspects: list[str], table: dict[tuple[int, ...], int] | None = None
                     ) -> tuple[np.ndarray, dict[tuple[int, ...], int]]:
        """One label per combination of aspect values ("same on every aspect"), numbered in ``table``
        (built from these items when not given; combinations new to it get new numbers)."""
        table = dict(table) if table is not None else {}
        combos = np.stack([self.labels[a] for a in aspects], axis=1)
        out = np.empty(len(combos), dtype=np.int64)
        for i, combo in enumerate(map(tuple, combos.tolist())):
            out[i] = table.setdefault(combo, len(table))
        return out, table

    def joint_names(self, aspects: list[str], table: dict[tuple[int, ...], int]) -> list[str]:
        names = [""] * len(table)
        for combo, number in table.items():
            names[number] = " / ".join(self.values[a][v] for a, v in zip(aspects, combo))
        return names


# Saturated tints between the palette's hues, for the test of colours training never saw.
UNSEEN_COLOURS: dict[str, tuple[int, int, int]] = {
    "lime": (160, 230, 20), "magenta": (240, 30, 170), "teal": (10, 140, 120), "sky": (90, 170, 255),
    "pink": (255, 110, 180),
}


def tint(gray: np.ndarray, colors: np.ndarray, palette: dict[str, tuple[int, int, int]] = PALETTE) -> np.ndarray:
    """uint8 [N, H, W, 1] grey images times a per-image colour of ``palette`` -> uint8 [N, H, W, 3]."""
    rgb = np.array(list(palette.values()), dtype=np.float32)[colors] / 255.0  # [N, 3]
    return np.round(gray.astype(np.float32) * rgb[:, None, None, :]).astype(np.uint8)


def fashion_aspects(gray: LabeledImages, seed: int, colors: np.ndarray | None = None, fit: str = "pad") -> AspectImages:
    """Tint Fashion-MNIST images (seeded colour per image unless ``colors`` is given) and label aspects;
    the tinted images are prepared with ``fit`` as the service prepares uploads of them."""
    if colors is None:
        colors = np.random.default_rng(seed).integers(0, len(PALETTE), len(gray))
    group_of = {cls: g for g, (name, members) in enumerate(GROUPS.items()) for cls in members}
    groups = np.array([group_of[FASHION_MNIST_CLASSES[c]] for c in gray.labels], dtype=np.int64)
    return AspectImages(
        framed_images(tint(gray.images, colors), fit),
        {"category": gray.labels.astype(np.int64), "group": groups, "color": colors.astype(np.int64)},
        {"category": list(FASHION_MNIST_CLASSES), "group": list(GROUPS), "color": list(PALETTE)},
    )


def read_aspects_csv(path: Path, spec: InputSpec, aspects: list[str] | None = None,
                     values: dict[str, list[str]] | None = None) -> AspectImages:
    """Rows of ``path,<aspect>,<aspect>...``; a missing file or unknown value names its row."""
    if not path.is_file():
        raise AspectDataError(f"{path}: no such CSV")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        if "path" not in columns:
            raise AspectDataError(f"{path}: needs a 'path' column, found {columns}")
        aspects = aspects or [c for c in columns if c != "path"]
        missing = [a for a in aspects if a not in columns]
        if missing:
            raise AspectDataError(f"{path}: no column for aspect(s) {missing}")
        if not aspects:
            raise AspectDataError(f"{path}: no aspect columns besides 'path'")
        rows = list(reader)
    known = {a: list(values[a]) if values else [] for a in aspects}
    images, labels = [], {a: [] for a in aspects}
    for number, row in enumerate(rows, start=2):  # row 1 is the header
        image_path = (path.parent / row["path"]).resolve()
        if not image_path.is_file():
            raise AspectDataError(f"{path}, row {number}: image {row['path']!r} not found")
        for aspect in aspects:
            value = row[aspect]
            if value not in known[aspect]:
                if values:
                    raise AspectDataError(f"{path}, row {number}: {aspect}={value!r} never occurs in training data")
                known[aspect].append(value)
            labels[aspect].append(known[aspect].index(value))
        try:
            images.append(load_image_file(image_path, spec))
        except ValueError as exc:
            raise AspectDataError(f"{path}, row {number}: {exc}") from None
    return AspectImages(np.stack(images), {a: np.array(v, dtype=np.int64) for a, v in labels.items()}, known)


def confound(rows: np.ndarray, labels: dict[str, np.ndarray], aspect: str, by: str, share: float,
             rng: np.random.Generator) -> np.ndarray:
    """Redraw ``share`` of ``aspect``'s triplet rows against the aspect ``by``: the close item differs
    from the anchor in ``by`` and the far one matches it there, so ``aspect``'s mask cannot lean on
    ``by`` (a category must not follow colour). Rows where no such items exist stay as drawn."""
    values, other = labels[aspect], labels[by]
    picked = np.flatnonzero(rng.random(len(rows)) < share)
    for index in picked:
        anchor = rows[index, 0]
        close = np.flatnonzero((values == values[anchor]) & (other != other[anchor]))
        far = np.flatnonzero((values != values[anchor]) & (other == other[anchor]))
        if len(close) and len(far):
            rows[index, 1], rows[index, 2] = rng.choice(close), rng.choice(far)
    return rows


def sample_triplets(labels: dict[str, np.ndarray], aspects: list[str], n: int, seed: int,
                    confounder: str | None = None, confounded: float = 0.0) -> np.ndarray:
    """[n, 4] int64 rows (anchor, close, far, aspect index), aspects in equal shares, no self-pairs;
    with ``confounder``, ``confounded`` of every other aspect's rows drawn against it (:func:`confound`)."""
    rng = np.random.default_rng(seed)
    rows = []
    for a, aspect in enumerate(aspects):
        count = n // len(aspects) + (1 if a < n % len(aspects) else 0)
        values = labels[aspect]
        order = np.argsort(values, kind="stable")
        sorted_values = values[order]
        start = np.searchsorted(sorted_values, sorted_values, "left")
        end = np.searchsorted(sorted_values, sorted_values, "right")
        usable = np.flatnonzero((end - start > 1) & (end - start < len(values)))
        if len(usable) == 0:
            raise AspectDataError(f"aspect {aspect!r}: needs a value shared by two items and another value")
        anchor_pos = rng.choice(usable, count)
        span = end[anchor_pos] - start[anchor_pos]
        close_pos = start[anchor_pos] + rng.integers(0, span - 1)
        close_pos = np.where(close_pos >= anchor_pos, close_pos + 1, close_pos)
        anchors, closes = order[anchor_pos], order[close_pos]
        far = rng.integers(0, len(values), count)
        clash = values[far] == values[anchors]
        while clash.any():
            far[clash] = rng.integers(0, len(values), int(clash.sum()))
            clash = values[far] == values[anchors]
        drawn = np.stack([anchors, closes, far, np.full(count, a)], axis=1)
        if confounder is not None and confounded and aspect != confounder:
            drawn = confound(drawn, labels, aspect, confounder, confounded, rng)
        rows.append(drawn)
    return np.concatenate(rows).astype(np.int64)


def grouped_order(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """A seeded order of indices into ``labels`` made of runs of ``per_class`` images of one class,
    the runs shuffled: a batch whose size is a multiple of ``per_class`` holds whole runs, so it
    meets each of its classes ``per_class`` at a time. Every image comes up once; a class whose size
    is not a multiple of ``per_class`` fills its last run from its own start, so the order may be
    a little longer than ``labels``."""
    rng = np.random.default_rng(seed)
    runs = []
    for c in np.unique(labels):
        own = rng.permutation(np.flatnonzero(labels == c))
        padded = np.resize(own, -(-len(own) // per_class) * per_class)  # np.resize repeats from the start
        runs.extend(padded.reshape(-1, per_class))
    return np.concatenate([runs[i] for i in rng.permutation(len(runs))])


class TripletDataset(Dataset):
    """Yields one CSN triplet: three augmented uint8 HWC images and the aspect index."""

    def __init__(self, data: AspectImages, triplets: np.ndarray, augment: Transform | None,
                 labels: np.ndarray, aspects: list[str], view_augment: Transform | None = None,
                 view_all: bool = False, plain: np.ndarray | None = None,
                 plain_order: np.ndarray | None = None) -> None:
        self.data, self.triplets, self.augment = data, triplets, augment
        # An edited second view of the anchor (of all three when view_all), for the instance term.
        self.view_augment, self.view_all = view_augment, view_all
        # Untinted training images (objective.instance_plain): triplet i also yields plain image
        # plain_order[i] and an edited view of it. The loader reads triplets in order, so a batch's
        # plain images are a run of the order (AspectTask.train_loader draws it, per epoch and rank).
        if (plain is None) != (plain_order is None):
            raise ValueError("plain images and their order go together")
        self.plain, self.plain_order = plain, plain_order
        self.labels = labels
        # The task's aspects, in its order: the data may carry more (a task-specific network
        # trains on one aspect of three-aspect data).
        self.aspect_values = np.stack([data.labels[a] for a in aspects], axis=1)  # [N, A]

    def __len__(self) -> int:
        return len(self.triplets)

    def _image(self, index: int, augment: Transform | None = None, source: np.ndarray | None = None) -> torch.Tensor:
        image = torch.from_numpy((self.data.images if source is None else source)[index])
        augment = augment or self.augment
        if augment is not None:
            image = augment(image.permute(2, 0, 1)).permute(1, 2, 0)
        return image.contiguous()

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        anchor, close, far, aspect = (int(v) for v in self.triplets[index])
        views = {}
        if self.view_augment:
            members = {"anchor": anchor, "close": close, "far": far} if self.view_all else {"anchor": anchor}
            views = {f"images_{name}_view": self._image(i, self.view_augment) for name, i in members.items()}
            if self.plain is not None:
                plain = int(self.plain_order[index % len(self.plain_order)])
                views |= {"images_plain": self._image(plain, source=self.plain),
                          "images_plain_view": self._image(plain, self.view_augment, self.plain)}
        return {
            **views,
            "images_anchor": self._image(anchor), "images_close": self._image(close), "images_far": self._image(far),
            "aspect": torch.tensor(aspect),
            # Joint labels (same on every aspect) of the three images, for the optional class-level
            # loss on the overall embedding.
            "labels": torch.tensor([self.labels[anchor], self.labels[close], self.labels[far]]),
            # Every aspect's value of the three images [3, A], for the optional per-aspect loss.
            "aspect_labels": torch.from_numpy(self.aspect_values[[anchor, close, far]]),
        }


def triplet_accuracy(aspect_embeddings: np.ndarray, triplets: np.ndarray, aspects: list[str]) -> dict[str, float]:
    """Fraction of triplets with cos(anchor, close) > cos(anchor, far) in the triplet's aspect space,
    per aspect and over all triplets. ``aspect_embeddings``: [N, A, D] normalised; for a model without
    masks pass the overall embedding repeated per aspect."""
    anchor, close, far, a = triplets.T
    e = aspect_embeddings
    close_score = np.einsum("nd,nd->n", e[anchor, a], e[close, a])
    far_score = np.einsum("nd,nd->n", e[anchor, a], e[far, a])
    correct = close_score > far_score
    result = {name: float(correct[a == i].mean()) for i, name in enumerate(aspects) if (a == i).any()}
    result["overall"] = float(correct.mean())
    return result


class AspectTask:
    """Multi-aspect data; CSN triplets for training; model selection on validation triplet accuracy.

    ``splits`` label train and validation images by the combination of all aspect values, what the
    overall embedding is trained and calibrated on ("alike on every aspect"). For fashion-aspects
    the overall test split is the untinted Fashion-MNIST test set labelled by category, the same
    images every other model is measured on; the aspect numbers use the tinted test set.
    """

    selection_metric = "val_triplet_accuracy"

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        data = config.data
        self.aspects = list(data.aspects)
        self.primary = self.aspects[0]
        if data.dataset == "fashion-aspects":
            unknown = [a for a in self.aspects if a not in FASHION_ASPECTS]
            if unknown:
                raise AspectDataError(f"fashion-aspects has aspects {FASHION_ASPECTS}; unknown {unknown}")
            gray_train, gray_test = load_raw("fashion-mnist", data.data_dir, download=data.download)
            unseen_test = None
            if data.holdout_classes:
                # Open-set recipe: held-out classes never reach training, validation or calibration;
                # their untinted test images are the unseen-class test split.
                unseen_test = gray_test.with_classes(data.holdout_classes, keep=True)
                gray_train = gray_train.with_classes(data.holdout_classes, keep=False)
                gray_test = gray_test.with_classes(data.holdout_classes, keep=False)
            if data.train_limit and data.train_limit < len(gray_train):
                gray_train = gray_train.subset(stratified_split(gray_train.labels, data.train_limit, config.seed + 1)[1])
            train_all = fashion_aspects(gray_train, seed=config.seed, fit=data.fit)
            plain_source = gray_train.images  # untinted on demand (objective.instance_plain), below
            test = fashion_aspects(gray_test, seed=config.seed + 7, fit=data.fit)
            if data.test_limit and data.test_limit < len(test):
                keep = stratified_split(test.labels[self.primary], data.test_limit, config.seed + 2)[1]
                test, gray_test = test.subset(keep), gray_test.subset(keep)
            untinted = fashion_aspects(gray_test, seed=0, colors=np.zeros(len(gray_test), dtype=np.int64), fit=data.fit)
            self.gray_test = gray_test  # tinted again in colours training never saw (_unseen_colour_metrics)
            overall_test = untinted.as_labeled(self.primary)
            # Aspect triplets on the untinted test images as well: a catalogue of plain photos asks
            # "same category?" too. Colour is constant there, so only the other aspects are drawn.
            # (A model of colour alone has nothing to measure there.)
            varying = [a for a in self.aspects if len(np.unique(untinted.labels[a])) > 1]
            self.untinted = untinted if varying else None
            self.untinted_triplets = (varying, sample_triplets(untinted.labels, varying, data.eval_triplets,
                                                               config.seed + 17) if varying else None)
            if unseen_test is not None:
                unseen_test = fashion_aspects(unseen_test, seed=0, colors=np.zeros(len(unseen_test), dtype=np.int64),
                                              fit=data.fit).as_labeled(self.primary)
        elif data.dataset == "aspects-csv":
            unseen_test = None
            self.untinted = None
            plain_source = None
            folder = Path(data.data_dir or ".")
            spec = folder_input_spec(data.image_size, data.channels, data.fit, data.pad_value, data.resample)
            train_all = read_aspects_csv(folder / "train.csv", spec, self.aspects)
            test = read_aspects_csv(folder / "test.csv", spec, self.aspects, train_all.values)
            overall_test = test.as_labeled(self.primary)
        else:
            raise AspectDataError(f"dataset {data.dataset!r} has no aspects; use fashion-aspects or aspects-csv")
        rest, val_idx = stratified_split(train_all.labels[self.primary], validation_size(data.val_size, len(train_all)),
                                         config.seed)
        self.train, self.val, self.test = train_all.subset(rest), train_all.subset(val_idx), test
        self.train_plain = None
        if config.objective.instance_plain_per_class and not config.objective.instance_plain:
            raise AspectDataError("objective.instance_plain_per_class groups the plain images: it needs "
                                  "objective.instance_plain = true")
        if config.objective.instance_plain:
            if plain_source is None:
                raise AspectDataError("objective.instance_plain needs fashion-aspects (its untinted images)")
            # The training images in white, the palette's identity tint, as the untinted test set is made.
            self.train_plain = framed_images(tint(plain_source[rest], np.zeros(len(rest), dtype=np.int64)), data.fit)
        self.aspect_classes = [len(train_all.values[a]) for a in self.aspects]
        # Each aspect's values, in label order: the built-in palette for fashion-aspects, the CSV's
        # own values for aspects-csv.
        self.aspect_values = {a: list(train_all.values[a]) for a in self.aspects}
        # The overall embedding means "alike on every aspect": its labels are the combinations of
        # aspect values. (On the untinted test split colour is constant, so there they reduce to
        # the first aspect, the standard Fashion-MNIST classes.)
        self.train_joint, table = self.train.joint_labels(self.aspects)
        self.val_joint, table = self.val.joint_labels(self.aspects, table)
        names = self.train.joint_names(self.aspects, table)
        self.splits = Splits(LabeledImages(self.train.images, self.train_joint, names),
                             LabeledImages(self.val.images, self.val_joint, names), overall_test,
                             unseen_test, tuple(data.holdout_classes))
        self.val_triplets = sample_triplets(self.val.labels, self.aspects, data.eval_triplets, config.seed + 11)
        self.test_triplets = sample_triplets(self.test.labels, self.aspects, data.eval_triplets, config.seed + 13)
        _, height, width, _ = self.train.images.shape
        self.augment = make_augment(config.augment, height, width)
        self.view_augment = (make_edit_augment(config.augment, input_spec_for(self.train.images, data))
                             if config.objective.instance_weight > 0 else None)

    # training --------------------------------------------------------------------------------
    def train_loader(self, batch_kind: str, epoch: int, rank: int = 0, world_size: int = 1) -> DataLoader:
        if batch_kind != "triplets":
            raise AspectDataError(f"aspect data trains with triplet objectives (csn), not {batch_kind!r} batches")
        data = self.config.data
        triplets = sample_triplets(self.train.labels, self.aspects, data.train_triplets, self.config.seed * 1000 + epoch,
                                   data.confounder, data.confounded_triplets)
        per_rank = max(1, self.config.optim.batch_size // world_size)
        seed = (self.config.seed * 1000 + epoch) * world_size + rank  # each rank draws its own plain images
        plain = self.train_plain if self.view_augment else None
        per_class = self.config.objective.instance_plain_per_class
        plain_order = None
        if plain is not None:  # seeded, so each epoch draws others; grouped by category on request
            plain_order = (grouped_order(self.train.labels[self.primary], per_class, seed) if per_class
                           else np.random.default_rng(seed).permutation(len(plain)))
        dataset = TripletDataset(self.train, triplets[rank::world_size], self.augment, self.train_joint,
                                 self.aspects, self.view_augment,
                                 view_all=self.config.objective.instance_views == "all",
                                 plain=plain, plain_order=plain_order)
        return DataLoader(dataset, batch_size=per_rank, shuffle=False, drop_last=True, num_workers=0)

    def steps_per_epoch(self, batch_kind: str) -> int:
        return max(1, self.config.data.train_triplets // self.config.optim.batch_size)

    # evaluation ------------------------------------------------------------------------------
    def _aspect_space(self, embeddings: np.ndarray, aspect_embeddings: np.ndarray | None) -> np.ndarray:
        """[N, A, D]; a model without aspects answers every aspect with its one embedding."""
        if aspect_embeddings is not None:
            return aspect_embeddings
        return np.repeat(embeddings[:, None, :], len(self.aspects), axis=1)

    def validate(self, embed) -> dict[str, float]:
        """Triplet accuracy on the fixed validation triplets, overall and per aspect, plus the
        overall embedding's P@1 on the validation split's joint labels."""
        from training.evaluation import embed_all, retrieval_metrics

        embeddings, aspects = embed_all(embed, self.val.images, self.config.eval.batch_size)
        accuracy = triplet_accuracy(self._aspect_space(embeddings, aspects), self.val_triplets, self.aspects)
        from training.evaluation.near_duplicates import validation_near_duplicates

        return {"val_triplet_accuracy": accuracy.pop("overall"),
                **{f"val_triplet_accuracy_{k}": v for k, v in accuracy.items()},
                "val_precision_at_1": retrieval_metrics(embeddings, self.val_joint)["precision_at_1"],
                **validation_near_duplicates(embed, self.val.images, embeddings,
                                             self.config.eval.val_near_duplicates,
                                             input_spec_for(self.val.images, self.config.data))}

    def aspect_labels(self, split: str) -> dict[str, np.ndarray]:
        source = {"val": self.val, "test": self.test}[split]
        return {a: source.labels[a] for a in self.aspects}

    def aspect_images(self, split: str) -> np.ndarray:
        return {"val": self.val, "test": self.test}[split].images

    def _untinted_metrics(self, embed) -> dict[str, Any]:
        """Triplet accuracy on the untinted test images, for the aspects that vary there (fashion-aspects)."""
        from training.evaluation import embed_all

        if self.untinted is None:
            return {}
        varying, triplets = self.untinted_triplets
        embeddings, aspects = embed_all(embed, self.untinted.images, self.config.eval.batch_size)
        space = self._aspect_space(embeddings, aspects)[:, [self.aspects.index(a) for a in varying]]
        return {"untinted_test_triplets": int(len(triplets)),
                "untinted_triplet_accuracy": triplet_accuracy(space, triplets, varying)}

    def _unseen_colour_metrics(self, embed, triplets: int = 3000) -> dict[str, Any]:
        """Does an aspect follow colour? On test garments tinted in colours training never saw: an
        anchor in colour X, the same category in colour Y, another category in X; the share of
        triplets where each non-colour aspect puts the first nearer (fashion-aspects only)."""
        from training.evaluation import embed_all

        if self.untinted is None or "color" not in self.aspects:
            return {}
        rng = np.random.default_rng(self.config.seed + 19)
        gray = self.gray_test
        category = gray.labels
        anchors = rng.integers(0, len(gray), triplets)
        closes = np.array([rng.choice(np.flatnonzero((category == category[a]) & (np.arange(len(gray)) != a)))
                           for a in anchors])
        fars = np.array([rng.choice(np.flatnonzero(category != category[a])) for a in anchors])
        x = rng.integers(0, len(UNSEEN_COLOURS), triplets)
        y = (x + rng.integers(1, len(UNSEEN_COLOURS), triplets)) % len(UNSEEN_COLOURS)
        images = framed_images(tint(gray.images[np.concatenate([anchors, closes, fars])], np.concatenate([x, y, x]),
                                    UNSEEN_COLOURS), self.config.data.fit)
        spaces = self._aspect_space(*embed_all(embed, images, self.config.eval.batch_size))
        out = {}
        for name in (a for a in self.aspects if a != "color"):
            space = spaces[:, self.aspects.index(name)]
            a, c, f = space[:triplets], space[triplets:2 * triplets], space[2 * triplets:]
            out[name] = round(float(np.mean(np.einsum("nd,nd->n", a, c) > np.einsum("nd,nd->n", a, f))), 6)
        return {"unseen_colour_triplets": triplets, "unseen_colours": list(UNSEEN_COLOURS),
                "unseen_colour_accuracy": out}

    def test_metrics(self, embed) -> dict[str, Any]:
        from training.evaluation import embed_all, retrieval_metrics

        embeddings, aspects = embed_all(embed, self.test.images, self.config.eval.batch_size)
        space = self._aspect_space(embeddings, aspects)
        precision = {a: retrieval_metrics(np.ascontiguousarray(space[:, i]), self.test.labels[a])["precision_at_1"]
                     for i, a in enumerate(self.aspects)}
        return {"aspects": {
            "test_images": int(len(self.test)),
            "test_triplets": int(len(self.test_triplets)),
            "triplet_accuracy": triplet_accuracy(space, self.test_triplets, self.aspects),
            "precision_at_1": precision,
            **self._untinted_metrics(embed),
            **self._unseen_colour_metrics(embed),
            # The tint colours exist only in fashion-aspects; data from a CSV has its own values.
            **({"palette": {name: list(rgb) for name, rgb in PALETTE.items()}}
               if self.config.data.dataset == "fashion-aspects" else {"values": self.aspect_values}),
        }}
