"""Response schemas: what the OpenAPI docs show and what every route returns."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorResponse(BaseModel):
    detail: str = Field(description="what was wrong, naming the field and the limit")
    code: str = Field(description="short machine-readable code, e.g. not_an_image, k_out_of_range")
    field: str | None = Field(default=None, description="the request field at fault, when there is one")


class ModelRef(BaseModel):
    name: str
    version: str


class SimilarityResponse(BaseModel):
    score: float = Field(description="cosine similarity in [-1, 1] (of the aspect's subspace when aspect is set)")
    probability: float = Field(description="calibrated P(same), fitted on validation pairs with equal priors")
    same: bool = Field(description="score >= threshold: the same kind of thing (class, or the aspect's value)")
    threshold: float
    near_duplicate: bool | None = Field(
        default=None, description="score >= near_duplicate_threshold: the same image after light edits (re-encoding, "
                                  "rescaling, a small crop or shift, brightness); null for aspects and for models "
                                  "without the threshold")
    near_duplicate_threshold: float | None = Field(
        default=None, description="the model's 'same image' cosine, fitted on edited validation images; pass it as "
                                  "/search's min_score to find copies of an image")
    aspect: str | None = Field(default=None, description="the aspect this decision is about, or null for overall")
    aspects: dict[str, float] = Field(default_factory=dict, description="cosine per aspect, for models with aspects")
    model: ModelRef


UNREADABLE = ("set only for an item stored by an older version with metadata that cannot be returned as "
              "stored; metadata is then null: delete or re-add the item")


class SearchHit(BaseModel):
    id: str
    score: float
    metadata: dict[str, Any] | None
    error: str | None = Field(default=None, description=UNREADABLE)


class SearchResponse(BaseModel):
    results: list[SearchHit] = Field(description="best first")
    aspect: str | None = None
    model: ModelRef


class ItemsAdded(BaseModel):
    added: int
    ids: list[str]


class ItemResponse(BaseModel):
    id: str
    metadata: dict[str, Any] | None
    created: float = Field(description="unix time")
    updated: float = Field(description="unix time")
    error: str | None = Field(default=None, description=UNREADABLE)


class ItemPage(BaseModel):
    items: list[ItemResponse]
    next: str | None = Field(description="cursor for the next page (pass as `after`), null on the last page")


class Deleted(BaseModel):
    deleted: str


class EmbedResponse(BaseModel):
    embeddings: list[list[float]] = Field(description="L2-normalised, one per image, in request order")
    aspect_embeddings: list[dict[str, list[float]]] | None = None
    dim: int
    model: ModelRef


class ReadyResponse(BaseModel):
    status: str
    provider: str
    device: str
    index_items: int


class ModelResponse(BaseModel):
    spec: dict[str, Any]
    provider: dict[str, str]
    index: dict[str, Any]
    limits: dict[str, Any] = Field(description="the request limits this server enforces")
