"""All service configuration, from ``LIKENESS_*`` environment variables (or a ``.env`` file)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
GPU_PROVIDER_NAMES = ("tensorrt", "cuda")  # ONNX Runtime's TensorrtExecutionProvider, CUDAExecutionProvider


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIKENESS_", env_file=".env", extra="ignore")

    # Model and device
    model_path: Path = Field(default=REPO_ROOT / "models" / "default.onnx", description="the ONNX model to serve")
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto: CUDA when it really loads, else CPU; cuda: require CUDA")
    allow_cpu_fallback: bool = Field(default=False, description="with device=cuda, start on CPU if CUDA fails")
    device_id: int = Field(default=0, ge=0, description="the CUDA device (ordinal, as this process sees them) "
                           "the GPU providers run on")
    providers: str = Field(default="cuda", description="GPU providers to try, in order: tensorrt, cuda "
                           "(comma-separated); the CPU comes last, as device and fallback allow")
    intra_op_threads: int = Field(default=0, ge=0, description="ONNX Runtime threads per inference (0 = cores)")
    intra_op_spinning: bool = Field(default=False, description="let ONNX Runtime's threads spin-wait between runs: "
                                    "a little lower latency for much more CPU per request")

    # Inference batching: concurrent requests share one ONNX Runtime call.
    batching: bool = Field(default=True, description="group concurrent requests into one inference call")
    batch_max_size: int = Field(default=64, ge=1, description="images per inference call at most")
    batch_max_wait_ms: float = Field(default=2.0, ge=0, description="how long a request waits for company")

    # Index
    index_backend: Literal["embedded", "milvus"] = Field(
        default="embedded", description="embedded: SQLite + FAISS in LIKENESS_DATA_DIR, one process; milvus: a "
        "Milvus collection at LIKENESS_MILVUS_URI (docs/scaling.md)")
    milvus_uri: str = Field(default="", description="milvus backend: http://host:19530 for a Milvus server (any "
                            "number of workers), or a file path for Milvus Lite (one process); empty: "
                            "LIKENESS_DATA_DIR/milvus.db")
    milvus_collection: str = Field(default="likeness", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,200}$",
                                   description="milvus backend: the collection that holds this index")
    milvus_token: SecretStr | None = Field(default=None, description="milvus backend: user:password or API token")
    data_dir: Path = Field(default=Path("./data"), description="where the index lives")
    keep_originals: bool = Field(default=True, description="keep each item's image bytes (LIKENESS_DATA_DIR/originals) "
                                 "so another model can embed them again (likeness index migrate); off: a model "
                                 "upgrade needs every image added again")
    seed_gallery: bool = Field(default=True, description="index the shipped demo gallery into an empty index")
    gallery_dir: Path | None = Field(default=None, description="the demo gallery: service/gallery (Fashion-MNIST) "
                                     "for a greyscale model, service/gallery-photos for a photo model")
    index_type: Literal["flat", "hnsw", "ivf"] = Field(default="flat", description="flat is exact; see docs/index.md")
    hnsw_m: int = Field(default=32, ge=4, description="HNSW links per node")
    hnsw_ef_construction: int = Field(default=80, ge=8, description="HNSW candidates kept while building")
    hnsw_ef_search: int = Field(default=128, ge=8, description="HNSW candidates kept while searching")
    ivf_nlist: int = Field(default=0, ge=0, description="0 = about 4*sqrt(n) when trained")
    ivf_nprobe: int = Field(default=32, ge=1, description="IVF lists searched per query")
    ivf_min_train: int = Field(default=10_000, ge=100, description="IVF answers exactly until this many items")
    snapshot_every: int = Field(default=5000, ge=0, description="changes between FAISS snapshots (0 = at shutdown)")
    faiss_threads: int = Field(default=1, ge=0, description="OpenMP threads per FAISS search (0 = FAISS default)")

    # Security
    api_key: SecretStr | None = Field(default=None, description="required on writes (and reads, see below) when set; "
                                      "empty (or spaces) means unset; clients send it in UTF-8")
    api_key_for_reads: bool = Field(default=False, description="require the API key on every endpoint but health")

    # Logs
    log_json: bool = Field(default=False, description="one JSON object per log line")
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR")

    # HTTP
    host: str = Field(default="127.0.0.1", description="the address likeness serve listens on (0.0.0.0: every "
                      "interface)")
    port: int = Field(default=8000, ge=1, le=65535, description="the port likeness serve listens on")
    allowed_hosts: str = Field(
        default="", description="Host header values served, comma-separated: name (any port), name:port, "
        "*.domain or * (any); empty: localhost, 127.0.0.1, [::1] and LIKENESS_HOST, each with LIKENESS_PORT. "
        "Others get 400, so a web page cannot reach the service through DNS rebinding; behind a proxy, "
        "list the names clients use")
    workers: int = Field(default=1, ge=1, le=512, description="API processes on one port, each with its own model "
                         "session and batcher; more than 1 needs the milvus backend at a server URI")

    # Limits: every one gives a 4xx that names it.
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, description="whole request body")
    max_pixels: int = Field(default=25_000_000, ge=1, description="per image, checked on the header")
    max_images_per_request: int = Field(default=64, ge=1, description="images in one request")
    max_k: int = Field(default=1000, ge=1, description="the largest k of a search")
    max_metadata_bytes: int = Field(default=4096, ge=2, description="an item's metadata, or a filter, as JSON")
    max_id_length: int = Field(default=256, ge=1, description="characters of an item id")
    max_pixels_per_request: int = Field(default=50_000_000, ge=1, description="all images of one request together, "
                                        "checked on the headers")
    request_timeout_s: float = Field(default=30.0, gt=0, description="whole request, upload included")

    @model_validator(mode="after")
    def _settings_that_can_work_together(self) -> Settings:
        """Combinations that cannot work are refused when the service starts, in one line each."""
        if self.index_type == "ivf" and self.ivf_nlist > self.ivf_min_train:
            raise ValueError(f"LIKENESS_IVF_NLIST={self.ivf_nlist} is more lists than the {self.ivf_min_train} "
                             "vectors IVF trains on (LIKENESS_IVF_MIN_TRAIN): set NLIST at most MIN_TRAIN "
                             "(FAISS advises 39 training vectors a list), or 0 for about 4 x sqrt(items)")
        if self.api_key_for_reads and self.api_key is None:
            raise ValueError("LIKENESS_API_KEY_FOR_READS=true needs LIKENESS_API_KEY: with no key, reads would "
                             "stay open")
        return self

    @property
    def resolved_milvus_uri(self) -> str:
        return self.milvus_uri or str(self.data_dir / "milvus.db")

    def workers_problem(self) -> str | None:
        """Why this configuration cannot run LIKENESS_WORKERS processes (None: it can)."""
        if self.workers == 1:
            return None
        if self.index_backend == "embedded":
            return (f"LIKENESS_WORKERS={self.workers} needs an index that several processes share, and the embedded "
                    "index has one writer process; use LIKENESS_WORKERS=1, or LIKENESS_INDEX_BACKEND=milvus with "
                    "LIKENESS_MILVUS_URI=http://HOST:19530 (a Milvus server)")
        if not is_server_uri(self.resolved_milvus_uri):
            return (f"LIKENESS_WORKERS={self.workers} needs an index that several processes share, and the Milvus Lite "
                    f"file {self.resolved_milvus_uri} opens in one process only; use LIKENESS_WORKERS=1, or set "
                    "LIKENESS_MILVUS_URI=http://HOST:19530 to a Milvus server (or Milvus Lite in server mode: "
                    "python -m service.milvus_lite_server FILE)")
        return None

    @field_validator("providers")
    @classmethod
    def _known_providers(cls, value: str) -> str:
        names = [name.strip().lower() for name in value.replace(" ", ",").split(",") if name.strip()]
        unknown = [name for name in names if name not in GPU_PROVIDER_NAMES]
        if unknown or not names or len(set(names)) != len(names):
            raise ValueError(f"LIKENESS_PROVIDERS={value!r}: name each of {', '.join(GPU_PROVIDER_NAMES)} at most once, "
                             "in the order to try them")
        return ",".join(names)

    @property
    def host_patterns(self) -> list[str]:
        """LIKENESS_ALLOWED_HOSTS as lower-case patterns, or its default for LIKENESS_HOST and _PORT."""
        if self.allowed_hosts.strip():
            return [name.strip().lower() for name in self.allowed_hosts.split(",") if name.strip()]
        names = ["localhost", "127.0.0.1", "[::1]"]
        bound = self.host.strip().lower()
        if bound not in ("0.0.0.0", "::", "", *names, "::1"):
            names.append(f"[{bound}]" if ":" in bound else bound)
        return [f"{name}:{self.port}" for name in names] + (names if self.port == 80 else [])

    @property
    def provider_order(self) -> list[str]:
        return self.providers.split(",")

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_no_key(cls, value: object) -> object:
        # LIKENESS_API_KEY= (set but empty, as docker compose passes an unset variable) must not
        # become a key that an empty X-API-Key header matches. HTTP strips the spaces around a
        # header value, so a key's own surrounding spaces could never match either.
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, str):
            value = value.strip()
            if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
                raise ValueError("LIKENESS_API_KEY holds a control character, which no HTTP header can carry")
            return value or None
        return value


def settings_table() -> str:
    """The README's configuration table, one row per setting, made from the fields above (a test
    checks the README holds exactly this)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        if isinstance(default, Path) and default.is_absolute():
            default = default.relative_to(REPO_ROOT)
        shown = "unset" if default in (None, "") else str(default).lower() if isinstance(default, bool) else default
        rows.append(f"| `LIKENESS_{name.upper()}` | `{shown}` | {field.description} |")
    return "\n".join(rows)


def is_server_uri(uri: str) -> bool:
    """A Milvus server address (several processes may share it), not a Milvus Lite file."""
    return uri.startswith(("http://", "https://", "tcp://", "grpc://"))


@lru_cache
def get_settings() -> Settings:
    return Settings()
