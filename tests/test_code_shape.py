"""Small modules and short functions in the packages a newcomer reads first (issue #32): none of
``training/``, ``service/`` and ``contract/`` has a module over 300 lines or a function over 60."""

from __future__ import annotations

import ast

from tests.conftest import REPO

PACKAGES = ("training", "service", "contract")
MODULE_LINES, FUNCTION_LINES = 300, 60


def _modules():
    for package in PACKAGES:
        yield from sorted((REPO / package).rglob("*.py"))


def test_no_module_over_300_lines():
    long = {str(p.relative_to(REPO)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MODULE_LINES}
    assert not long, long


def test_no_function_over_60_lines():
    long = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > FUNCTION_LINES:
                    long[f"{path.relative_to(REPO)}:{node.lineno} {node.name}"] = lines
    assert not long, long
