"""The client side of a model upgrade (``likeness index migrate``): it embeds the kept originals with
the new model, outside the serving process, and hands the vectors to the running service
(service/migration.py has the design, service/api/migration_routes.py the endpoints).

Killed at any moment (kill -9 included), it loses the batch in its hands: run again, it asks the
service what is still pending and goes on from there.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
from tqdm import tqdm

from contract import ImageError, decode_image, prepare_image
from service.ingest import item_vectors
from service.model_runner import ModelRunner

# A pass over the pending items can meet items written meanwhile that could not be mirrored; the
# client makes a few passes before it reports them.
PASSES = 3


class MigrationFailed(RuntimeError):
    """The service refused a step, or items could not be re-embedded (the message names them)."""


def migrate(url: str, model: Path, api_key: str | None = None, batch_size: int = 64, switch: bool = False,
            client: httpx.Client | None = None) -> dict:
    """Build the generation of ``model`` in the service at ``url``, then finish it (and switch to it)."""
    model = Path(model).resolve()
    runner = ModelRunner(model, intra_op_threads=0)
    headers = {"X-API-Key": api_key} if api_key else {}
    own = client is None
    client = client or httpx.Client(base_url=url, timeout=300, headers=headers)
    started = time.perf_counter()
    try:
        status = _call(client.post, "/index/migration", json={"model": str(model)})
        unreadable: dict[str, str] = {}
        built = 0
        with tqdm(total=status["live_items"], initial=min(status["built"], status["live_items"]), desc="migrate",
                  unit="items", file=sys.stderr) as bar:
            for _ in range(PASSES):
                done = _one_pass(client, runner, batch_size, unreadable, bar)
                built += done
                if not done:
                    break
        for item_id, reason in sorted(unreadable.items()):
            print(f"could not re-read {item_id}: {reason}", file=sys.stderr)
        finished = _call(client.post, "/index/migration/finish")
        result = {**finished, "embedded_here": built, "unreadable": len(unreadable),
                  "seconds": round(time.perf_counter() - started, 1)}
        if switch:
            result["switch"] = _call(client.post, "/index/migration/switch")
        return result
    finally:
        if own:
            client.close()


def _one_pass(client: httpx.Client, runner: ModelRunner, batch_size: int, unreadable: dict[str, str],
              bar: tqdm) -> int:
    """Embed every pending item once; returns how many the service took."""
    after, taken = None, 0
    while True:
        page = _call(client.get, "/index/migration/pending", params={"limit": batch_size, **({"after": after} if after
                                                                                             else {})})
        todo = [item for item in page["items"] if item["id"] not in unreadable]
        if todo:
            sent = _embed(client, runner, todo, unreadable)
            if sent:
                taken += _call(client.post, "/index/migration/items", json={"items": sent})["applied"]
            bar.update(len(todo))
        after = page["next"]
        if after is None:
            return taken


def _embed(client: httpx.Client, runner: ModelRunner, items: list[dict], unreadable: dict[str, str]) -> list[dict]:
    arrays, kept = [], []
    for item in items:
        response = client.get(f"/items/{quote(item['id'], safe='/')}/original")
        if response.status_code != 200:
            unreadable[item["id"]] = response.json().get("detail", f"HTTP {response.status_code}")
            continue
        try:
            arrays.append(prepare_image(decode_image(response.content, max_pixels=100_000_000), runner.spec.input))
        except ImageError as exc:
            unreadable[item["id"]] = exc.message
            continue
        kept.append(item)
    if not kept:
        return []
    out = runner.embed(np.stack(arrays))
    return [{"id": item["id"], "version": item["version"], "vectors": item_vectors(out, row).tolist()}
            for row, item in enumerate(kept)]


def _call(method, path: str, **kwargs) -> dict:
    try:
        response = method(path, **kwargs)
    except httpx.TransportError as exc:
        raise MigrationFailed(f"cannot reach the service ({exc}); is it running, and is --url its address?") from None
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text[:200]
        raise MigrationFailed(f"{path}: {response.status_code} {detail}")
    return response.json()
