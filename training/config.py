"""Training configuration: a TOML file plus ``--set section.key=value`` overrides, validated once."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

CONFIG_DIR = Path(__file__).parent / "configs"


class ConfigError(ValueError):
    """A config the user gave cannot be read: a missing file, bad TOML, an override or a value that
    does not fit, an ``extends`` loop. The CLI prints it as one line."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Section):
    # fashion-mnist | mnist | cifar10 | cifar100 | folder | aspects-csv | fashion-aspects
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    download: bool = False
    val_size: int = Field(default=5000, ge=0, description="images held out of train for validation/calibration")
    train_limit: int = Field(default=0, ge=0, description="use only this many training images (0 = all)")
    test_limit: int = Field(default=0, ge=0, description="use only this many test images (0 = all)")
    holdout_classes: list[str] = Field(default_factory=list, description="classes kept out of train and val")
    # For image folders (folder, aspects-csv): the square size and channels photos are prepared to
    # (0 = 64 and 3, RGB); built-in datasets know theirs.
    image_size: int = Field(default=0, ge=0, description="side of the square model input for image folders (0 = 64)")
    channels: Literal[0, 1, 3] = Field(default=0, description="1 (greyscale) or 3 (RGB) for image folders (0 = 3)")
    # How a photo of another shape or size becomes the model's square input, in training and in the
    # service alike (stored in the model's spec): pad keeps the whole photo and fills the bars with
    # the grey level pad_value (also the background of transparent pixels); crop keeps the centre;
    # stretch ignores the aspect ratio; content and content-robust frame the content first.
    fit: Literal["pad", "crop", "stretch", "content", "content-robust"] = "pad"
    pad_value: int = Field(default=0, ge=0, le=255, description="grey level of padding: 0 black, 255 white")
    resample: Literal["nearest", "box", "bilinear", "hamming", "bicubic", "lanczos"] = "bilinear"
    # Conditional (CSN) data: aspect names and triplet counts.
    aspects: list[str] = Field(default_factory=list)
    train_triplets: int = Field(default=200_000, ge=0)
    # A share of every other aspect's training triplets drawn against this aspect (e.g. colour): the
    # close image differs from the anchor in it, the far one matches, so no other mask leans on it.
    confounder: str | None = Field(default=None, description="an aspect the others must not follow")
    confounded_triplets: float = Field(default=0.0, ge=0, le=1, description="share of triplets drawn against it")
    eval_triplets: int = Field(default=20_000, ge=0)


class AugmentConfig(_Section):
    crop_padding: int = Field(default=2, ge=0)
    hflip: bool = True
    erasing: float = Field(default=0.0, ge=0, le=1, description="probability of random erasing (Zhong et al.)")
    # The edited second view of the instance term (objective.instance_weight > 0).
    edit_min_scale: float = Field(default=0.5, gt=0, le=1, description="smallest down-and-up rescale factor")
    edit_color: float = Field(default=0.25, ge=0, lt=1, description="brightness and contrast jitter (+/-)")
    edit_jpeg_min_quality: int = Field(default=40, ge=1, le=95, description="lowest JPEG quality of the view")
    edit_zoom: float = Field(default=0.3, ge=0, le=1, description="probability of a crop of up to 20% of the area resized back")
    edit_user: float = Field(default=0.0, ge=0, le=1, description="probability of the edits users make (borders, "
                             "rotations, a side cut off, overlays, blur and sharpening)")
    edit_blur: float = Field(default=0.0, ge=0, le=1, description="probability of a blur, sigma 0.3-1.2 x side/28 px")
    view_from_anchor: bool = Field(default=False, description="class tasks: the copy view is the anchor view edited "
                                   "(its crop, flip, colour and greyscale shared, a mirror added), so the instance "
                                   "subspace is not trained to ignore the colours a copy keeps")
    # Photos: both views.
    crop_scale: float = Field(default=0.0, ge=0, lt=1, description="random resized crops of at least this share of "
                              "the area (0 = the padded crop of crop_padding instead)")
    color_jitter: float = Field(default=0.0, ge=0, lt=1, description="brightness, contrast and saturation jitter "
                                "(+/-), and hue by a quarter of it")
    grayscale: float = Field(default=0.0, ge=0, le=1, description="probability of a greyscale image (colour is a "
                             "nuisance for the kind of thing)")


class ModelConfig(_Section):
    # The feature extractor: the project's CNN trained from nothing (small-cnn, with ``layer`` and the
    # settings below), or a pretrained network (training.models.trunks) with ``trunk_weights``.
    trunk: Literal["small-cnn", "efficientnet_lite0", "resnet18"] = "small-cnn"
    trunk_weights: str = Field(default="imagenet", description="pretrained trunks: imagenet, a state dict file, or "
                               "none")
    head_layer: str = Field(default="none", description="pretrained trunks: one conv block of this layer type (e.g. "
                            "dynamic-diag, static) on the last feature map, or none")
    freeze_bn: bool = Field(default=True, description="pretrained trunks: keep the trunk's BatchNorm statistics")
    layer: str = "plain"
    predictor: str = "plain"  # for dynamic layers: plain | sphere (the full-SphereNet predictor)
    sphere_activation: Literal["linear", "cosine", "sigmoid"] = "cosine"
    predictor_width: int = Field(default=0, ge=0, description="hidden width of the NS predictor (0 = width / 4)")
    rank: int = Field(default=2, ge=1, description="basis size of dynamic-lowrank layers")
    widths: list[PositiveInt] = Field(default_factory=lambda: [32, 64, 128], min_length=1)
    depth: int | list[int] = Field(default=3, description="NS-convs per stage (one number, or one per stage)")
    residual: bool = Field(default=False, description="ResNet basic blocks after each stage's first conv")
    antialias: bool = Field(default=False, description="anti-aliased max-pooling between stages (shift-robust)")
    # Split embedding: the last instance_dims dimensions hold the instance term (the same image),
    # the rest the class loss (the same kind of thing); the served cosine weighs the instance part
    # by instance_share. 0 = one shared space.
    instance_dims: int = Field(default=0, ge=0)
    instance_share: float = Field(default=0.3, ge=0, le=1)
    ns_per_stage: int = Field(default=0, ge=0, description="only the last N convs of a stage use `layer` (0 = all)")
    ns_last_stages: int = Field(default=0, ge=0, description="only the last N stages use `layer` (0 = all)")
    embedding_dim: int = Field(default=64, ge=2)
    # conditional similarity: none | fixed | learned (masks over the embedding, one per aspect)
    masks: Literal["none", "fixed", "learned"] = "none"


# The losses training/objectives builds: the class-label losses of pytorch-metric-learning (and a
# plain classifier), and CSN's triplets over aspects.
ObjectiveName = Literal["contrastive", "triplet", "multi-similarity", "supcon", "arcface", "normalized-softmax",
                        "proxy-anchor", "classifier", "csn"]
# pytorch-metric-learning's miners, for the pair and triplet losses; none: every pair of the batch.
MinerName = Literal["triplet-semihard", "triplet-hard", "triplet-all", "batch-hard", "multi-similarity",
                    "pair-margin", "none"]


class ObjectiveConfig(_Section):
    name: ObjectiveName = "triplet"
    margin: float | None = None
    pos_margin: float | None = None
    neg_margin: float | None = None
    miner: MinerName | None = None  # None: the loss's usual miner (training/objectives/metric.py)
    # CSN regularisers (Veit et al. defaults).
    embed_norm_weight: float = 5e-3
    mask_l1_weight: float = 5e-4
    # Weight of an extra class-level metric loss on the unmasked embedding (conditional models),
    # and which loss: ArcFace, or normalised softmax (gentler: it does not crush a class to a point).
    overall_weight: float = 0.0
    overall_loss: Literal["arcface", "normalized-softmax"] = "arcface"
    # Weight of a per-aspect proxy loss (normalised softmax) in each aspect's masked space.
    aspect_weight: float = 0.0
    # Instance term: two views of every image (the second edited, see augment.edit_*), a loss that
    # makes each view's partner its nearest neighbour in the batch, added with this weight to the
    # class loss, so the embedding keeps *which image* as well as *which class*.
    # ntxent (SimCLR's, temperature) or margin (a triplet margin on cosines).
    instance_weight: float = Field(default=0.0, ge=0)
    instance_loss: Literal["ntxent", "margin"] = "ntxent"
    instance_temperature: float = Field(default=0.1, gt=0)
    instance_margin: float = Field(default=0.1, gt=0)
    # CSN only: which triplet members get an edited second view for the instance term. "anchor":
    # 4 images per triplet instead of 3; "all": 6, for three times the pairs (and three times the
    # negatives in a batch).
    instance_views: Literal["anchor", "all"] = "anchor"
    # CSN on fashion-aspects only: each triplet also brings one plain (untinted) training image and
    # an edited view of it to the instance term (2 more images per triplet). The tinted training
    # images are plain only one time in eight, yet a plain catalogue is what the near-duplicate test
    # searches, and there colour cannot tell two shapes apart.
    instance_plain: bool = False
    # With instance_plain: the plain images of a batch come this many per category (0: at random),
    # so the instance term meets look-alikes as negatives, as the default recipe's m-per-class
    # batches give it. At random, a batch of 128 holds about 13 of a category, and an edited copy
    # is told apart mostly from other kinds of thing; the near-duplicate test's rivals are its own kind.
    instance_plain_per_class: int = Field(default=0, ge=0)
    # Scale of the class-level proxy losses (ArcFace, normalised softmax); None = the loss's default.
    # A large scale crushes each class towards its proxy.
    scale: float | None = Field(default=None, gt=0)


class OptimConfig(_Section):
    epochs: int = Field(default=20, ge=1)
    batch_size: int = Field(default=256, ge=2)
    m_per_class: int = Field(default=32, ge=1)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(default=2e-3, gt=0)
    weight_decay: float = Field(default=5e-4, ge=0)
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    warmup_fraction: float = Field(default=0.15, ge=0, le=0.5)
    # Pretrained trunks: the head alone for the first epochs, then the trunk too at a lower rate.
    head_only_epochs: int = Field(default=0, ge=0, description="epochs that train the head with the trunk frozen")
    trunk_lr_factor: float = Field(default=1.0, gt=0, le=1, description="the trunk's learning rate, as a fraction "
                                   "of lr")
    threads: int = Field(default=0, ge=0, description="torch threads (0 = torch default)")
    max_steps: int = Field(default=0, ge=0, description="stop after this many steps (0 = no limit)")


class EvalConfig(_Section):
    pairs: int = Field(default=100_000, ge=100, description="pairs per class balance for pair metrics")
    batch_size: int = Field(default=1024, ge=1)
    near_duplicates: int = Field(default=1000, ge=1, description="originals edited for near-duplicate R@1 (test)")
    val_near_duplicates: int = Field(default=200, ge=0, description="the same on validation, every epoch (0 = off)")
    near_duplicate_false_positives: float = Field(
        default=0.01, gt=0, lt=1, description="the share of originals whose nearest other image the 'same image' "
        "threshold may call a copy: each validation image against the validation and training images")


class TrainConfig(_Section):
    name: str = "likeness"
    version: str = "0.1.0"
    seed: int = 0
    output_dir: str = "runs/{name}"
    # Fine-tuning: start from this checkpoint's weights (network and objective proxies, which must
    # fit this config's model and objective) with a fresh optimiser and schedule. A recipe longer
    # than one sitting can then be trained in stages that each end on their own schedule.
    init_from: str | None = Field(default=None, description="checkpoint whose weights this run starts from")
    data: DataConfig = Field(default_factory=DataConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir.format(name=self.name, seed=self.seed))


def resolve_config_path(path: str | Path) -> Path:
    """Accept a file path or the bare name of a shipped config (``default`` -> configs/default.toml)."""
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    shipped = CONFIG_DIR / f"{candidate.stem}.toml"
    if shipped.is_file() and candidate.parent == Path("."):
        return shipped
    known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.toml")))
    raise ConfigError(f"config {path!r} not found (shipped configs: {known})")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    raw = _read_config(resolve_config_path(path)) if path is not None else {}
    for item in overrides or []:
        _apply_override(raw, item)
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as error:  # one line per wrong setting, not pydantic's multi-line report
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise ConfigError(f"invalid config: {problems}") from None


def _read_config(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file's table; ``extends = "other"`` at its top starts from that config (a name or a
    path, resolved like ``--config``), and this file's keys replace the other's, key by key."""
    if path.resolve() in seen:
        raise ConfigError(f"config {path} extends itself (via {' -> '.join(str(p) for p in seen)})")
    try:
        with path.open("rb") as handle:
            raw = tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config {path} is not valid TOML: {error}") from None
    base = raw.pop("extends", None)
    if base is None:
        return raw
    beside = path.parent / str(base)  # a path is taken relative to the extending file first
    merged = _read_config(beside if beside.is_file() else resolve_config_path(base), (*seen, path.resolve()))
    _merge(merged, raw)
    return merged


def _merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply ``a.b=value`` where value is TOML (``3``, ``"x"``, ``[16, 32]``) or a bare string."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like section.key=value")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a section")
    node[parts[-1]] = value


def config_to_toml(config: TrainConfig) -> str:
    """Serialise a config back to TOML so every run directory records exactly what ran."""
    lines: list[str] = []
    data = config.model_dump()
    for key, value in data.items():
        if not isinstance(value, dict) and value is not None:
            lines.append(f"{key} = {_toml_value(value)}")
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"\n[{key}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in value.items() if v is not None)
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")
