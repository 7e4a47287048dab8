"""The embedded store's background maintenance: compaction and snapshots on one thread, so the
write that crossed a threshold is not held up by them."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("likeness.index")


class Maintenance:
    """Runs one piece of work at a time on a background thread. It keeps no reference to the work
    between runs, so a store that is dropped without close() (a simulated crash) is freed, and its
    flock with it."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()

    def start_if_idle(self, work: Callable[[bool], None], compaction: bool) -> None:
        """Start ``work(compaction)`` unless a run is in progress."""
        with self._guard:  # concurrent writers must not start two maintainers
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, args=(work, compaction),
                                                name="likeness-index-maintenance", daemon=True)
                self._thread.start()

    @staticmethod
    def _run(work: Callable[[bool], None], compaction: bool) -> None:
        try:
            work(compaction)
        except Exception:  # noqa: BLE001 - a failed snapshot loses nothing: the log still has it all
            log.exception("index maintenance failed; the next write retries it")

    def wait(self, timeout: float | None = None) -> None:
        """Block until a run in progress has finished (tests, shutdown)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
