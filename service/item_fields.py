"""What an item's id and metadata may hold: one set of rules for the API (on write), the index store
(on write, and on load for rows an older version stored) and bulk ingest.

The rules are those of the JSON the service answers with, so whatever is accepted can always be
returned: text that is valid Unicode (no lone surrogates, which is what bytes that were not UTF-8
become), finite numbers (JSON has no NaN or Infinity), no key twice in one object (JSON parsers
silently keep one), and nesting at most ``MAX_DEPTH`` deep (deeper values overflow recursive
parsers and serialisers).
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 32  # levels of objects and arrays in metadata, the top-level object included


class FieldError(ValueError):
    """A value an item may not hold; the message says why and is fit to show a client."""


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be returned as JSON text, or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8 (or holds a lone surrogate)"
    return None


def id_problem(item_id: str, max_length: int) -> str | None:
    """Why ``item_id`` is not a usable item id, or None."""
    if not item_id or item_id != item_id.strip():
        return "ids must be non-empty with no leading or trailing spaces"
    if len(item_id) > max_length:
        return f"id is longer than the limit of {max_length} characters"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in item_id):
        return "ids may not contain control characters"
    problem = text_problem(item_id)
    if problem:
        return f"id {problem}"
    # Ids travel in URL paths (GET /items/{id}): browsers drop '.' and '..' segments, and
    # '<id>/thumbnail' and '<id>/original' are routes of their own.
    segments = item_id.split("/")
    if any(segment in (".", "..") for segment in segments) or (
            len(segments) > 1 and segments[-1] in ("thumbnail", "original")):
        return "ids may not have '.' or '..' path segments or end in '/thumbnail' or '/original'"
    return None


def value_problem(value: Any, max_depth: int = MAX_DEPTH) -> str | None:
    """Why a parsed JSON value (from a request, or read back from the store) cannot be stored and
    returned as it is, or None. Walks the value without recursion, so any depth is safe to check."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, dict | list):
            if depth > max_depth:
                return f"nested more than {max_depth} levels deep"
            if isinstance(node, dict):
                for key, child in node.items():
                    if not isinstance(key, str):
                        return f"key {key!r}{_at(path)} is not text"
                    if text_problem(key):
                        return f"a key{_at(path)} {text_problem(key)}"
                    stack.append((child, depth + 1, f"{path}.{key}" if path else key))
            else:
                stack.extend((child, depth + 1, f"{path}[{i}]") for i, child in enumerate(node))
        elif isinstance(node, str):
            if text_problem(node):
                return f"the text{_at(path)} {text_problem(node)}"
        elif isinstance(node, float):
            if not math.isfinite(node):
                return f"the number{_at(path)} is not finite (JSON has no NaN or Infinity)"
        elif node is not None and not isinstance(node, bool | int):
            return f"the value{_at(path)} is a {type(node).__name__}, not a JSON value"
    return None


def parse_object(raw: str, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """Parse JSON text that must be an object and obey the rules above; raises FieldError.

    Depth is checked on the text before parsing, so a bracket bomb never reaches the recursive parser.
    """
    problem = text_problem(raw)
    if problem:
        raise FieldError(f"the text {problem}")
    if _nesting(raw) > max_depth:
        raise FieldError(f"nested more than {max_depth} levels deep")
    try:
        value = json.loads(raw, object_pairs_hook=_unique_keys, parse_constant=_no_constant,
                           parse_float=_finite_float)
    except FieldError:
        raise
    except json.JSONDecodeError as exc:
        raise FieldError(f"not valid JSON ({exc.msg} at character {exc.pos})") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of more than 4300 digits
        raise FieldError(f"not usable JSON ({exc})") from None
    if not isinstance(value, dict):
        raise FieldError(f"must be a JSON object, got {type(value).__name__}")
    problem = value_problem(value, max_depth)
    if problem:
        raise FieldError(problem)
    return value


def _at(path: str) -> str:
    return f" at {path!r}" if path else ""


def _nesting(text: str) -> int:
    """How deep objects and arrays nest in JSON text (brackets inside strings do not count)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise FieldError(f"the key {key!r} appears twice in one object")
        result[key] = value
    return result


def _no_constant(name: str) -> float:
    raise FieldError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise FieldError(f"the number {text[:40]} is out of range")
    return value
