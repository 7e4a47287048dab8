"""Static int8 quantization of an exported graph, for serving on CPUs.

On this project's CPU the convolutions are nearly all of a request's inference time, and int8
convolutions (ONNX Runtime's QDQ kernels) take about half of float32's (docs/serving.md). The
weights are quantized per output channel, the activations per tensor with ranges read from real
images; everything else (the input's cast and normalisation, pooling, the L2 normalisation of the
output) stays float, so the contract is unchanged: uint8 images in, float unit vectors out.

The export fits thresholds and measures every number on the quantized graph itself, so a card
never reports the float graph's quality for an int8 file.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from contract import IMAGES_INPUT

CALIBRATION_IMAGES = 512
CALIBRATION_SEED = 0
CALIBRATION_BATCH = 64
QUANTIZED_OPS = ["Conv", "Gemm"]  # the work; the rest is too small to gain from int8


def calibration_sample(images: np.ndarray, count: int = CALIBRATION_IMAGES, seed: int = CALIBRATION_SEED) -> np.ndarray:
    """A seeded sample of (training) images whose activations set the int8 ranges."""
    rng = np.random.default_rng(seed)
    return images[np.sort(rng.choice(len(images), size=min(count, len(images)), replace=False))]


def quantize_int8(float_graph: str | Path, output: str | Path, calibration: np.ndarray) -> dict[str, Any]:
    """Write ``float_graph`` quantized to int8 (QDQ format) to ``output``; return what was done."""
    # Imported here: only an int8 export needs onnxruntime's quantization tools.
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class _Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter([{IMAGES_INPUT: calibration[i:i + CALIBRATION_BATCH]}
                                  for i in range(0, len(calibration), CALIBRATION_BATCH)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        # Shape inference and constant folding first, as ONNX Runtime's quantizer asks.
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(float_graph), str(prepared), skip_symbolic_shape=True)
        first = first_convolution(prepared)
        quantize_static(str(prepared), str(output), _Batches(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        op_types_to_quantize=QUANTIZED_OPS, nodes_to_exclude=[first] if first else [])
    return {"format": "int8 QDQ", "ops": QUANTIZED_OPS, "weights": "int8, per output channel",
            "activations": "uint8, per tensor, min-max ranges", "calibration_images": len(calibration),
            **({"kept_float": "the first convolution"} if first else {})}


def first_convolution(graph: Path) -> str | None:
    """The name of the convolution that reads the normalised image. It stays float: quantized, it
    took a 3-epoch Fashion-MNIST model's mean cosine to the float graph from 0.999 to 0.915 (min
    0.25), for a layer of one or three input channels that costs little either way."""
    import onnx

    return next((node.name for node in onnx.load(str(graph)).graph.node if node.op_type == "Conv"), None)


def agreement(float_embed, quantized_embed, images: np.ndarray) -> dict[str, float]:
    """Cosine between the float and the int8 graph's embedding of each image (1.0: identical)."""
    a, b = float_embed(images)[0], quantized_embed(images)[0]
    cosine = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"images": len(images), "mean_cosine": float(cosine.mean()), "min_cosine": float(cosine.min())}
