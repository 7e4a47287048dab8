"""What a running service holds: the live generation of the index (a model, its index, its inference
engine), the other complete generations (``model=`` queries), a generation being built (a
migration), and the kept originals; loaded once at start-up and swapped whole on a switch.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import faiss

from service.batching import DynamicBatcher
from service.gallery import seed_gallery, shipped_gallery
from service.generations import BASE, Generation, GenerationError, Registry
from service.index_store import IndexStore, StoreOptions, create_store, drop_location
from service.index_store.faiss_index import IndexOptions
from service.inference import InferenceEngine
from service.migration import Migration, MigrationError
from service.model_runner import ModelLoadError, ModelRunner
from service.originals import Originals
from service.settings import Settings
from service.store_calls import OffLoopStore

log = logging.getLogger("likeness")


@dataclass
class ServiceState:
    settings: Settings
    runner: ModelRunner
    store: IndexStore
    engine: InferenceEngine
    originals: Originals | None = None  # the image bytes each item was added with (LIKENESS_KEEP_ORIGINALS)
    registry: Registry | None = None
    generation: Generation | None = None
    others: dict[str, ServiceState] = field(default_factory=dict)  # other complete generations, by model key
    index: OffLoopStore = dataclasses.field(init=False)  # what routes call: never ``store`` itself

    def __post_init__(self) -> None:
        self.index = OffLoopStore(self.store, self.originals)

    @property
    def model_ref(self) -> dict[str, str]:
        return {"name": self.runner.spec.name, "version": self.runner.spec.version}

    @property
    def migration(self) -> Migration | None:
        return self.index.migration

    def for_model(self, model: str | None) -> ServiceState | None:
        """The generation a ``model`` field names ("name" or "name version"); None: no such one."""
        if model in (None, ""):
            return self
        candidates = [self, *self.others.values()]
        exact = [s for s in candidates if f"{s.runner.spec.name} {s.runner.spec.version}" == model]
        named = [s for s in candidates if s.runner.spec.name == model]
        return (exact or (named if len(named) == 1 else [None]))[0]

    def models(self) -> list[str]:
        return [f"{s.runner.spec.name} {s.runner.spec.version}" for s in (self, *self.others.values())]

    def close(self) -> None:
        """Close every generation's index (snapshotting it), a migration's, and the originals."""
        try:
            for other in self.others.values():
                if other.migration is not None:  # the generation switched from: its migration is done
                    other.migration.release()
                other.store.close()
            if self.migration is not None:
                self.migration.close()
            self.store.close()
        finally:
            if self.originals is not None:
                self.originals.close()


def store_options(settings: Settings) -> StoreOptions:
    index = IndexOptions(type=settings.index_type, hnsw_m=settings.hnsw_m,
                         hnsw_ef_construction=settings.hnsw_ef_construction, hnsw_ef_search=settings.hnsw_ef_search,
                         ivf_nlist=settings.ivf_nlist, ivf_nprobe=settings.ivf_nprobe,
                         ivf_min_train=settings.ivf_min_train, search_threads=settings.faiss_threads)
    return StoreOptions(index=index, snapshot_every=settings.snapshot_every)


def open_runner(settings: Settings, model_path) -> ModelRunner:
    runner = ModelRunner(model_path, settings.device, settings.allow_cpu_fallback, settings.intra_op_threads,
                         settings.intra_op_spinning, device_id=settings.device_id, providers=settings.provider_order,
                         max_batch=max(settings.batch_max_size, settings.max_images_per_request),
                         cache_dir=settings.data_dir / "tensorrt-cache")
    runner.warm_up()
    return runner


def open_store(settings: Settings, runner: ModelRunner, location: str) -> IndexStore:
    spec = runner.spec
    store = create_store(settings, spec.embedding_dim, spec.aspects, {"name": spec.name, "version": spec.version},
                         store_options(settings), location)
    store.open()
    return store


def load_state(settings: Settings) -> ServiceState:
    """Load the model and open its generation of the index (and the others); raises ModelLoadError /
    IndexMismatch / IndexLocked / IndexUnavailable / GenerationError with one clear line."""
    if settings.faiss_threads:
        # Many searches run at once; one OpenMP thread each keeps them from fighting over the cores.
        # (This covers startup work on this thread; searches set it on their own threads.)
        faiss.omp_set_num_threads(settings.faiss_threads)
    runner = open_runner(settings, settings.model_path)
    registry = Registry(settings.data_dir)
    fresh = not registry.generations
    generation = registry.live_for(runner.spec, settings.model_path)
    store = open_store(settings, runner, generation.location)
    if fresh and store.other_models and len(store):
        # An index from before generations (likeness 3.x), built by another model: its items kept no
        # originals to embed again, so no migration can serve them with this one.
        store.close()
        registry.path.unlink()
        raise GenerationError(
            f"the index in {settings.data_dir} was embedded by {', '.join(store.other_models)}, not by "
            f"{runner.spec.name} {runner.spec.version}, before likeness kept the images it was given: serve it with "
            "that model, or start from an empty LIKENESS_DATA_DIR and add the images again; from then on, `likeness "
            "index migrate --model NEW.onnx` upgrades it without re-adding anything")
    originals = Originals(settings.data_dir)
    originals.open()
    if settings.seed_gallery and len(store) == 0 and len(registry.generations) == 1:
        seed_gallery(store, runner, gallery_for(settings, runner), originals if settings.keep_originals else None)
    engine = InferenceEngine(runner, settings.max_pixels, max_request_pixels=settings.max_pixels_per_request)
    state = ServiceState(settings, runner, store, engine, originals, registry, generation)
    for other in registry.others():
        _open_other(state, other)
    return state


def gallery_for(settings: Settings, runner: ModelRunner) -> Path:
    """LIKENESS_GALLERY_DIR, or the shipped gallery that suits the model (:func:`shipped_gallery`)."""
    if settings.gallery_dir is not None:
        return settings.gallery_dir
    return shipped_gallery(runner.spec.input)


def _open_other(state: ServiceState, generation: Generation) -> None:
    """Open a complete generation for ``model=`` queries, or resume building an incomplete one (its
    writes mirrored again); a model file that no longer holds that model is left out, with a log line."""
    settings = state.settings
    try:
        runner = open_runner(settings, generation.model)
    except ModelLoadError as exc:
        log.warning("generation %s of the index is not served: %s", generation.key, exc)
        return
    if f"{runner.spec.name} {runner.spec.version}" != generation.key:
        log.warning("generation %s of the index is not served: %s now holds %s %s (likeness index prune removes "
                    "the generation)", generation.key, generation.model, runner.spec.name, runner.spec.version)
        return
    store = open_store(settings, runner, generation.location)
    if generation.complete:
        engine = InferenceEngine(runner, settings.max_pixels, max_request_pixels=settings.max_pixels_per_request)
        state.others[generation.key] = ServiceState(settings, runner, store, engine, state.originals, state.registry,
                                                    generation)
    else:
        state.index.migration = Migration(generation, runner, store, state.store, state.originals,
                                          settings.data_dir / generation.location)


def start_migration(state: ServiceState, model_path) -> Migration:
    """The generation of the model at ``model_path`` (new, or the one being built), its writes mirrored
    from now on."""
    if state.migration is not None:
        if state.migration.generation.model == str(model_path):
            return state.migration
        raise MigrationError(f"a migration to {state.migration.generation.key} is under way; finish it (or prune it) "
                             "first")
    runner = open_runner(state.settings, model_path)
    key = f"{runner.spec.name} {runner.spec.version}"
    if state.generation is not None and key == state.generation.key:
        raise MigrationError(f"{model_path} is {key}, the model the index is served by already")
    if key in state.others:
        raise MigrationError(f"the index already has a complete generation of {key}; switch to it")
    generation = state.registry.new(runner.spec, model_path)
    store = open_store(state.settings, runner, generation.location)
    state.index.migration = Migration(generation, runner, store, state.store, state.originals,
                                      state.settings.data_dir / generation.location)
    return state.index.migration


def switched(state: ServiceState) -> ServiceState:
    """The state that serves the migrated generation, the previous live one kept for ``model=``
    queries until pruned. The caller gives its engine a batcher and installs it; requests already
    running finish on the old one."""
    migration = state.migration
    if migration is None or not migration.generation.complete:
        raise MigrationError("no complete generation to switch to: run likeness index migrate first")
    settings = state.settings
    engine = InferenceEngine(migration.runner, settings.max_pixels, max_request_pixels=settings.max_pixels_per_request)
    # Requests that began before the switch finish on the previous state, and a write among them still
    # lands in both generations: its OffLoopStore keeps the migration, whose index is now the live one.
    previous = dataclasses.replace(state, others={})
    previous.index = state.index
    others = {key: other for key, other in state.others.items() if key != migration.generation.key}
    others[state.generation.key] = previous
    new = ServiceState(settings, migration.runner, migration.store, engine, state.originals, state.registry,
                       migration.generation, others)
    state.registry.live = migration.generation.key
    state.registry.save()
    return new


async def start_batcher(state: ServiceState, metrics, running: list[DynamicBatcher]) -> None:
    """Give a generation's inference engine its dynamic batcher (LIKENESS_BATCHING); ``running``
    collects it, to be stopped at shutdown."""
    settings = state.settings
    if settings.batching:
        batcher = DynamicBatcher(state.runner.embed, settings.batch_max_size, settings.batch_max_wait_ms / 1000.0,
                                 metrics)
        await batcher.start()
        running.append(batcher)
        state.engine.batcher = batcher


def prune_generations(state: ServiceState) -> list[str]:
    """Drop the indexes of the generations not served live, and forget them (service and CLI alike)."""
    opened = {other.generation.key: other.store for other in state.others.values()}
    for other in state.others.values():
        if other.migration is not None:  # switched from: its writes no longer mirror anywhere
            migration, other.index.migration = other.migration, None
            migration.release()
    if state.migration is not None:
        migration, state.index.migration = state.migration, None
        migration.release()
        opened[migration.generation.key] = migration.store
    registry = state.registry
    removed = registry.others()
    for generation in removed:
        store = opened.get(generation.key)
        if store is not None:
            store.drop()
        else:  # not opened (its model file holds another model now): its index all the same
            drop_location(state.settings, generation.location)
        folder = state.settings.data_dir / generation.location
        if generation.location != BASE and folder.is_dir():
            shutil.rmtree(folder)
        registry.generations.pop(generation.key)
    state.others.clear()
    registry.save()
    return sorted(g.key for g in removed)


__all__ = ["GenerationError", "MigrationError", "ServiceState", "load_state", "start_migration", "switched"]
