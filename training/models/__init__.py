from training.models.backbone import Backbone
from training.models.embedding import ConditionalMasks, EmbeddingModel, build_model

__all__ = ["Backbone", "ConditionalMasks", "EmbeddingModel", "build_model"]
