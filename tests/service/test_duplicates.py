"""Duplicates across the catalogue (issue #29): a real service over a real index of a few hundred
Fashion-MNIST images with edited copies mixed in. GET /duplicates finds every copy with its original
and groups nothing else; a dismissed pair stays apart across a restart, until one of its items is
added again with other content; `likeness index duplicates` writes the same groups offline."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import httpx
import numpy as np
import pytest
from PIL import Image

from bench.server import free_port
from tests.conftest import DEFAULT_MODEL, REPO, png_bytes, wait_until_ready
from training.evaluation.edits import LIGHT_EDITS
from training.evaluation.near_duplicates import EDITS

pytestmark = pytest.mark.slow
ORIGINALS = 300
# One copy of each of these originals, each made by another of the light edits: the ones the shipped
# likeness-fmnist 3.0.0 was trained and measured on (its card: worst R@1 0.975). The edits users make
# (borders, rotations, overlays: issue #29) it finds far less often; `python -m bench dedup` measures
# them per family (docs/dedup.md). The CSN model is left out: its same-image threshold is 3.1.0's
# equal-error point, which accepts 16.7% of originals' nearest other images, and in this catalogue
# it groups two different garments (original-06066 and -09774, 45 grey levels apart RMS).
COPIED = 40


def catalogue(fashion_test) -> tuple[list[tuple[str, bytes]], dict[str, str]]:
    """(id, file bytes) to add, and copy id -> its original's id."""
    rng = np.random.default_rng(29)
    chosen = rng.choice(len(fashion_test.images), ORIGINALS, replace=False)
    items = [(f"original-{i:05d}", png_bytes(fashion_test.images[i][:, :, 0])) for i in chosen]
    edits = [name for name in LIGHT_EDITS if name != "RGB"]
    truth = {}
    for n, i in enumerate(chosen[:COPIED]):
        edit = edits[n % len(edits)]
        copy_id = f"copy-{n:02d}"
        items.append((copy_id, EDITS[edit](Image.fromarray(fashion_test.images[i][:, :, 0]))))
        truth[copy_id] = f"original-{i:05d}"
    return items, truth


def _environment(data_dir, port: int, model) -> dict[str, str]:
    return {**os.environ, "LIKENESS_MODEL_PATH": str(model), "LIKENESS_DATA_DIR": str(data_dir),
            "LIKENESS_SEED_GALLERY": "false", "LIKENESS_PORT": str(port), "LIKENESS_HOST": "127.0.0.1"}


def start(data_dir, model, **env: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "service"], cwd=REPO,
                               env={**_environment(data_dir, port, model), **env},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wait_until_ready(process, port, timeout=120)
    return process, f"http://127.0.0.1:{port}"


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=30)


def add(url: str, items: list[tuple[str, bytes]]) -> None:
    with httpx.Client(base_url=url, timeout=120) as client:
        for start_at in range(0, len(items), 32):
            chunk = items[start_at:start_at + 32]
            reply = client.post("/items", files=[("image", (f"{i}.img", data)) for i, data in chunk],
                                data={"id": [i for i, _ in chunk]})
            assert reply.status_code == 201, reply.text


def all_groups(url: str, limit: int = 7) -> list[dict]:
    groups, after = [], None
    with httpx.Client(base_url=url, timeout=300) as client:
        while True:
            page = client.get("/duplicates", params={"limit": limit, **({"after": after} if after else {})})
            assert page.status_code == 200, page.text
            body = page.json()
            groups += body["groups"]
            after = body["next"]
            if after is None:
                return groups


def check_groups(groups: list[dict], truth: dict[str, str]) -> None:
    grouped = {}
    for group in groups:
        originals = {truth.get(i, i) for i in group["ids"]}
        assert len(originals) == 1, f"a false group: {group}"
        for item in group["ids"]:
            grouped[item] = group["ids"]
    missed = [copy for copy, original in truth.items() if original not in grouped.get(copy, [])]
    # 3.0.0's same-image threshold calls 94% of light-edited test copies copies (its card); here 39
    # of the 40 were grouped (copy-05, downscaled to 0.75x, was not).
    assert len(missed) <= 0.1 * len(truth), f"copies not grouped with their original: {missed}"
    assert next(iter(truth)) not in missed  # the pair the tests dismiss
    scores = [g["score"] for g in groups]
    assert scores == sorted(scores, reverse=True)


def test_duplicates_groups_the_copies_and_a_dismissed_pair_stays_apart(tmp_path, fashion_test):
    model = DEFAULT_MODEL
    items, truth = catalogue(fashion_test)
    process, url = start(tmp_path, model)
    try:
        add(url, items)
        groups = all_groups(url)
        check_groups(groups, truth)
        copy, original = next(iter(truth.items()))
        dismissed = httpx.post(f"{url}/duplicates/dismiss", json={"ids": [copy, original]}, timeout=30)
        assert dismissed.status_code == 200 and dismissed.json()["dismissed"] == sorted([copy, original])
        assert httpx.post(f"{url}/duplicates/dismiss", json={"ids": [copy, "nobody"]}, timeout=30).status_code == 404
        assert httpx.post(f"{url}/duplicates/dismiss", json={"ids": [copy, copy]}, timeout=30).status_code == 422
    finally:
        stop(process)
    process, url = start(tmp_path, model)  # the same index, after a restart
    try:
        after_restart = all_groups(url)
        assert not any({copy, original} <= set(g["ids"]) for g in after_restart)
        # The copy added again, as another copy of the same original: new content, the verdict lapses.
        index = int(original.split("-")[1])
        add(url, [(copy, EDITS["jpeg q70"](Image.fromarray(fashion_test.images[index][:, :, 0])))])
        assert any({copy, original} <= set(g["ids"]) for g in all_groups(url))
        assert httpx.get(f"{url}/duplicates", params={"after": "not-a-cursor"}, timeout=30).status_code == 422
    finally:
        stop(process)
    # Offline, from the command line, with the service stopped: the same groups, as CSV and JSON.
    for fmt in ("csv", "json"):
        out = tmp_path / f"groups.{fmt}"
        done = subprocess.run([sys.executable, "-m", "service.jobs", "duplicates", "--format", fmt,
                               "--output", str(out)], cwd=REPO, env=_environment(tmp_path, free_port(), model),
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "items/s" in done.stderr  # the progress bar
        if fmt == "json":
            offline = json.loads(out.read_text())["groups"]
        else:
            rows = list(csv.DictReader(io.StringIO(out.read_text())))
            by_group: dict[str, list[str]] = {}
            for row in rows:
                by_group.setdefault(row["group"], []).append(row["id"])
            offline = [{"ids": ids} for ids in by_group.values()]
        check_groups([{"score": 1.0, **g} for g in offline], truth)


def test_duplicates_on_the_milvus_backend(tmp_path, fashion_test):
    items, truth = catalogue(fashion_test)
    process, url = start(tmp_path, DEFAULT_MODEL, LIKENESS_INDEX_BACKEND="milvus")
    try:
        add(url, items)
        check_groups(all_groups(url, limit=50), truth)
        copy, original = next(iter(truth.items()))
        assert httpx.post(f"{url}/duplicates/dismiss", json={"ids": [copy, original]}, timeout=30).status_code == 200
    finally:
        stop(process)
    process, url = start(tmp_path, DEFAULT_MODEL, LIKENESS_INDEX_BACKEND="milvus")
    try:
        assert not any({copy, original} <= set(g["ids"]) for g in all_groups(url, limit=50))
    finally:
        stop(process)
