"""Generations of the index: one per model that embedded it, so a model upgrade needs no re-adding.

``LIKENESS_DATA_DIR/generations.json`` records, for each generation, the model that embedded it
(name, version, file), where its index is (the embedded backend: ``.``, the data directory itself, for
the first, ``generations/<slug>`` for later ones; milvus: the collection, ``<collection>`` then
``<collection>__<slug>``), whether it is complete, and which one is live. ``likeness index migrate``
builds a new generation from the kept originals (service/migration.py); the service then serves
the live one and answers ``model=`` queries from any complete one; ``likeness index prune`` removes
the others.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from contract import ModelSpec

REGISTRY = "generations.json"
BASE = "."


class GenerationError(RuntimeError):
    """The configured model has no usable generation in this index (one line, naming the command)."""


@dataclass
class Generation:
    name: str
    version: str
    model: str  # the model file it was built with
    location: str  # BASE, or generations/<slug> (embedded) and <collection>__<slug> (milvus)
    complete: bool
    created: float

    @property
    def key(self) -> str:
        return f"{self.name} {self.version}"


def key_of(spec: ModelSpec) -> str:
    return f"{spec.name} {spec.version}"


def slug(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", key).strip("_")


class Registry:
    """The generations of one data directory. Not thread-safe: one writer (the service, or the CLI
    with the service stopped) at a time, as for the index itself."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / REGISTRY
        self.live: str | None = None
        self.generations: dict[str, Generation] = {}
        if self.path.is_file():
            raw = json.loads(self.path.read_text())
            self.live = raw["live"]
            self.generations = {key: Generation(**value) for key, value in raw["generations"].items()}

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        with open(tmp, "w") as handle:
            json.dump({"live": self.live, "generations": {k: asdict(g) for k, g in self.generations.items()}},
                      handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    def live_for(self, spec: ModelSpec, model_path: Path) -> Generation:
        """The generation the service serves with ``spec``'s model, made live if it is complete;
        a fresh data directory starts with its base generation for that model."""
        key = key_of(spec)
        if not self.generations:
            self.generations[key] = Generation(spec.name, spec.version, str(model_path), BASE, True, time.time())
            self.live = key
            self.save()
        generation = self.generations.get(key)
        if generation is None:
            live = self.generations[self.live]
            raise GenerationError(
                f"the index in {self.path.parent} was embedded by {live.key}, not by {key} ({model_path}); build a "
                f"generation for it from the kept originals with `likeness index migrate --model {model_path}` "
                f"while the service runs on {live.model}, then restart with LIKENESS_MODEL_PATH={model_path}")
        if not generation.complete:
            raise GenerationError(
                f"the generation of {key} in {self.path.parent} is not complete; finish it with `likeness index "
                f"migrate --model {model_path}` while the service runs on {self.generations[self.live].model}")
        if self.live != key:
            self.live = key
            self.save()
        return generation

    def new(self, spec: ModelSpec, model_path: Path) -> Generation:
        """A generation for ``spec``'s model (the existing one, complete or not, if there is one)."""
        key = key_of(spec)
        if key not in self.generations:
            self.generations[key] = Generation(spec.name, spec.version, str(model_path), f"generations/{slug(key)}",
                                               False, time.time())
            self.save()
        return self.generations[key]

    def others(self) -> list[Generation]:
        return [g for key, g in self.generations.items() if key != self.live]
