"""POST /similarity, /search and /embed."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, File, Form, UploadFile
from starlette.concurrency import run_in_threadpool

from service.api.deps import ServiceState, check_k, get_state, parse_filter, prepare, resolve_aspect
from service.api.forms import Utf8FormRoute
from service.api.schemas import EmbedResponse, ErrorResponse, SearchResponse, SimilarityResponse
from service.index_store import OVERALL

router = APIRouter(tags=["similarity"], route_class=Utf8FormRoute)
ERRORS = {code: {"model": ErrorResponse} for code in (401, 403, 404, 413, 422, 503)}


@router.post("/similarity", response_model=SimilarityResponse, responses=ERRORS)
async def similarity(
    image_a: Annotated[UploadFile, File(description="first image")],
    image_b: Annotated[UploadFile, File(description="second image")],
    aspect: Annotated[str | None, Form(description="decide on this aspect instead of overall")] = None,
    state: ServiceState = Depends(get_state),
) -> SimilarityResponse:
    """How alike are two images: cosine, calibrated probability and a decision at the model's threshold."""
    spec = state.runner.spec
    aspect = resolve_aspect(aspect, state)
    prepared = await prepare(state, [("image_a", image_a), ("image_b", image_b)])
    out = await state.engine.embed([p.array for p in prepared])
    aspect_scores: dict[str, float] = {}
    if out.aspects is not None:
        per_aspect = np.einsum("ad,ad->a", out.aspects[0], out.aspects[1])
        aspect_scores = {name: round(float(s), 6) for name, s in zip(spec.aspects, per_aspect)}
    near = None
    if aspect is None:
        score, decision, calibration = float(out.embedding[0] @ out.embedding[1]), spec.decision, spec.calibration
        near = spec.near_duplicate
    else:
        score = aspect_scores[aspect]
        decision = spec.aspect_decisions.get(aspect, spec.decision)
        calibration = spec.aspect_calibrations.get(aspect, spec.calibration)
    return SimilarityResponse(
        score=round(score, 6), probability=round(calibration.probability(score), 6),
        same=score >= decision.threshold, threshold=decision.threshold,
        near_duplicate=None if near is None else score >= near.threshold,
        near_duplicate_threshold=None if near is None else near.threshold,
        aspect=aspect, aspects=aspect_scores, model=state.model_ref)


@router.post("/search", response_model=SearchResponse, responses=ERRORS)
async def search(
    image: Annotated[UploadFile, File(description="query image")],
    k: Annotated[int, Form(description="number of results (1..max_k)")] = 10,
    aspect: Annotated[str | None, Form(description="search this aspect's subspace")] = None,
    filter: Annotated[str | None, Form(description='JSON object: only items whose metadata equals each field, '
                                                   'e.g. {"label": "3"}')] = None,
    min_score: Annotated[float | None, Form(description="drop hits scoring below this cosine; the model's "
                                                        "near_duplicate_threshold (GET /model, /similarity) "
                                                        "keeps only copies of the query image", ge=-1.0,
                                            le=1.0)] = None,
    state: ServiceState = Depends(get_state),
) -> SearchResponse:
    """The k most similar indexed items, best first, optionally filtered by metadata equality and a minimum score."""
    k = check_k(k, state)
    aspect = resolve_aspect(aspect, state)
    where = parse_filter(filter, state)
    prepared = await prepare(state, [("image", image)])
    out = await state.engine.embed([prepared[0].array])
    if aspect is None:
        query, space = out.embedding[0], OVERALL
    else:
        query, space = out.aspects[0, state.runner.spec.aspects.index(aspect)], aspect
    hits = await run_in_threadpool(state.store.search, query, k, space, where)
    if min_score is not None:
        hits = [h for h in hits if h.score >= min_score]
    return SearchResponse(results=[{"id": h.id, "score": round(h.score, 6), "metadata": h.metadata, "error": h.error}
                                   for h in hits],
                          aspect=aspect, model=state.model_ref)


@router.post("/embed", response_model=EmbedResponse, responses=ERRORS)
async def embed(
    image: Annotated[list[UploadFile], File(description="one or more images")],
    state: ServiceState = Depends(get_state),
) -> EmbedResponse:
    """The model's embeddings for one or more images, in request order."""
    prepared = await prepare(state, [(f"image[{i}]", f) for i, f in enumerate(image)])
    out = await state.engine.embed([p.array for p in prepared])
    aspects = None
    if out.aspects is not None:
        names = state.runner.spec.aspects
        aspects = [{name: row[a].tolist() for a, name in enumerate(names)} for row in out.aspects]
    return EmbedResponse(embeddings=out.embedding.tolist(), aspect_embeddings=aspects,
                         dim=int(out.embedding.shape[1]), model=state.model_ref)
