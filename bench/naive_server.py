"""The baseline for bench/serving.py: a similarity server written the way the Siamese tutorial would.

PyTorch eager, one image per forward pass, synchronous handlers, brute-force NumPy search over an
in-memory matrix; no ONNX Runtime, no batching, no FAISS. The network has the served model's
architecture (built from its spec) with untrained weights: speed does not depend on the weights.

With ``--runtime onnx`` it is instead the plain app of issue 21: the same handlers with one ONNX
Runtime call per image (the served model, intra-op spinning off), the floor a FastAPI service
doing this work can reach.

    python -m bench.naive_server --model models/default.onnx --items 10000 --port 8100 [--runtime onnx]
"""

from __future__ import annotations

import argparse
import io

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, File, Form, UploadFile
from PIL import Image

from contract import EMBEDDING_OUTPUT, IMAGES_INPUT, ModelSpec
from training.config import ModelConfig
from training.models import build_model


def make_app(model_path: str, items: int, runtime: str = "torch") -> FastAPI:
    import onnx

    spec = ModelSpec.from_metadata({p.key: p.value for p in onnx.load(model_path).metadata_props})
    if runtime == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])

        def model(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(session.run([EMBEDDING_OUTPUT], {IMAGES_INPUT: x.numpy()})[0])
    else:
        config = ModelConfig.model_validate(spec.training.backbone)
        model = build_model(config, spec.input.channels, [0.5] * spec.input.channels, [0.25] * spec.input.channels,
                            aspects=len(spec.aspects)).eval()
    # The network's own width: an export-time pixel subspace (spec.training.pixel_pca) is not part
    # of the rebuilt architecture, and a one-matrix projection does not change what this measures.
    dim = spec.embedding_dim if runtime == "onnx" else model.embedding_dim
    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((items, dim)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    mode = "L" if spec.input.channels == 1 else "RGB"

    def embed(data: bytes) -> np.ndarray:
        image = Image.open(io.BytesIO(data)).convert(mode).resize((spec.input.width, spec.input.height))
        x = torch.from_numpy(np.asarray(image, dtype=np.uint8).reshape(1, spec.input.height, spec.input.width, -1))
        with torch.no_grad():
            out = model(x)
        return (out[0] if isinstance(out, tuple) else out)[0].numpy()

    app = FastAPI()

    @app.post("/similarity")
    def similarity(image_a: UploadFile = File(...), image_b: UploadFile = File(...)) -> dict:
        a, b = embed(image_a.file.read()), embed(image_b.file.read())
        return {"score": float(a @ b)}

    @app.post("/search")
    def search(image: UploadFile = File(...), k: int = Form(10)) -> dict:
        scores = gallery @ embed(image.file.read())
        top = np.argsort(-scores)[:k]
        return {"results": [{"id": str(i), "score": float(scores[i])} for i in top]}

    @app.get("/readyz")
    def ready() -> dict:
        return {"status": "ready"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--runtime", choices=["torch", "onnx"], default="torch")
    args = parser.parse_args()
    uvicorn.run(make_app(args.model, args.items, args.runtime), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
