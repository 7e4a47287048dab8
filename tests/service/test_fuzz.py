"""Thousands of requests generated from the service's own OpenAPI schema: none may get a 5xx.

Uses schemathesis' strategies with Hypothesis directly (its pytest plugin does not load under
pytest 9), against the real server on loopback.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from bench.server import ServerProcess

EXAMPLES_PER_OPERATION = 200  # per generation mode: valid, then deliberately invalid requests


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = ServerProcess(tmp_path_factory.mktemp("fuzz") / "data", LIKENESS_MAX_K="50").start()
    yield process
    process.stop()


@pytest.mark.slow  # a real server process and 80 s of generated requests: `make test` runs it
def test_no_generated_request_gets_a_server_error(server):
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    sent: dict[str, int] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation, mode in [(op, mode) for op in operations
                            for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)]:
        label = f"{operation.method.upper()} {operation.path}"

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def call(case):
            response = case.call(base_url=server.url, timeout=30)
            name = f"{case.method.upper()} {case.operation.path}"
            sent[name] = sent.get(name, 0) + 1
            assert response.status_code < 500, f"{name}: {response.status_code} {response.text[:300]}"

        try:
            call()
        except Unsatisfiable:
            # An operation without parameters or body has no invalid form to generate.
            assert mode == schemathesis.GenerationMode.NEGATIVE, label
    assert len(sent) >= 10
    assert sum(sent.values()) >= 2000, sent
