"""Triplets sampled the CSN way (Veit et al.): for an aspect, an anchor and a *close* item share the
aspect's value and a *far* item does not; the aspect index comes with the triplet. Validation and
test triplets are fixed lists drawn once from their splits by seed; training triplets are redrawn
every epoch (seeded by epoch), so a longer run sees more distinct triplets."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from training.data.aspect_images import AspectDataError, AspectImages
from training.data.torch_data import Transform


def recoloured_triplets(category: np.ndarray, colours: int, triplets: int, rng: np.random.Generator
                        ) -> tuple[np.ndarray, ...]:
    """Does a category follow colour? ``triplets`` rows of (anchor, same category, other category)
    indices into ``category``, and per row the colour X of the anchor and the other category, and a
    colour Y != X of the same-category item (indices into ``colours`` colours): a category that
    follows colour puts the anchor nearer the other category."""
    anchors = rng.integers(0, len(category), triplets)
    closes = np.array([rng.choice(np.flatnonzero((category == category[a]) & (np.arange(len(category)) != a)))
                       for a in anchors])
    fars = np.array([rng.choice(np.flatnonzero(category != category[a])) for a in anchors])
    x = rng.integers(0, colours, triplets)
    y = (x + rng.integers(1, colours, triplets)) % colours
    return anchors, closes, fars, x, y


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


