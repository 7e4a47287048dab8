"""The contract between training and service, defined once.

Training writes models that obey it; the service reads models through it. Nothing here
imports torch or onnxruntime, so both sides can depend on it.

- ONNX input ``images``: uint8 [N, H, W, C], already prepared by :func:`prepare_image`.
  Normalisation happens inside the graph, so the service cannot drift from training.
- ONNX output ``embedding``: float32 [N, D], L2-normalised; similarity is the cosine.
- ONNX output ``aspect_embeddings`` (conditional models only): float32 [N, A, D], one masked,
  L2-normalised embedding per aspect, in the order of ``ModelSpec.aspects``.
- A JSON :class:`ModelSpec` stored under ``SPEC_METADATA_KEY`` in the ONNX ``metadata_props``.
"""

from contract.images import (
    ACCEPTED_FORMATS,
    IMAGE_FILE_SUFFIXES,
    ImageError,
    decode_image,
    load_image,
    load_image_file,
    open_image,
    prepare_image,
)
from contract.spec import (
    ASPECTS_OUTPUT,
    EMBEDDING_OUTPUT,
    IMAGES_INPUT,
    SPEC_METADATA_KEY,
    Calibration,
    Decision,
    InputSpec,
    ModelSpec,
    SizedThreshold,
    SpecError,
    same_image_scores,
    threshold_for_items,
)

__all__ = [
    "ACCEPTED_FORMATS",
    "IMAGE_FILE_SUFFIXES",
    "ASPECTS_OUTPUT",
    "EMBEDDING_OUTPUT",
    "IMAGES_INPUT",
    "SPEC_METADATA_KEY",
    "Calibration",
    "Decision",
    "ImageError",
    "InputSpec",
    "ModelSpec",
    "SizedThreshold",
    "SpecError",
    "decode_image",
    "load_image",
    "load_image_file",
    "open_image",
    "prepare_image",
    "same_image_scores",
    "threshold_for_items",
]
