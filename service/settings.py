"""All service configuration, from ``LIKENESS_*`` environment variables (or a ``.env`` file)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIKENESS_", env_file=".env", extra="ignore")

    # Model and device
    model_path: Path = Field(default=REPO_ROOT / "models" / "default.onnx", description="the ONNX model to serve")
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto: CUDA when it really loads, else CPU; cuda: require CUDA")
    allow_cpu_fallback: bool = Field(default=False, description="with device=cuda, start on CPU if CUDA fails")
    intra_op_threads: int = Field(default=0, ge=0, description="ONNX Runtime threads per inference (0 = cores)")

    # Index
    data_dir: Path = Field(default=Path("./data"), description="where the index lives")
    seed_gallery: bool = Field(default=True, description="index the shipped demo gallery into an empty index")
    gallery_dir: Path = Field(default=REPO_ROOT / "service" / "gallery")

    # HTTP
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)

    # Limits: every one gives a 4xx that names it.
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, description="whole request body")
    max_pixels: int = Field(default=25_000_000, ge=1, description="per image, checked on the header")
    max_images_per_request: int = Field(default=64, ge=1)
    max_k: int = Field(default=1000, ge=1)
    max_metadata_bytes: int = Field(default=4096, ge=2)
    max_id_length: int = Field(default=256, ge=1)


@lru_cache
def get_settings() -> Settings:
    return Settings()
