"""The ONNX model behind the service: provider choice, the spec, and embedding of prepared images.

Knows nothing about HTTP. Everything it needs to know about the model comes from the spec inside
the file; a file without a valid spec, or whose graph breaks the contract, is refused at startup.
"""

from __future__ import annotations

import ctypes
import logging
import os
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
CPU = "CPUExecutionProvider"
SMALL_BATCH = 2  # images per call at most for the one-thread session


class ModelLoadError(RuntimeError):
    """The model cannot be served; the message is one line saying why."""


@dataclass(frozen=True)
class ProviderReport:
    requested: str  # the device setting: auto | cpu | cuda
    active: str  # the provider the session really runs on
    reason: str  # why this provider (e.g. why CUDA was not used)

    @property
    def device(self) -> str:
        return "cuda" if self.active == CUDA else "cpu"


@dataclass
class Embeddings:
    embedding: np.ndarray  # float32 [N, D], L2-normalised
    aspects: np.ndarray | None  # float32 [N, A, D], or None for a model without aspects


def cuda_driver_present() -> bool:
    """Is an NVIDIA driver loadable? Without one, asking ONNX Runtime for CUDA only prints errors."""
    try:
        ctypes.CDLL("libcuda.so.1")
        return True
    except OSError:
        return False


def _cuda_unavailable_reason() -> str | None:
    if CUDA not in ort.get_available_providers():
        return "this onnxruntime build has no CUDA provider"
    if not cuda_driver_present():
        return "no NVIDIA driver (libcuda.so.1 not loadable)"
    return None


class ModelRunner:
    def __init__(self, path: str | Path, device: str = "auto", allow_cpu_fallback: bool = False,
                 intra_op_threads: int = 0, intra_op_spinning: bool = False) -> None:
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"model file {path} does not exist (set LIKENESS_MODEL_PATH)")
        options = _options(intra_op_threads, intra_op_spinning)
        self.session, self.provider = self._open(path, options, device, allow_cpu_fallback)
        try:
            self.spec = ModelSpec.from_metadata(self.session.get_modelmeta().custom_metadata_map, str(path))
        except SpecError as exc:
            raise ModelLoadError(str(exc)) from None
        self._check_graph(path)
        self.path = path
        # Small batches (a /search, a /similarity pair) run on a one-thread session: for a model this
        # size, handing each layer of one image to the pool's other threads and waking them costs
        # more CPU than it saves time (docs/serving.md). Larger batches get every intra-op thread.
        self._small_session = None
        if self.provider.active == CPU and intra_op_threads != 1 and (os.cpu_count() or 1) > 1:
            single = _options(1, intra_op_spinning)
            self._small_session = _session(path, single, [CPU])
        log.info("model %s %s on %s (%s)", self.spec.name, self.spec.version, self.provider.active, self.provider.reason)

    @staticmethod
    def _open(path: Path, options: ort.SessionOptions, device: str, allow_cpu_fallback: bool
              ) -> tuple[ort.InferenceSession, ProviderReport]:
        if device == "cpu":
            return _session(path, options, [CPU]), ProviderReport(device, CPU, "CPU requested (device=cpu)")
        reason = _cuda_unavailable_reason()
        if reason is None:
            # ONNX Runtime logs a failed CUDA load at error level and carries on with CPU; we check
            # what the session really got instead, and say it once ourselves.
            ort.set_default_logger_severity(4)
            try:
                session = _session(path, options, [CUDA, CPU])
            finally:
                ort.set_default_logger_severity(3)
            if session.get_providers()[0] == CUDA:
                return session, ProviderReport(device, CUDA, "CUDA provider loaded")
            reason = "CUDA provider failed to load (CUDA or cuDNN libraries missing or mismatched)"
        if device == "cuda" and not allow_cpu_fallback:
            raise ModelLoadError(f"device=cuda but {reason}; set LIKENESS_ALLOW_CPU_FALLBACK=1 to run on CPU")
        return _session(path, options, [CPU]), ProviderReport(device, CPU, reason)

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

    def embed(self, images: np.ndarray) -> Embeddings:
        """uint8 [N, H, W, C] -> embeddings. Thread-safe: ONNX Runtime sessions allow concurrent runs."""
        session = self._small_session if self._small_session is not None and len(images) <= SMALL_BATCH else \
            self.session
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


def thread_env_summary() -> str:
    return f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
