"""What a model file records about itself, typed: how it was trained (``ModelSpec.training``) and
what the export measured on it (``ModelSpec.metrics``). Export writes them, cards, the
``evaluate`` command and the benchmarks read them, all through these types."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Record(BaseModel):
    # Unknown keys are kept, not refused: a file written by a later likeness still loads, and a
    # task's own results (a CSN model's aspects) ride along. Files written before a field existed
    # load with its default.
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True, serialize_by_alias=True)


# ---- how it was trained ------------------------------------------------------------------------

class SplitSummary(_Record):
    images: int
    classes: int
    per_class: dict[str, int] = Field(default_factory=dict)


class DataSummary(_Record):
    """The images really used, from the loaded data (``training.data.summary.data_summary``)."""

    dataset: str
    licence: str | None = None
    splits: dict[str, SplitSummary] = Field(default_factory=dict)
    # With aspects (CSN), each aspect's values; the classes are then their combinations.
    aspects: dict[str, list[str]] | None = None


class CurvePoint(_Record):
    """One epoch of the learning curve (validation numbers as the run selected on them)."""

    epoch: int
    train_seconds: float | None = None
    val_precision_at_1: float | None = None
    val_map_at_r: float | None = None


class EarlierStage(_Record):
    """A stage a fine-tuned run started from (``init_from``)."""

    checkpoint: str
    train_command: str | None = None
    epochs_trained: int | None = None
    train_seconds: float | None = None


class PixelPca(_Record):
    """A pixel subspace appended at export: the image's pixels on ``dims`` principal components."""

    dims: int
    share: float
    # > 0: the components are of side x side block means (a colour layout), not of every pixel.
    side: int = 0
    fitted_on: str
    images: int


class TrainingRecord(_Record):
    """``ModelSpec.training``. The config sections (``data_config``, ``objective``, ``backbone``,
    ``optim``, ``augment``) are snapshots of ``training.config.TrainConfig``, which validates them
    where they are used again; they stay plain mappings here so that the contract (and the
    service) need no training code."""

    data: str = "?"
    data_summary: DataSummary | None = None
    data_config: dict[str, Any] = Field(default_factory=dict)
    classes: list[str] = Field(default_factory=list)
    objective: dict[str, Any] = Field(default_factory=dict)
    backbone: dict[str, Any] = Field(default_factory=dict)
    optim: dict[str, Any] = Field(default_factory=dict)
    augment: dict[str, Any] = Field(default_factory=dict)
    epochs_trained: int | None = None
    curve: list[CurvePoint] = Field(default_factory=list)
    best_epoch: int | None = None
    selected_on: str | None = None
    seed: int = 0
    train_command: str | None = None
    earlier_stages: list[EarlierStage] = Field(default_factory=list)
    # Device, GPU, precision; None for checkpoints from before it was recorded.
    trained_on: dict[str, Any] | None = None
    export_command: str | None = None
    exported_at: str | None = None
    torch: str | None = None
    pixel_pca: PixelPca | None = None
    # The instance share the run trained with, when export served another.
    instance_share_trained: float | None = None
    notes: list[str] = Field(default_factory=list)


# ---- what the export measured --------------------------------------------------------------------

class PairQuality(_Record):
    """How well the probability is calibrated on test pairs."""

    ece: float
    brier: float
    accuracy_at_threshold: float


class SameImageDecision(_Record):
    """The "same image" threshold on test copies: how many copies it accepts, and how many
    originals' nearest other image it wrongly accepts (with its curve, for newer exports)."""

    threshold: float
    copies_accepted: float
    nearest_others_accepted: float
    # The split's size: the threshold is the one the spec gives a catalogue of that many images
    # (None: exported before thresholds by catalogue size; the spec's ``near_duplicate``).
    catalogue_items: int | None = None
    copies_accepted_by_family: dict[str, float] = Field(default_factory=dict)
    copies_accepted_by_edit: dict[str, float] = Field(default_factory=dict)
    near_identical_left_out: int | None = None
    originals: int | None = None
    curve: list[dict[str, float]] = Field(default_factory=list)


class NearDuplicateMetrics(_Record):
    """Does a copy find its original first (recall@1), per edit and family of edits."""

    recall_at_1: dict[str, float]
    family_worst_recall_at_1: dict[str, float] = Field(default_factory=dict)
    mean_recall_at_1: float
    worst_edit: str
    worst_recall_at_1: float
    queries: int
    gallery: int
    decision: SameImageDecision | None = None


class RetrievalMetrics(_Record):
    """Retrieval and pair numbers of one set of images (``training.evaluation.evaluate_embeddings``)."""

    precision_at_1: float
    r_precision: float
    map_at_r: float
    roc_auc: float
    eer: float
    eer_threshold: float
    tar_at_far_1e3: float = Field(alias="tar_at_far_0.001")
    items: int
    map_at_r_by_class: dict[str, float] = Field(default_factory=dict)
    few_shot: dict[str, dict[str, float | int]] = Field(default_factory=dict)
    # An open-set split names the classes it holds.
    classes: list[str] = Field(default_factory=list)


class SplitMetrics(RetrievalMetrics):
    """A split measured by the export: retrieval, calibration and the same image."""

    calibration: PairQuality | None = None
    near_duplicates: NearDuplicateMetrics | None = None


class Quantization(_Record):
    format: str
    ops: list[str]
    weights: str
    activations: str
    calibration_images: int
    calibration_split: str
    kept_float: str | None = None  # which layers stayed float, in words
    # images, mean_cosine, min_cosine: the int8 graph against the float one.
    agreement: dict[str, float | int]


class ExportCheck(_Record):
    """The ONNX graph against PyTorch, and how it was quantized if it was."""

    onnx_max_abs_diff: float
    parity_batches: list[int]
    static_layers_folded: int = 0
    quantization: Quantization | None = None


class OpenSetRecord(_Record):
    """The same recipe trained without some classes: its numbers on the classes it saw and on those it never saw."""

    holdout_classes: list[str]
    train_command: str | None = None
    seen: RetrievalMetrics
    unseen: RetrievalMetrics
    unseen_raw_pixels: RetrievalMetrics | None = None
    unseen_learned_only: RetrievalMetrics | None = None


class MetricsRecord(_Record):
    """``ModelSpec.metrics``: what the export measured, by split; task results (a CSN model's
    ``aspects``) are kept as extra entries (``task_results``)."""

    test: SplitMetrics | None = None
    test_unseen: SplitMetrics | None = None
    export: ExportCheck | None = None
    open_set_recipe: OpenSetRecord | None = None

    @property
    def task_results(self) -> dict[str, Any]:
        return dict(self.model_extra or {})
