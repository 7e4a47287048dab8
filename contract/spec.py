"""The self-describing model spec stored inside every exported ONNX file."""

from __future__ import annotations

import json
import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from contract.records import MetricsRecord, TrainingRecord

IMAGES_INPUT = "images"
EMBEDDING_OUTPUT = "embedding"
ASPECTS_OUTPUT = "aspect_embeddings"
SPEC_METADATA_KEY = "likeness.spec"
SPEC_FORMAT_VERSION = 1


class SpecError(ValueError):
    """The model file carries no spec, or one that does not validate."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    """How a decoded image becomes the model's uint8 [H, W, C] input."""

    height: int = Field(ge=1, le=4096)
    width: int = Field(ge=1, le=4096)
    channels: Literal[1, 3]
    # stretch: ignore aspect ratio; pad: keep it and fill with pad_value; crop: keep it, centre-crop;
    # content: frame the content first (contract.images.frame_content: borders, bars, padding and a
    # plain background of one colour peeled off), then pad; content-robust: the same, a line counting
    # as one colour with a few pixels off it (photos: texture, JPEG ringing, a sharpened copy).
    fit: Literal["stretch", "pad", "crop", "content", "content-robust"] = "pad"
    resample: Literal["nearest", "box", "bilinear", "hamming", "bicubic", "lanczos"] = "bilinear"
    # Background grey level for padding and for compositing transparent pixels.
    pad_value: int = Field(default=0, ge=0, le=255)

    @property
    def mode(self) -> Literal["L", "RGB"]:
        return "L" if self.channels == 1 else "RGB"


class Decision(_Strict):
    """Cosine threshold at or above which two images are called the same."""

    threshold: float = Field(ge=-1.0, le=1.0)
    rule: str = Field(description="how the threshold was chosen, e.g. 'EER on validation pairs'")


class SizedThreshold(_Strict):
    """The same-image threshold fitted for a catalogue of ``items`` images."""

    items: int = Field(ge=2)
    threshold: float = Field(ge=-1.0, le=1.0)


def threshold_for_items(table: list[SizedThreshold], items: int, fallback: float) -> float:
    """The threshold of ``table`` (sorted by items) for a catalogue of ``items`` images: linear in
    log(items) between its points; its first below them (fewer images: a stricter threshold than
    needed, never a looser one) and its last above them (the largest catalogue it was fitted for).
    ``fallback`` (the one threshold of a model without a table) when the table is empty."""
    if not table:
        return fallback
    if items <= table[0].items:
        return table[0].threshold
    for low, high in zip(table, table[1:]):
        if items <= high.items:
            share = math.log(items / low.items) / math.log(high.items / low.items)
            return round(low.threshold + share * (high.threshold - low.threshold), 6)
    return table[-1].threshold


class Calibration(_Strict):
    """Platt scaling of the cosine: probability = 1 / (1 + exp(-(a * cosine + b)))."""

    method: Literal["platt"] = "platt"
    a: float
    b: float
    fitted_on: str

    def probability(self, cosine: float) -> float:
        z = self.a * cosine + self.b
        # Split by sign so exp never overflows.
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)


class ModelSpec(_Strict):
    format_version: Literal[1] = SPEC_FORMAT_VERSION
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    input: InputSpec
    embedding_dim: int = Field(ge=1)
    metric: Literal["cosine"] = "cosine"
    aspects: list[str] = Field(default_factory=list)
    decision: Decision
    calibration: Calibration
    # Per-aspect decision and calibration, fitted on validation pairs of that aspect.
    aspect_decisions: dict[str, Decision] = Field(default_factory=dict)
    aspect_calibrations: dict[str, Calibration] = Field(default_factory=dict)
    # "The same image": the cosine at or above which two images are one image after the edits a
    # copy meets (re-encoding, rescaling, crops, borders, rotations, overlays: training/evaluation/
    # edits.py), fitted on validation edits. ``decision`` stays "the same kind of thing". None in
    # models exported before it existed.
    near_duplicate: Decision | None = None
    # The part of ``embedding`` that cosine is taken over, [start, stop): the instance subspace,
    # trained to tell one image from its look-alikes (:func:`same_image_scores`). None: the whole
    # embedding (models before likeness-fmnist 4.0).
    near_duplicate_dims: tuple[int, int] | None = None
    # The same decision for catalogues of other sizes (items in an index), fitted for the same rate:
    # the more images a catalogue holds, the nearer each one's nearest other, so a larger one needs a
    # higher threshold. ``near_duplicate`` is its last point (every image training had). Empty in
    # models exported before it existed: they answer with ``near_duplicate`` at any size.
    near_duplicate_by_items: list[SizedThreshold] = Field(default_factory=list)
    training: TrainingRecord = Field(default_factory=TrainingRecord, description="data, objective, backbone, command")
    metrics: MetricsRecord = Field(default_factory=MetricsRecord, description="evaluation results, by split")

    @model_validator(mode="after")
    def _near_duplicate_dims_fit(self) -> ModelSpec:
        if self.near_duplicate_dims is not None:
            start, stop = self.near_duplicate_dims
            if not 0 <= start < stop <= self.embedding_dim:
                raise ValueError(f"near_duplicate_dims {list(self.near_duplicate_dims)} is not a part of the "
                                 f"{self.embedding_dim}-d embedding")
        return self

    @model_validator(mode="after")
    def _by_items_sorted(self) -> ModelSpec:
        sizes = [point.items for point in self.near_duplicate_by_items]
        if sizes != sorted(set(sizes)):
            raise ValueError(f"near_duplicate_by_items must grow in items, got {sizes}")
        if sizes and self.near_duplicate is None:
            raise ValueError("near_duplicate_by_items needs near_duplicate")
        return self

    def same_image_threshold(self, items: int | None = None) -> float | None:
        """The same-image threshold for a catalogue of ``items`` images (None: ``near_duplicate``'s,
        fitted among every image training had); None for a model without the decision."""
        if self.near_duplicate is None:
            return None
        if items is None:
            return self.near_duplicate.threshold
        return threshold_for_items(self.near_duplicate_by_items, items, self.near_duplicate.threshold)

    @model_validator(mode="after")
    def _aspects_consistent(self) -> ModelSpec:
        if len(set(self.aspects)) != len(self.aspects):
            raise ValueError(f"aspect names must be unique, got {self.aspects}")
        for table in (self.aspect_decisions, self.aspect_calibrations):
            unknown = set(table) - set(self.aspects)
            if unknown:
                raise ValueError(f"per-aspect entries for unknown aspects {sorted(unknown)}")
        return self

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], source: str = "model") -> ModelSpec:
        """Parse the spec out of ONNX ``metadata_props``; raise :class:`SpecError` with one clear line."""
        raw = metadata.get(SPEC_METADATA_KEY)
        if raw is None:
            raise SpecError(f"{source} has no '{SPEC_METADATA_KEY}' metadata; export it with `python -m training export`")
        try:
            return cls.model_validate(json.loads(raw))
        except (json.JSONDecodeError, ValidationError) as exc:
            first = str(exc).splitlines()
            detail = "; ".join(line.strip() for line in first[:3])
            raise SpecError(f"{source} has an invalid '{SPEC_METADATA_KEY}': {detail}") from exc


def same_image_scores(a: np.ndarray, b: np.ndarray, dims: tuple[int, int] | None) -> np.ndarray:
    """The "same image" score of pairs of embeddings ``a[i]``, ``b[i]`` (float [N, D], [1, D] or
    [D], broadcast against each other): the cosine over ``dims`` (a spec's ``near_duplicate_dims``;
    None: the whole embedding), what the spec's ``near_duplicate`` threshold applies to. Training fits
    the threshold, and the service answers, with this one function."""
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    if dims is None:
        return (a * b).sum(axis=1)
    a, b = a[:, dims[0]:dims[1]], b[:, dims[0]:dims[1]]
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(norms, 1e-12)
