"""The ONNX model behind the service: provider choice, the spec, and embedding of prepared images.

On a GPU it runs on one CUDA device (``LIKENESS_DEVICE_ID``) with the first of the GPU providers
(``LIKENESS_PROVIDERS``: TensorRT, CUDA) that really loads there, and reports what it got.

Knows nothing about HTTP. Everything it needs to know about the model comes from the spec inside
the file; a file without a valid spec, or whose graph breaks the contract, is refused at startup.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from contract import (
    ASPECTS_OUTPUT,
    EMBEDDING_OUTPUT,
    IMAGES_INPUT,
    ModelSpec,
    SpecError,
    decode_image,
    prepare_image,
)

log = logging.getLogger("likeness.model")

CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
CPU = "CPUExecutionProvider"
SMALL_BATCH = 2  # images per call at most for the one-thread session
GPU_PROVIDERS = {"tensorrt": TENSORRT, "cuda": CUDA}


class ModelLoadError(RuntimeError):
    """The model cannot be served; the message is one line saying why."""


@dataclass(frozen=True)
class ProviderReport:
    requested: str  # the device setting: auto | cpu | cuda
    active: str  # the provider the session really runs on
    reason: str  # why this provider (e.g. why CUDA was not used)
    device_id: int = 0  # the CUDA device a GPU provider runs on

    @property
    def device(self) -> str:
        return f"cuda:{self.device_id}" if self.active in GPU_PROVIDERS.values() else "cpu"


@dataclass
class Embeddings:
    embedding: np.ndarray  # float32 [N, D], L2-normalised
    aspects: np.ndarray | None  # float32 [N, A, D], or None for a model without aspects


def cuda_devices() -> list[str] | None:
    """The names of the CUDA devices this process sees (after CUDA_VISIBLE_DEVICES), from the driver;
    None without a driver."""
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    count = ctypes.c_int(0)
    if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return []
    names = []
    for ordinal in range(count.value):
        handle, name = ctypes.c_int(0), ctypes.create_string_buffer(256)
        ok = driver.cuDeviceGet(ctypes.byref(handle), ordinal) == 0 and driver.cuDeviceGetName(name, 256, handle) == 0
        names.append(name.value.decode(errors="replace") if ok else f"CUDA device {ordinal}")
    return names


def _gpu_unavailable_reason(order: list[str], device_id: int) -> str | None:
    """Why no GPU provider of ``order`` can run on CUDA device ``device_id``, or None."""
    if not any(GPU_PROVIDERS[name] in ort.get_available_providers() for name in order):
        if order == ["cuda"]:
            return "this onnxruntime build has no CUDA provider"
        return f"this onnxruntime build has none of the providers in LIKENESS_PROVIDERS ({', '.join(order)})"
    devices = cuda_devices()
    if devices is None:
        return "no NVIDIA driver (libcuda.so.1 not loadable)"
    if device_id >= len(devices):
        return (f"LIKENESS_DEVICE_ID={device_id} but this process sees {len(devices)} CUDA "
                f"device{'s' if len(devices) != 1 else ''}")
    return None


class ModelRunner:
    def __init__(self, path: str | Path, device: str = "auto", allow_cpu_fallback: bool = False,
                 intra_op_threads: int = 0, intra_op_spinning: bool = False, device_id: int = 0,
                 providers: Sequence[str] = ("cuda",), max_batch: int = 64, cache_dir: Path | None = None) -> None:
        """``providers``: the GPU providers to try on CUDA device ``device_id``, in order (``tensorrt``,
        ``cuda``); ``max_batch``: the most images one call embeds (TensorRT builds its engine for 1 to
        that many; larger calls are split); ``cache_dir``: where TensorRT keeps built engines."""
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"model file {path} does not exist (set LIKENESS_MODEL_PATH)")
        options = _options(intra_op_threads, intra_op_spinning)
        self.max_batch = max_batch
        self.session, self.provider = self._open(path, options, device, allow_cpu_fallback, device_id,
                                                 list(providers), cache_dir)
        self.spec = _read_spec(self.session, path)
        self._check_graph(path)
        self.path = path
        # Small batches (a /search, a /similarity pair) run on a one-thread session: for a model this
        # size, handing each layer of one image to the pool's other threads and waking them costs
        # more CPU than it saves time (docs/serving.md). Larger batches get every intra-op thread.
        self._small_session = None
        if self.provider.active == CPU and intra_op_threads != 1 and (os.cpu_count() or 1) > 1:
            single = _options(1, intra_op_spinning)
            self._small_session = _session(path, single, [CPU])
        log.info("model %s %s on %s, %s (%s)", self.spec.name, self.spec.version, self.provider.active,
                 self.provider.device, self.provider.reason)

    def _open(self, path: Path, options: ort.SessionOptions, device: str, allow_cpu_fallback: bool,
              device_id: int, order: list[str], cache_dir: Path | None) -> tuple[ort.InferenceSession, ProviderReport]:
        if device == "cpu":
            return _session(path, options, [CPU]), ProviderReport(device, CPU, "CPU requested (device=cpu)")
        reason = _gpu_unavailable_reason(order, device_id)
        if reason is None:
            chain = self._gpu_providers(path, options, order, device_id, cache_dir)
            # ONNX Runtime logs a failed GPU load at error level and carries on with the next provider;
            # we check what the session really got instead, and say it once ourselves.
            ort.set_default_logger_severity(4)
            try:
                session = _session(path, options, chain)
            finally:
                ort.set_default_logger_severity(3)
            active = session.get_providers()[0]
            if active != CPU:
                got = int(session.get_provider_options().get(active, {}).get("device_id", device_id))
                names = cuda_devices() or []
                name = names[got] if got < len(names) else "unknown GPU"
                skipped = order[:order.index(_short(active))] if _short(active) in order else []
                why = f" ({', '.join(skipped)} did not load)" if skipped else ""
                return session, ProviderReport(device, active, f"{_short(active)} provider loaded on cuda:{got}, "
                                                               f"{name}{why}", got)
            reason = (f"the {' and '.join(order)} provider{'s' if len(order) > 1 else ''} failed to load on "
                      f"cuda:{device_id} (CUDA, cuDNN or TensorRT libraries missing or mismatched)")
        if device == "cuda" and not allow_cpu_fallback:
            raise ModelLoadError(f"device=cuda but {reason}; set LIKENESS_ALLOW_CPU_FALLBACK=1 to run on CPU")
        return _session(path, options, [CPU]), ProviderReport(device, CPU, reason)

    def _gpu_providers(self, path: Path, options: ort.SessionOptions, order: list[str], device_id: int,
                       cache_dir: Path | None) -> list:
        """The provider list for a GPU session: each provider of ``order`` this build has, with its
        options, then the CPU for any node none of them runs."""
        available = ort.get_available_providers()
        chain: list = []
        for name in order:
            provider = GPU_PROVIDERS[name]
            if provider not in available:
                continue
            if provider == TENSORRT:
                # The engine is built for a range of batch sizes, from the model's own input size.
                spec = _read_spec(_session(path, options, [CPU]), path).input
                chain.append((TENSORRT, _tensorrt_options(device_id, spec.height, spec.width, spec.channels,
                                                          self.max_batch, cache_dir)))
            else:
                chain.append((CUDA, {"device_id": str(device_id)}))
        return [*chain, CPU]

    def _check_graph(self, path: Path) -> None:
        inputs = self.session.get_inputs()
        outputs = {o.name for o in self.session.get_outputs()}
        spec = self.spec
        if len(inputs) != 1 or inputs[0].name != IMAGES_INPUT or inputs[0].type != "tensor(uint8)":
            raise ModelLoadError(f"{path}: the graph must take one uint8 input '{IMAGES_INPUT}'")
        shape = inputs[0].shape
        if len(shape) != 4 or shape[3] not in (spec.input.channels, None) or isinstance(shape[3], str):
            raise ModelLoadError(f"{path}: input shape {shape} does not match [N, H, W, {spec.input.channels}]")
        if EMBEDDING_OUTPUT not in outputs:
            raise ModelLoadError(f"{path}: the graph has no '{EMBEDDING_OUTPUT}' output")
        if spec.aspects and ASPECTS_OUTPUT not in outputs:
            raise ModelLoadError(f"{path}: the spec names aspects but the graph has no '{ASPECTS_OUTPUT}' output")
        self._outputs = [EMBEDDING_OUTPUT, ASPECTS_OUTPUT] if spec.aspects else [EMBEDDING_OUTPUT]

    def prepare(self, data: bytes, max_pixels: int, name: str = "image") -> np.ndarray:
        """Bytes -> the model's uint8 [H, W, C] input, through the contract. Raises contract.ImageError."""
        return prepare_image(decode_image(data, max_pixels=max_pixels, name=name), self.spec.input)

    def embed(self, images: np.ndarray, parallel: bool = True) -> Embeddings:
        """uint8 [N, H, W, C] -> embeddings. Thread-safe: ONNX Runtime sessions allow concurrent runs.

        ``parallel=False`` keeps the call on one thread whatever its size: the batcher says so when a
        batch merges several requests, since then the server is busy and the other cores have HTTP
        and decoding to do; spreading the layers over ONNX Runtime's pool would cost about a third
        more CPU per image (docs/serving.md) for a latency the waiting requests do not get back."""
        if self.provider.active == TENSORRT and len(images) > self.max_batch:
            # Past the engine's largest batch TensorRT would build another engine: run in parts.
            parts = [self.embed(images[i:i + self.max_batch]) for i in range(0, len(images), self.max_batch)]
            aspects = None if parts[0].aspects is None else np.concatenate([p.aspects for p in parts])
            return Embeddings(np.concatenate([p.embedding for p in parts]), aspects)
        one_thread = len(images) <= SMALL_BATCH or not parallel
        session = self._small_session if self._small_session is not None and one_thread else self.session
        result = session.run(self._outputs, {IMAGES_INPUT: np.ascontiguousarray(images, dtype=np.uint8)})
        return Embeddings(result[0], result[1] if len(result) > 1 else None)

    def warm_up(self) -> None:
        """One inference at startup, so the first request does not pay for lazy initialisation."""
        spec = self.spec.input
        zeros = np.zeros((SMALL_BATCH + 1, spec.height, spec.width, spec.channels), np.uint8)
        self.embed(zeros[:1])  # the one-thread session, when there is one
        self.embed(zeros)


def _options(intra_op_threads: int, spinning: bool) -> ort.SessionOptions:
    options = ort.SessionOptions()
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    # ONNX Runtime's pool threads spin-wait after each run for the next one. For this model a run
    # is about a millisecond, so between requests the spinning was most of the CPU the service
    # burned (docs/serving.md); off, a thread sleeps and is woken in microseconds.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "1" if spinning else "0")
    return options


def _session(path: Path, options: ort.SessionOptions, providers: list[str]) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors; we need one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{path}: not a loadable ONNX model ({first})") from None


def _read_spec(session: ort.InferenceSession, path: Path) -> ModelSpec:
    try:
        return ModelSpec.from_metadata(session.get_modelmeta().custom_metadata_map, str(path))
    except SpecError as exc:
        raise ModelLoadError(str(exc)) from None


def _short(provider: str) -> str:
    """CUDAExecutionProvider -> cuda (the names LIKENESS_PROVIDERS uses)."""
    return next((name for name, full in GPU_PROVIDERS.items() if full == provider), provider)


def _tensorrt_options(device_id: int, height: int, width: int, channels: int, max_batch: int,
                      cache_dir: Path | None) -> dict[str, str]:
    """TensorRT on one device, one engine for batches of 1 to ``max_batch`` (built at the first
    start, then read from ``cache_dir`` when there is one), without fp16, like the CUDA provider."""
    shape = f"{IMAGES_INPUT}:{{}}x{height}x{width}x{channels}"
    options = {"device_id": str(device_id), "trt_fp16_enable": "False",
               "trt_profile_min_shapes": shape.format(1), "trt_profile_opt_shapes": shape.format(max_batch),
               "trt_profile_max_shapes": shape.format(max_batch)}
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        options.update(trt_engine_cache_enable="True", trt_engine_cache_path=str(cache_dir),
                       trt_timing_cache_enable="True", trt_timing_cache_path=str(cache_dir))
    return options
