"""The server-CPU benchmark and the profile summary, run tiny: the scripts cannot rot.

Not timed and nothing asserted about speed; the numbers come from the commands in docs/serving.md.
"""

from __future__ import annotations

import json

import pytest

from bench import serving_cpu
from bench.common import REPO
from bench.server import process_cpu_seconds, process_tree_cpu_seconds
from bench.serving_profile import summarise_stacks

# Trains, starts processes or a browser: `make test-fast` leaves it out (`make test` runs it).
pytestmark = pytest.mark.slow


def test_serving_cpu_runs_this_tree_beside_a_commit_and_the_baselines(tmp_path):
    output = tmp_path / "serving-cpu.md"
    # Four servers start one after another; on a machine busy with other work each may take minutes.
    serving_cpu.main(["--baseline", "HEAD", "--extra-model", f"again={REPO / 'models' / 'default.onnx'}", "--seconds", "1", "--clients", "2", "--endpoints", "search",
                      "search_json", "--start-timeout", "900", "--note", "A test run.", "--output", str(output)])
    results = json.loads((tmp_path / "results" / "serving-cpu.json").read_text())["results"]
    assert set(results) == {"likeness search 2", "likeness@HEAD search 2", "plain search 2", "naive search 2",
                            "likeness search_json 2", "likeness (again) search 2", "likeness (again) search_json 2"}
    for r in results.values():
        assert r["errors"] == 0 and r["throughput_rps"] > 0 and r["cpu_ms_per_request"] > 0
    assert "server CPU (ms/req)" in output.read_text() and "A test run." in output.read_text()
    assert "| likeness (again) | `/search` (JSON) |" in output.read_text()


def test_process_cpu_counts_all_threads():
    import os
    import threading

    def spin() -> None:
        end = process_cpu_seconds(os.getpid()) + 0.2
        while process_cpu_seconds(os.getpid()) < end:
            sum(range(1000))

    before = process_cpu_seconds(os.getpid())
    worker = threading.Thread(target=spin)
    worker.start()
    worker.join()
    # /proc counts in clock ticks (0.01 s), and 12.52 - 12.32 is 0.19999999999999929 in floats.
    assert process_cpu_seconds(os.getpid()) - before >= 0.2 - 1e-6


def test_process_tree_cpu_counts_child_processes():
    """A server with several workers: its CPU is its own and every descendant's (here a grandchild)."""
    import os
    import signal
    import subprocess
    import sys

    burn = "import time; end = time.process_time() + 0.3\nwhile time.process_time() < end: pass\nprint(flush=True); time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {burn!r}])"],
                             stdout=subprocess.PIPE, start_new_session=True)
    try:
        child.stdout.readline()  # the grandchild has burnt its 0.3 s and is still alive
        assert process_tree_cpu_seconds(child.pid) - process_cpu_seconds(child.pid) >= 0.3 - 0.02
        assert process_tree_cpu_seconds(os.getpid()) >= process_cpu_seconds(os.getpid()) + 0.3 - 0.02
    finally:
        os.killpg(child.pid, signal.SIGKILL)  # the grandchild too
        child.wait()


def test_profile_summary_counts_inclusive_and_self_samples(tmp_path):
    raw = tmp_path / "stacks.txt"
    raw.write_text("thread (101): MainThread;main (service/__main__.py:41);search (service/api/x.py:9) 3\n"
                   "thread (101): MainThread;main (service/__main__.py:41) 1\n"
                   "thread (102): worker;run (onnxruntime/session.py:20) 4\n")
    total, inclusive, own, tids = summarise_stacks(raw)
    assert total == 8 and tids == {101, 102}
    assert inclusive["main (service/__main__.py)"] == 4 and own["main (service/__main__.py)"] == 1
    assert own["search (service/api/x.py)"] == 3 and own["run (onnxruntime/session.py)"] == 4


def test_the_profiler_attaches_to_the_running_service_and_names_where_its_cpu_goes(capsys):
    """The committed profile command end to end, as docs/serving.md gives it: py-spy on a live
    service under load, its stacks read from the run's own temp folder."""
    from bench import serving_profile

    serving_profile.main(["--endpoint", "search_json", "--seconds", "2", "--clients", "2", "--rate", "50"])
    out = capsys.readouterr().out
    assert "server CPU" in out and "(main)" in out and "top functions" in out
    assert "Session.run" in out or "ModelRunner" in out or "Runner.run" in out


def test_serving_cpu_measures_a_photo_model_with_batching_off_beside_it(tmp_path):
    """Issue #30's serving at photo size: the photo model, the clients sending the photo gallery's
    images (the gallery the service seeds for that model, unasked), each server also run with
    dynamic batching off; no plain baselines."""
    output = tmp_path / "serving-photo.md"
    serving_cpu.main(["--model", str(REPO / "models" / "photo.onnx"), "--unbatched", "--no-plain",
                      "--seconds", "1", "--clients", "2",
                      "--endpoints", "similarity", "--start-timeout", "900", "--output", str(output)])
    results = json.loads((tmp_path / "results" / "serving-photo.json").read_text())["results"]
    assert set(results) == {"likeness similarity 2", "likeness (unbatched) similarity 2"}
    for r in results.values():
        assert r["errors"] == 0 and r["throughput_rps"] > 0 and r["cpu_ms_per_request"] > 0
    text = output.read_text()
    assert "| likeness (unbatched) | `/similarity` |" in text and "service/gallery-photos" in text
