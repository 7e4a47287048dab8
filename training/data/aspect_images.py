"""Images with several labels, one per aspect, and how ``aspects-csv`` reads them from a user's CSV
files (``data_dir`` holding ``train.csv`` and ``test.csv``, each with a ``path`` column relative to
the CSV and one column per aspect; docs/own-data.md)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contract import InputSpec, load_image_file
from training.data.arrays import LabeledImages


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


