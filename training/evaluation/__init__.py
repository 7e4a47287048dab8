from training.evaluation.calibration import expected_calibration_error, fit_calibration, fit_decision
from training.evaluation.embed import Embedder, embed_all, onnx_embedder, torch_embedder
from training.evaluation.report import evaluate_embeddings, pair_metrics
from training.evaluation.retrieval import retrieval_metrics
from training.evaluation.verification import cosine_scores, sample_pairs, verification_metrics

__all__ = [
    "Embedder",
    "cosine_scores",
    "embed_all",
    "evaluate_embeddings",
    "expected_calibration_error",
    "fit_calibration",
    "fit_decision",
    "onnx_embedder",
    "pair_metrics",
    "retrieval_metrics",
    "sample_pairs",
    "torch_embedder",
    "verification_metrics",
]
