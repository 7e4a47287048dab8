"""Background maintenance: one run at a time, failures logged, never raised into a writer."""

from __future__ import annotations

import threading

from service.index_store.locks import ReadWriteLock
from service.index_store.maintenance import Maintenance


def test_one_run_at_a_time_and_a_failure_is_logged(caplog):
    maintenance, gate, runs = Maintenance(), threading.Event(), []

    def work(compaction: bool) -> None:
        runs.append(compaction)
        gate.wait(5)

    maintenance.start_if_idle(work, True)
    maintenance.start_if_idle(work, False)  # busy: not started
    gate.set()
    maintenance.wait(5)
    assert runs == [True]

    def broken(_: bool) -> None:
        raise OSError("disk full")

    maintenance.start_if_idle(broken, False)
    maintenance.wait(5)
    assert "index maintenance failed" in caplog.text


def test_a_waiting_writer_blocks_new_readers():
    lock, order = ReadWriteLock(), []

    def take(kind: str) -> None:
        with getattr(lock, kind)():
            order.append(kind)

    with lock.read():
        writer = threading.Thread(target=take, args=("write",))
        writer.start()
        while not lock._writers_waiting:
            pass
        reader = threading.Thread(target=take, args=("read",))
        reader.start()
        reader.join(0.2)
        assert order == []  # the new reader waits behind the writer
    writer.join(5)
    reader.join(5)
    assert order == ["write", "read"]
