"""Index batch jobs: ``python -m service.jobs COMMAND``.

    rebuild     rebuild the FAISS indexes from the SQLite table (the log), and snapshot them
    add-folder  embed every image under a folder and upsert it (offline: the service must be stopped)
    load        send every image under a folder to a running service's POST /items
    copy-to-milvus  copy the embedded index (vectors as stored, metadata, thumbnails) into a Milvus
                collection at --milvus-uri (offline: the service must be stopped); no re-embedding
    duplicates  groups of items that are the same image, as GET /duplicates gives them, to --output
                (CSV: one row per item of a group; JSON) (offline: the service must be stopped)
    migrate     build the index's generation for another model (--model NEW.onnx) from the kept
                originals, in the running service at --url, while it goes on serving; --switch serves
                it when it is complete (or restart with LIKENESS_MODEL_PATH=NEW.onnx). Killed, run it
                again: it goes on from where it stopped
    prune       delete the generations not served, and originals no item refers to (--url: the
                running service; without: offline, the service stopped)
    stats       print the index statistics

Folder layout: ``DIR/**/NAME.ext``. The id is the path relative to DIR without its extension; an
image in a sub-folder gets ``{"label": "<sub-folder>"}`` as metadata.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from service.upload_client import ServiceUnreachable, iter_images, load


def _open_store(settings):
    from service.state import load_state

    settings.seed_gallery = False
    return load_state(settings)


def rebuild(settings) -> dict:
    state = _open_store(settings)
    store = state.store
    try:
        with tqdm(total=len(store), desc="rebuild", unit="item") as bar:
            store.rebuild(progress=bar.update)
        return store.stats()
    finally:
        state.close()


def add_folder(settings, folder: Path, batch_size: int) -> dict:
    from service.ingest import ingest_files

    state = _open_store(settings)
    entries = list(iter_images(folder))
    try:
        with tqdm(total=len(entries), desc="add-folder", unit="image") as bar:
            added, skipped = ingest_files(state.store, state.runner, entries, settings.max_pixels, batch_size,
                                          progress=bar.update,
                                          originals=state.originals if settings.keep_originals else None)
        for line in skipped:
            print(f"skipped {line}", file=sys.stderr)
        return {**state.store.stats(), "added": added, "skipped": len(skipped)}
    finally:
        state.close()


def copy_to_milvus(settings, uri: str, collection: str, batch_size: int) -> dict:
    """Copy every item of the embedded index in LIKENESS_DATA_DIR into the Milvus collection
    ``collection`` at ``uri``: the stored vectors of every space (nothing is embedded again),
    metadata and thumbnails. Items whose stored metadata cannot be returned are skipped and
    counted. ``created`` becomes the time of the copy."""
    from service.index_store import NewItem
    from service.index_store.milvus import MilvusStore

    state = _open_store(settings.model_copy(update={"index_backend": "embedded"}))
    source, spec = state.store, state.runner.spec
    target = MilvusStore(uri, collection, spec.embedding_dim, spec.aspects, {"name": spec.name, "version": spec.version})
    copied, skipped, after = 0, 0, None
    try:
        target.open()
        with tqdm(total=source.count(), desc="copy-to-milvus", unit="item") as bar:
            while page := source.list(after, batch_size):
                after = page[-1].id
                items = [NewItem(item.id, np.stack([source.vector(item.id, space) for space in source.spaces]),
                                 item.metadata, source.thumbnail(item.id)) for item in page if item.problem is None]
                copied += len(target.upsert(items))
                skipped += len(page) - len(items)
                bar.update(len(page))
        return {"copied": copied, "skipped": skipped, "milvus": target.stats()}
    finally:
        target.close()
        state.close()


def duplicates(settings, output: Path | None, fmt: str, min_score: float | None) -> dict:
    """Every group of the same image in the index, written to ``output`` (stdout when None) as CSV or JSON."""
    import time

    from service.copies import duplicate_groups

    state = _open_store(settings)
    spec, store = state.runner.spec, state.store
    try:
        if spec.near_duplicate is None:
            raise NoSameImageDecision(f"the model {spec.name} {spec.version} has no same-image decision "
                                      "(near_duplicate); export it again with likeness export")
        threshold = spec.same_image_threshold(store.count()) if min_score is None else min_score
        started = time.perf_counter()
        with tqdm(total=store.count(), desc="duplicates", unit="items") as bar:
            groups = duplicate_groups(store, spec, threshold, progress=bar.update)
        seconds = time.perf_counter() - started
        summary = {"groups": len(groups), "items_in_groups": sum(len(g.ids) for g in groups), "items": store.count(),
                   "min_score": threshold, "seconds": round(seconds, 3),
                   "items_per_second": round(store.count() / max(seconds, 1e-9), 1)}
    finally:
        state.close()
    if fmt == "json":
        text = json.dumps({**summary, "groups": [{"ids": g.ids, "score": g.score} for g in groups]}, indent=2)
    else:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["group", "score", "id"])
        writer.writerows([n, g.score, item_id] for n, g in enumerate(groups, 1) for item_id in g.ids)
        text = out.getvalue()
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
    return summary


def prune(settings, url: str | None, api_key: str | None) -> dict:
    """Delete the generations not served live and the originals no item refers to: through the
    running service at ``url``, or offline on LIKENESS_DATA_DIR (the service stopped)."""
    if url:
        import httpx

        response = httpx.post(f"{url}/index/prune", headers={"X-API-Key": api_key} if api_key else {}, timeout=600)
        if response.status_code != 200:
            raise ServiceUnreachable(f"{url}/index/prune: {response.status_code} {response.text[:200]}")
        return response.json()
    from service.state import prune_generations

    state = _open_store(settings)
    try:
        removed = prune_generations(state)
        files, size = state.originals.prune()
        return {"removed_generations": removed, "removed_original_files": files, "removed_original_bytes": size}
    finally:
        state.close()


class NoSameImageDecision(ValueError):
    """The served model cannot tell the same image (exported before the decision existed)."""


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=list(COMMANDS))
    parser.add_argument("folder", nargs="?", type=Path)
    parser.add_argument("--data-dir", type=Path, help="default: LIKENESS_DATA_DIR")
    parser.add_argument("--model", type=Path, help="default: LIKENESS_MODEL_PATH; for `migrate`: the new model")
    parser.add_argument("--url", help="the running service, for `load`, `migrate` (default: http://LIKENESS_HOST:"
                        "LIKENESS_PORT) and `prune`")
    parser.add_argument("--switch", action="store_true", help="for `migrate`: serve the new generation once it is "
                        "complete")
    parser.add_argument("--api-key", help="for `load`, `migrate` and `prune`, when the service requires one "
                        "(default: LIKENESS_API_KEY)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--milvus-uri", help="for `copy-to-milvus`: a Milvus Lite file or http://HOST:19530")
    parser.add_argument("--milvus-collection", default="likeness", help="for `copy-to-milvus` (default: likeness)")
    parser.add_argument("--output", type=Path, help="for `duplicates`: the file to write (default: standard output)")
    parser.add_argument("--format", choices=["csv", "json"], default="csv", help="for `duplicates` (default: csv)")
    parser.add_argument("--min-score", type=float, help="for `duplicates`: join items at this same-image score "
                        "(default: the model's near_duplicate threshold for the index's size)")
    return parser


def _needs(args: argparse.Namespace, parser: argparse.ArgumentParser, *names: str) -> None:
    missing = [name for name in names if not getattr(args, name.replace("-", "_"))]
    if missing:
        parser.error(f"{args.command} needs {' and '.join('--' + n if n != 'folder' else 'a folder' for n in missing)}")


def _stats(settings) -> dict:
    state = _open_store(settings)
    try:
        return state.store.stats()
    finally:
        state.close()


# command -> (what it needs on the command line, what it runs: (args, settings, api key) -> result)
COMMANDS = {
    "rebuild": ((), lambda a, s, key: rebuild(s)),
    "add-folder": (("folder",), lambda a, s, key: add_folder(s, a.folder, a.batch_size)),
    "load": (("url", "folder"), lambda a, s, key: load(a.url, a.folder, a.batch_size, key)),
    "copy-to-milvus": (("milvus-uri",), lambda a, s, key: copy_to_milvus(s, a.milvus_uri, a.milvus_collection,
                                                                         a.batch_size)),
    "duplicates": ((), lambda a, s, key: duplicates(s, a.output, a.format, a.min_score)),
    "migrate": (("model",), lambda a, s, key: _migrate(a, s, key)),
    "prune": ((), lambda a, s, key: prune(s, a.url, key)),
    "stats": ((), lambda a, s, key: _stats(s)),
}


def _migrate(args: argparse.Namespace, settings, api_key: str | None) -> dict:
    from service.migrate_client import migrate

    return migrate(args.url or f"http://{settings.host}:{settings.port}", args.model, api_key, args.batch_size,
                   args.switch)


def main(argv: list[str] | None = None, prog: str = "python -m service.jobs") -> int:
    from service.generations import GenerationError
    from service.index_store import IndexLocked, IndexMismatch, IndexUnavailable
    from service.migrate_client import MigrationFailed
    from service.model_runner import ModelLoadError
    from service.settings import Settings

    parser = _parser(prog)
    # Intermixed: `load --url URL DIR` (README, compose) puts the folder after an option.
    args = parser.parse_intermixed_args(argv)
    needs, run = COMMANDS[args.command]
    _needs(args, parser, *needs)
    overrides = {k: v for k, v in (("data_dir", args.data_dir), ("model_path", args.model)) if v is not None}
    if args.command == "migrate":
        overrides.pop("model_path")  # the new model, not the one the service runs
    settings = Settings(**overrides)
    api_key = args.api_key or (settings.api_key.get_secret_value() if settings.api_key else None)
    try:
        result = run(args, settings, api_key)
    except (IndexLocked, IndexMismatch, IndexUnavailable, ModelLoadError, ServiceUnreachable,
            NoSameImageDecision, MigrationFailed, GenerationError) as exc:
        print(f"likeness: {exc}", file=sys.stderr)
        return 1
    if args.command == "duplicates" and args.output is None:
        return 0  # standard output holds the groups
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
