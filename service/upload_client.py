"""Sending a folder of images to a running service (``likeness index load``), and how a folder
becomes items: ``DIR/**/NAME.ext`` is the item ``NAME`` (its path relative to DIR, without the
extension), with ``{"label": "<sub-folder>"}`` as metadata when it is in one."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from contract import IMAGE_FILE_SUFFIXES


def iter_images(folder: Path) -> Iterator[tuple[str, Path, dict]]:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_FILE_SUFFIXES:
            relative = path.relative_to(folder)
            metadata = {"label": relative.parts[0]} if len(relative.parts) > 1 else {}
            yield relative.with_suffix("").as_posix(), path, metadata


class ServiceUnreachable(ConnectionError):
    """``load`` could not reach the service at its URL."""


def load(url: str, folder: Path, batch_size: int, api_key: str | None, client=None) -> dict:
    """POST every image under ``folder`` to the service at ``url`` (or through ``client``, an
    ``httpx.Client`` already pointed at it); return how many were added and how many failed."""
    import httpx

    headers = {"X-API-Key": api_key} if api_key else {}
    entries = list(iter_images(folder))
    added, failed = 0, []
    with httpx.Client(base_url=url, timeout=120) if client is None else _borrowed(client) as client:
        for start in tqdm(range(0, len(entries), batch_size), desc="load", unit="batch"):
            chunk = entries[start:start + batch_size]
            files = [("image", (path.name, path.read_bytes())) for _, path, _ in chunk]
            data = {"id": [item_id for item_id, _, _ in chunk],
                    "metadata": [json.dumps(metadata) for _, _, metadata in chunk]}
            try:
                response = client.post("/items", files=files, data=data, headers=headers)
            except httpx.TransportError as exc:
                raise ServiceUnreachable(f"cannot reach the service at {url} ({exc}); is it running "
                                         "(likeness serve), and is that its address?") from None
            if response.status_code == 201:
                added += response.json()["added"]
                continue
            # One bad file fails its whole request; retry that batch one image at a time.
            for (item_id, path, metadata), file in zip(chunk, files):
                single = client.post("/items", files=[file], data={"id": item_id, "metadata": json.dumps(metadata)},
                                     headers=headers)
                if single.status_code == 201:
                    added += 1
                else:
                    failed.append(f"{path}: {single.status_code} {single.json().get('detail')}")
    for line in failed:
        print(f"failed {line}", file=sys.stderr)
    return {"added": added, "failed": len(failed)}


@contextmanager
def _borrowed(client):
    """A caller's client, used without closing it."""
    yield client


