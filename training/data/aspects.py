"""The task of a model with aspects (several notions of similarity): its data (fashion-aspects,
training/data/fashion_aspects.py, or a user's CSV, training/data/aspect_images.py), its CSN triplets
(training/data/aspect_triplets.py), validation on triplet accuracy and its test numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from training.config import TrainConfig
from training.data.arrays import LabeledImages, stratified_split
from training.data.aspect_images import AspectDataError, AspectImages, read_aspects_csv
from training.data.aspect_triplets import (
    TripletDataset,
    grouped_order,
    recoloured_triplets,
    sample_triplets,
    triplet_accuracy,
)
from training.data.fashion_aspects import (
    FASHION_ASPECTS,
    PALETTE,
    UNSEEN_COLOURS,
    fashion_aspect_labels,
    fashion_aspects,
    tint,
)
from training.data.sources import (
    Splits,
    folder_input_spec,
    framed_images,
    input_spec_for,
    load_raw,
    validation_size,
)
from training.data.torch_data import make_augment, make_edit_augment


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
        self.untinted = None
        if data.dataset == "fashion-aspects":
            train_all, test, overall_test, unseen_test, plain_source = self._load_fashion_aspects()
        elif data.dataset == "aspects-csv":
            folder = Path(data.data_dir or ".")
            spec = folder_input_spec(data.image_size, data.channels, data.fit, data.pad_value, data.resample)
            train_all = read_aspects_csv(folder / "train.csv", spec, self.aspects)
            test = read_aspects_csv(folder / "test.csv", spec, self.aspects, train_all.values)
            overall_test, unseen_test, plain_source = test.as_labeled(self.primary), None, None
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
        if config.augment.view_from_anchor:
            raise ValueError("augment.view_from_anchor is for class tasks; aspect triplets make their views apart")
        self.view_augment = (make_edit_augment(config.augment, input_spec_for(self.train.images, data))
                             if config.objective.instance_weight > 0 else None)

    def _load_fashion_aspects(self) -> tuple[AspectImages, AspectImages, LabeledImages, LabeledImages | None,
                                             np.ndarray]:
        """Tinted Fashion-MNIST: (train, test, the untinted test labelled by category, the untinted
        unseen classes of an open-set run, the untinted training images); the untinted test set's
        own triplets on the side."""
        config, data = self.config, self.config.data
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
        # Each test image's colour is drawn over the whole split, then the limit picks images (by
        # category), and only those are tinted and framed.
        test_colours = np.random.default_rng(config.seed + 7).integers(0, len(PALETTE), len(gray_test))
        if data.test_limit and data.test_limit < len(gray_test):
            primary = fashion_aspect_labels(gray_test.labels, test_colours)[self.primary]
            keep = stratified_split(primary, data.test_limit, config.seed + 2)[1]
            gray_test, test_colours = gray_test.subset(keep), test_colours[keep]
        test = fashion_aspects(gray_test, seed=config.seed + 7, colors=test_colours, fit=data.fit)
        untinted = fashion_aspects(gray_test, seed=0, colors=np.zeros(len(gray_test), dtype=np.int64), fit=data.fit)
        self.gray_test = gray_test  # tinted again in colours training never saw (_unseen_colour_metrics)
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
        # The untinted training images, tinted white on demand (objective.instance_plain).
        return train_all, test, untinted.as_labeled(self.primary), unseen_test, gray_train.images

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

    def _unseen_colour_metrics(self, embed, most: int = 3000) -> dict[str, Any]:
        """Does an aspect follow colour? On test garments tinted in colours training never saw: an
        anchor in colour X, the same category in colour Y, another category in X; the share of
        triplets where each non-colour aspect puts the first nearer (fashion-aspects only)."""
        from training.evaluation import embed_all

        # 3,000 triplets, or fewer when the run measures fewer test triplets (a quick run).
        triplets = min(most, self.config.data.eval_triplets)
        if self.untinted is None or "color" not in self.aspects or not triplets:
            return {}
        rng = np.random.default_rng(self.config.seed + 19)
        gray = self.gray_test
        anchors, closes, fars, x, y = recoloured_triplets(gray.labels, len(UNSEEN_COLOURS), triplets, rng)
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
