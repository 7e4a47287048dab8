"""Production behaviour over HTTP: API key, request ids, timeouts, filters, batching, JSON logs."""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.batching import DynamicBatcher
from service.model_runner import ModelRunner
from service.observability import JsonFormatter, request_id_var
from tests.conftest import DEFAULT_MODEL, GALLERY, png_bytes
from tests.service.conftest import make_settings

IMAGE = png_bytes(np.random.default_rng(0).integers(0, 255, (28, 28), dtype=np.uint8))


def cuda_driver_present() -> bool:
    """Is an NVIDIA driver loadable (where the CPU-only assertions below do not hold)?"""
    try:
        ctypes.CDLL("libcuda.so.1")
        return True
    except OSError:
        return False


@pytest.mark.parametrize("for_reads", [False, True])
def test_api_key_guards_writes_and_optionally_reads(tmp_path, for_reads):
    settings = make_settings(tmp_path, seed_gallery=False, api_key="s3cret-key", api_key_for_reads=for_reads)
    with TestClient(create_app(settings)) as client:
        add = {"files": {"image": ("a.png", IMAGE)}, "data": {"id": "a"}}
        missing = client.post("/items", **add)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        wrong = client.post("/items", headers={"X-API-Key": "s3cret-kez"}, **add)
        assert wrong.status_code == 403
        for response in (missing, wrong):  # nothing about the key leaks
            assert "s3cret" not in response.text and response.json()["code"] in ("unauthorized", "forbidden")
        assert client.post("/items", headers={"X-API-Key": "s3cret-key"}, **add).status_code == 201
        assert client.delete("/items/a").status_code == 401
        assert client.delete("/items/a", headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
        search = client.post("/search", files={"image": ("q.png", IMAGE)})
        assert search.status_code == (401 if for_reads else 200)
        assert client.get("/model").status_code == (401 if for_reads else 200)
        assert client.post("/search", files={"image": ("q.png", IMAGE)},
                           headers={"X-API-Key": "s3cret-key"}).status_code == 200
        # Probes never need the key.
        assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200


def test_request_id_is_echoed_or_made(client):
    given = client.get("/readyz", headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = client.get("/readyz")
    assert len(made.headers["x-request-id"]) == 32
    hostile = client.get("/readyz", headers={"X-Request-ID": "x" * 500})
    assert hostile.headers["x-request-id"] != "x" * 500
    error = client.post("/search", files={"image": ("e.png", b"")}, headers={"X-Request-ID": "err-1"})
    assert error.status_code == 422 and error.headers["x-request-id"] == "err-1"


def test_request_timeout_is_a_408_naming_the_limit(tmp_path):
    settings = make_settings(tmp_path, seed_gallery=False, request_timeout_s=1e-6)
    with TestClient(create_app(settings)) as client:
        response = client.post("/search", files={"image": ("q.png", IMAGE)})
        assert response.status_code == 408
        assert response.json()["code"] == "request_timeout" and "LIKENESS_REQUEST_TIMEOUT_S" in response.json()["detail"]


def test_metadata_filter_over_http(client, gallery_manifest):
    entry = next(e for e in gallery_manifest if e["metadata"]["class"] == "bag")
    image = (GALLERY / entry["file"]).read_bytes()
    for label in ("8", "0"):
        response = client.post("/search", files={"image": ("q.png", image)}, data={"k": "10", "filter": json.dumps({"label": label})})
        results = response.json()["results"]
        assert response.status_code == 200 and len(results) == 10
        assert all(r["metadata"]["label"] == label for r in results)
    assert client.post("/search", files={"image": ("q.png", image)},
                       data={"filter": '{"label": "8"}'}).json()["results"][0]["id"] == entry["id"]
    bad = client.post("/search", files={"image": ("q.png", image)}, data={"filter": '{"label": ["8"]}'})
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_filter"


def test_dynamic_batcher_groups_requests_and_returns_each_its_own_rows():
    runner = ModelRunner(DEFAULT_MODEL, device="cpu")
    spec = runner.spec.input
    rng = np.random.default_rng(3)
    requests = [rng.integers(0, 256, (int(n), spec.height, spec.width, spec.channels), dtype=np.uint8)
                for n in rng.integers(1, 5, 40)]
    calls: list[tuple[int, bool]] = []

    def counting_run(images, parallel=True):
        calls.append((len(images), parallel))
        return runner.embed(images, parallel=parallel)

    async def scenario(batches):
        batcher = DynamicBatcher(counting_run, max_batch=16, max_wait_s=0.01)
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.embed(r) for r in batches))
        finally:
            await batcher.stop()

    results = asyncio.run(scenario(requests))
    sizes = [n for n, _ in calls]
    assert max(sizes) <= 16 and sum(sizes) == sum(len(r) for r in requests)
    assert len(calls) < len(requests) / 2  # requests really were grouped
    # A batch merged from several requests (a busy server) stays on one ONNX Runtime thread; each
    # request here holds at most 4 images, so a larger batch is a merged one.
    assert all(not parallel for n, parallel in calls if n > 4) and any(n > 4 for n in sizes)
    calls.clear()
    asyncio.run(scenario([requests[0][:1].repeat(10, axis=0)]))  # one request alone may use every thread
    assert calls == [(10, True)]
    for images, out in zip(requests, results):
        np.testing.assert_allclose(out.embedding, runner.embed(images).embedding, atol=1e-5)


def test_concurrent_http_requests_share_batches(tmp_path):
    import concurrent.futures

    settings = make_settings(tmp_path, seed_gallery=False, batch_max_wait_ms=20)
    with TestClient(create_app(settings)) as client:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda _: client.post("/embed", files={"image": ("a.png", IMAGE)}).status_code,
                                  range(32)))
        assert codes == [200] * 32
        metrics = client.get("/metrics").text
    count = float(next(line.split()[-1] for line in metrics.splitlines()
                       if line.startswith("likeness_inference_batch_size_count")))
    assert count < 32  # fewer inference calls than requests


def test_json_log_lines_carry_the_request_id():
    record = logging.LogRecord("likeness", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    token = request_id_var.set("rid-9")
    try:
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)
    assert line["message"] == "hello world" and line["request_id"] == "rid-9" and line["level"] == "INFO"


@pytest.mark.skipif(cuda_driver_present(),
                    reason="tests the machine-without-CUDA path; this machine has an NVIDIA driver")
def test_cuda_requested_without_cuda_fails_unless_fallback_is_allowed(tmp_path):
    from service.model_runner import ModelLoadError

    with pytest.raises(ModelLoadError, match="LIKENESS_ALLOW_CPU_FALLBACK"):
        ModelRunner(DEFAULT_MODEL, device="cuda")
    runner = ModelRunner(DEFAULT_MODEL, device="cuda", allow_cpu_fallback=True)
    assert runner.provider.active == "CPUExecutionProvider" and runner.provider.requested == "cuda"
    assert runner.provider.reason  # says why CUDA was not used


def test_a_model_without_a_spec_is_refused_with_one_line(tmp_path):
    import onnx

    from service.model_runner import ModelLoadError

    model = onnx.load(str(DEFAULT_MODEL))
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    with pytest.raises(ModelLoadError) as error:
        ModelRunner(bare, device="cpu")
    assert "likeness.spec" in str(error.value) and "\n" not in str(error.value)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="not a loadable ONNX model"):
        ModelRunner(junk, device="cpu")
