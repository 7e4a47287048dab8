"""Dynamic batching: concurrent requests are grouped into one ONNX Runtime call.

A request's images wait in a queue for at most ``max_wait_s`` (or until ``max_batch`` images are
waiting); one worker then runs them as a single batch on a dedicated inference thread and hands
each request its rows. While a batch runs, the next one gathers, so a loaded server batches by
itself and an idle one adds at most ``max_wait_s`` of latency.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from service.metrics import ServiceMetrics
from service.model_runner import Embeddings


@dataclass
class _Request:
    images: np.ndarray
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)


class DynamicBatcher:
    def __init__(self, run: Callable[..., Embeddings], max_batch: int, max_wait_s: float,
                 metrics: ServiceMetrics | None = None) -> None:
        self._run = run
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._metrics = metrics
        self._queue: asyncio.Queue[_Request] | None = None
        self._worker: asyncio.Task | None = None
        self._carry: _Request | None = None
        # One inference thread: batches run one at a time. ``run(images, parallel=...)`` is
        # ModelRunner.embed: ``parallel`` says whether the batch may use ONNX Runtime's whole pool.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="likeness-infer")

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._loop(), name="likeness-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    async def embed(self, images: np.ndarray) -> Embeddings:
        """Embed ``images`` (uint8 [N, H, W, C]) as part of whatever batch forms around them."""
        if self._queue is None:
            raise RuntimeError("batcher not started")
        parts = [images[i:i + self.max_batch] for i in range(0, len(images), self.max_batch)]
        futures = []
        for part in parts:
            future = asyncio.get_running_loop().create_future()
            await self._queue.put(_Request(part, future))
            futures.append(future)
        results: list[Embeddings] = [await f for f in futures]
        if len(results) == 1:
            return results[0]
        aspects = None if results[0].aspects is None else np.concatenate([r.aspects for r in results])
        return Embeddings(np.concatenate([r.embedding for r in results]), aspects)

    async def _next_batch(self) -> list[_Request]:
        assert self._queue is not None
        first = self._carry or await self._queue.get()
        self._carry = None
        batch, size = [first], len(first.images)
        deadline = time.perf_counter() + self.max_wait_s
        while size < self.max_batch:
            try:
                request = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):  # no task per wait, unlike wait_for
                        request = await self._queue.get()
                except TimeoutError:
                    break
            if size + len(request.images) > self.max_batch:
                self._carry = request  # starts the next batch
                break
            batch.append(request)
            size += len(request.images)
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            started = time.perf_counter()
            live = [r for r in batch if not r.future.cancelled()]
            if not live:
                continue
            images = np.concatenate([r.images for r in live])
            try:
                # Several requests in one batch: the server is busy, so the batch stays on one
                # thread (ModelRunner.embed's ``parallel``); a lone request may use them all.
                out = await loop.run_in_executor(self._executor, partial(self._run, images, parallel=len(live) == 1))
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                for request in live:
                    if not request.future.done():
                        request.future.set_exception(exc)
                continue
            if self._metrics is not None:
                self._metrics.batch_size.observe(len(images))
                for request in live:
                    self._metrics.queue_wait.observe(started - request.queued)
            offset = 0
            for request in live:
                n = len(request.images)
                if not request.future.done():
                    aspects = None if out.aspects is None else out.aspects[offset:offset + n]
                    request.future.set_result(Embeddings(out.embedding[offset:offset + n], aspects))
                offset += n
