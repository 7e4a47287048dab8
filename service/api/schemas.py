"""Response schemas: what the OpenAPI docs show and what every route returns."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ErrorResponse(BaseModel):
    detail: str = Field(description="what was wrong, naming the field and the limit")
    code: str = Field(description="short machine-readable code, e.g. not_an_image, k_out_of_range")
    field: str | None = Field(default=None, description="the request field at fault, when there is one")


class ModelRef(BaseModel):
    name: str
    version: str


SAME_IMAGE_THRESHOLD = ("the same-image threshold the answer was decided at: the model's, for a catalogue of the "
                        "index's size (a larger one holds nearer look-alikes), fitted for a 1% false-positive rate "
                        "against each validation image's nearest other image; null when not decided")


class SimilarityResponse(BaseModel):
    score: float = Field(description="cosine similarity in [-1, 1] (of the aspect's subspace when aspect is set)")
    probability: float = Field(description="calibrated P(same), fitted on validation pairs with equal priors")
    same: bool = Field(description="score >= threshold: the same kind of thing (class, or the aspect's value)")
    threshold: float
    near_duplicate: bool | None = Field(
        default=None, description="near_duplicate_score >= near_duplicate_threshold: the same image, after the "
                                  "edits a copy meets (re-encoding, rescaling, crops, borders, small rotations, "
                                  "overlays, a mirror); null for aspects and for models without the decision")
    near_duplicate_score: float | None = Field(
        default=None, description="the model's same-image score: the cosine of its instance subspace (the whole "
                                  "embedding for models before 4.0)")
    near_duplicate_threshold: float | None = Field(default=None, description=SAME_IMAGE_THRESHOLD)
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
    near_duplicate: bool | None = Field(
        default=None, description="the hit is the same image as the query (overall searches with a model that has "
                                  "the decision); such hits come first")
    near_duplicate_score: float | None = Field(default=None, description="the hit's same-image score")


class SearchResponse(BaseModel):
    results: list[SearchHit] = Field(description="best first")
    near_duplicate_threshold: float | None = Field(default=None, description=SAME_IMAGE_THRESHOLD)
    aspect: str | None = None
    model: ModelRef


class BatchSearchResponse(BaseModel):
    results: list[list[SearchHit]] = Field(description="one list per query image, in request order, each best first")
    near_duplicate_threshold: float | None = Field(default=None, description=SAME_IMAGE_THRESHOLD)
    aspect: str | None = None
    model: ModelRef


# JSON request bodies (Content-Type: application/json), the shape vector-service clients send.
# Unknown fields are refused, so a misspelt "top_k" is a 422 rather than silently k=10.
BASE64 = "base64 of the image file (standard alphabet; a data:...;base64, prefix and line breaks are allowed)"
MIN_SCORE = "drop hits scoring below this cosine"
MODEL = ("answer with this model's generation of the index ('name' or 'name version'), while the index has more "
         "than one (likeness index migrate); default: the one served")
FILTER = 'only items whose metadata equals each field, e.g. {"label": "3"}'


class JsonRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class SimilarityRequest(JsonRequest):
    image_a: str = Field(description=BASE64)
    image_b: str = Field(description=BASE64)
    aspect: str | None = Field(default=None, description="decide on this aspect instead of overall")
    model: str | None = Field(default=None, description=MODEL)


class SearchRequest(JsonRequest):
    """Exactly one query: ``image``, ``id`` or ``vector``."""

    image: str | None = Field(default=None, description=BASE64)
    id: str | None = Field(default=None, description="search with the stored vector of this indexed item (no upload, "
                                                    "no inference); the item itself is among the results")
    vector: list[float] | None = Field(default=None, description="a query vector of the model's embedding_dim "
                                                                "(GET /model), finite; normalised by the server")
    k: int = Field(default=10, description="number of results (1..max_k)")
    aspect: str | None = Field(default=None, description="search this aspect's subspace")
    filter: dict[str, Any] | None = Field(default=None, description=FILTER)
    min_score: float | None = Field(default=None, ge=-1.0, le=1.0, description=MIN_SCORE)
    model: str | None = Field(default=None, description=MODEL)


class BatchSearchRequest(JsonRequest):
    images: list[str] = Field(min_length=1, description=f"query images (at most max_images_per_request), {BASE64}")
    k: int = Field(default=10, description="number of results per image (1..max_k)")
    aspect: str | None = Field(default=None, description="search this aspect's subspace")
    filter: dict[str, Any] | None = Field(default=None, description=FILTER)
    min_score: float | None = Field(default=None, ge=-1.0, le=1.0, description=MIN_SCORE)
    model: str | None = Field(default=None, description=MODEL)


class DuplicateGroup(BaseModel):
    ids: list[str] = Field(description="items that are the same image, in id order")
    score: float = Field(description="the weakest same-image score that joins the group (its best spanning tree)")


class DuplicatePage(BaseModel):
    groups: list[DuplicateGroup] = Field(description="best groups first")
    next: str | None = Field(description="cursor for the next page (pass as `after`), null on the last page")
    min_score: float = Field(description="the same-image score the groups were joined at")


class DismissRequest(JsonRequest):
    ids: list[str] = Field(min_length=2, max_length=2, description="two indexed items that are not the same image")


class Dismissed(BaseModel):
    dismissed: list[str]


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
    worker: int = Field(description="the process id of the API worker that answered (LIKENESS_WORKERS)")
