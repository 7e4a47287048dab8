"""The service on a chosen GPU: LIKENESS_DEVICE_ID and LIKENESS_PROVIDERS reach ONNX Runtime as
provider options, what the session really got is what /readyz and /model report, and a device or
provider that is not there is refused (or, when allowed, replaced by the CPU with the reason).

This machine has no GPU: ONNX Runtime's session is real (on the CPU) but answers, as a GPU session
would, with the providers it was asked for; everything up to and after that call is the real code.
"""

from __future__ import annotations

import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

import service.model_runner as runner_module
from service.app import create_app
from service.model_runner import CPU, CUDA, TENSORRT, ModelLoadError, ModelRunner
from service.settings import Settings
from tests.conftest import DEFAULT_MODEL
from tests.service.conftest import make_settings


class GpuLikeSession:
    """A real CPU session that reports the providers a GPU session registered (``loads``: which of
    the requested ones 'loaded' on this pretend machine)."""

    def __init__(self, real: ort.InferenceSession, requested: list, loads: set[str]) -> None:
        self.real = real
        self.registered = [p for p in requested if (p if isinstance(p, str) else p[0]) in loads | {CPU}]

    def get_providers(self) -> list[str]:
        return [p if isinstance(p, str) else p[0] for p in self.registered]

    def get_provider_options(self) -> dict[str, dict[str, str]]:
        return {p[0]: dict(p[1]) for p in self.registered if not isinstance(p, str)}

    def __getattr__(self, name):
        return getattr(self.real, name)


@pytest.fixture
def gpu_machine(monkeypatch):
    """Two visible GPUs and an onnxruntime with TensorRT and CUDA; returns the provider lists asked for
    and the set of providers that load (edit it to make one fail)."""
    asked: list[list] = []
    loads = {CUDA, TENSORRT}
    real_session = runner_module._session

    def session(path, options, providers):
        asked.append(providers)
        real = real_session(path, options, [CPU])
        return real if providers == [CPU] else GpuLikeSession(real, providers, loads)

    monkeypatch.setattr(runner_module, "_session", session)
    monkeypatch.setattr(runner_module, "cuda_devices", lambda: ["Test GPU 0", "Test GPU 1"])
    monkeypatch.setattr(ort, "get_available_providers", lambda: [TENSORRT, CUDA, CPU])
    return asked, loads


def test_the_cuda_provider_runs_on_the_device_id_asked_for(gpu_machine):
    asked, _ = gpu_machine
    runner = ModelRunner(DEFAULT_MODEL, device="cuda", device_id=1)
    assert asked[-1] == [(CUDA, {"device_id": "1"}), CPU]
    assert runner.provider.active == CUDA and runner.provider.device == "cuda:1"
    assert runner.provider.reason == "cuda provider loaded on cuda:1, Test GPU 1"
    assert runner.embed(runner.prepare(_png(), 10_000)[None]).embedding.shape == (1, runner.spec.embedding_dim)


def test_tensorrt_first_when_asked_with_one_engine_for_every_batch_size(gpu_machine, tmp_path):
    asked, _ = gpu_machine
    runner = ModelRunner(DEFAULT_MODEL, device="cuda", device_id=0, providers=["tensorrt", "cuda"], max_batch=64,
                         cache_dir=tmp_path / "engines")
    (trt, trt_options), (cuda, cuda_options), cpu = asked[-1]
    assert (trt, cuda, cpu) == (TENSORRT, CUDA, CPU) and cuda_options == {"device_id": "0"}
    spec = runner.spec.input
    shape = f"{spec.height}x{spec.width}x{spec.channels}"
    assert trt_options["device_id"] == "0" and trt_options["trt_fp16_enable"] == "False"
    assert trt_options["trt_profile_min_shapes"] == f"images:1x{shape}"
    assert trt_options["trt_profile_max_shapes"] == f"images:64x{shape}"
    assert trt_options["trt_engine_cache_path"] == str(tmp_path / "engines") and (tmp_path / "engines").is_dir()
    assert runner.provider.active == TENSORRT and runner.provider.device == "cuda:0"
    # More images than the engine takes are embedded in parts, in order.
    images = __import__("numpy").repeat(runner.prepare(_png(), 10_000)[None], 130, axis=0)
    assert runner.embed(images).embedding.shape == (130, runner.spec.embedding_dim)


def test_a_provider_that_does_not_load_is_named_and_the_next_one_used(gpu_machine):
    _, loads = gpu_machine
    loads.discard(TENSORRT)  # e.g. libnvinfer missing
    runner = ModelRunner(DEFAULT_MODEL, device="cuda", providers=["tensorrt", "cuda"])
    assert runner.provider.active == CUDA and runner.provider.reason.endswith("(tensorrt did not load)")
    loads.discard(CUDA)
    with pytest.raises(ModelLoadError, match=r"the tensorrt and cuda providers failed to load on cuda:0"):
        ModelRunner(DEFAULT_MODEL, device="cuda", providers=["tensorrt", "cuda"])


def test_a_device_id_past_the_visible_gpus_is_refused_or_replaced_by_the_cpu_with_its_reason(gpu_machine):
    with pytest.raises(ModelLoadError) as error:
        ModelRunner(DEFAULT_MODEL, device="cuda", device_id=2)
    assert str(error.value) == ("device=cuda but LIKENESS_DEVICE_ID=2 but this process sees 2 CUDA devices; "
                                "set LIKENESS_ALLOW_CPU_FALLBACK=1 to run on CPU")
    runner = ModelRunner(DEFAULT_MODEL, device="auto", device_id=2)
    assert runner.provider.active == CPU and runner.provider.device == "cpu"
    assert "LIKENESS_DEVICE_ID=2" in runner.provider.reason


def test_readyz_and_model_report_the_provider_and_device_really_obtained(gpu_machine, tmp_path):
    settings = make_settings(tmp_path, device="cuda", device_id=1, providers="tensorrt,cuda", seed_gallery=False)
    with TestClient(create_app(settings)) as client:
        ready = client.get("/readyz").json()
        assert (ready["provider"], ready["device"]) == (TENSORRT, "cuda:1")
        provider = client.get("/model").json()["provider"]
        assert provider == {"requested": "cuda", "active": TENSORRT, "device": "cuda:1",
                            "reason": "tensorrt provider loaded on cuda:1, Test GPU 1"}
    # The engines are kept beside the index, so a restart does not build them again.
    assert (tmp_path / "data" / "tensorrt-cache").is_dir()


def test_provider_settings_are_checked_where_they_are_read(monkeypatch):
    monkeypatch.setenv("LIKENESS_PROVIDERS", " TensorRT , cuda ")
    monkeypatch.setenv("LIKENESS_DEVICE_ID", "3")
    settings = Settings()
    assert settings.provider_order == ["tensorrt", "cuda"] and settings.device_id == 3
    assert Settings(providers="cuda").provider_order == ["cuda"]
    for bad in ("cpu", "cuda,cuda", "", "rocm"):
        with pytest.raises(ValidationError, match="LIKENESS_PROVIDERS"):
            Settings(providers=bad)
    with pytest.raises(ValidationError, match="device_id"):
        Settings(device_id=-1)


def _png() -> bytes:
    import numpy as np

    from tests.conftest import png_bytes

    return png_bytes(np.full((28, 28), 128, np.uint8))


def test_small_or_merged_batches_run_on_the_one_thread_session_on_a_cpu(monkeypatch):
    """A /search or /similarity (1-2 images) and any batch the batcher merged from several requests
    (``parallel=False``) run on one thread; only a larger lone batch gets ONNX Runtime's whole pool."""
    import numpy as np

    monkeypatch.setattr(runner_module.os, "cpu_count", lambda: 4)
    runner = ModelRunner(DEFAULT_MODEL, device="cpu")
    used: list[str] = []
    for name in ("session", "_small_session"):
        session = getattr(runner, name)
        monkeypatch.setattr(runner, name, type("Spy", (), {
            "run": lambda self, outputs, feed, _s=session, _n=name: used.append(_n) or _s.run(outputs, feed)})())
    images = np.repeat(runner.prepare(_png(), 10_000)[None], 8, axis=0)
    runner.embed(images[:2])
    runner.embed(images, parallel=False)
    runner.embed(images)
    assert used == ["_small_session", "_small_session", "session"]
