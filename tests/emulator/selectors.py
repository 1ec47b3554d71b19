"""Label selectors (equality- and set-based) and field selectors, as in ``?labelSelector=``/``?fieldSelector=``."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Predicate = Callable[[dict[str, Any]], bool]

_SET_RE = re.compile(r"^\s*(!)?\s*([A-Za-z0-9_./-]+)\s*(?:\b(in|notin)\s*\(([^)]*)\))?\s*$")


class SelectorError(ValueError):
    pass


def _split(selector: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, current = [], 0, ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part.strip() for part in parts if part.strip()]


def _requirement(term: str) -> Callable[[dict[str, str]], bool]:
    for op in ("!=", "==", "="):
        if op in term and "(" not in term:
            key, value = (s.strip() for s in term.split(op, 1))
            if not key:
                raise SelectorError(f"invalid selector term: {term!r}")
            if op == "!=":
                return lambda labels: labels.get(key) != value
            return lambda labels: labels.get(key) == value
    match = _SET_RE.match(term)
    if not match:
        raise SelectorError(f"invalid selector term: {term!r}")
    negated, key, op, values_text = match.groups()
    if op is None:
        return (lambda labels: key not in labels) if negated else (lambda labels: key in labels)
    if negated:
        raise SelectorError(f"invalid selector term: {term!r}")
    values = {v.strip() for v in values_text.split(",") if v.strip()}
    if op == "in":
        return lambda labels: labels.get(key) in values
    return lambda labels: labels.get(key) not in values


def label_selector(selector: str | None) -> Predicate:
    requirements = [_requirement(term) for term in _split(selector or "")]

    def check(obj: dict[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(requirement(labels) for requirement in requirements)

    return check


def _field_value(obj: dict[str, Any], dotted: str) -> str | None:
    node: Any = obj
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return None if node is None else str(node)


def field_selector(selector: str | None) -> Predicate:
    """Equality/inequality on dotted paths (``metadata.name``, ``metadata.namespace``, ``status.phase``...)."""
    terms: list[tuple[str, bool, str]] = []
    for term in _split(selector or ""):
        for op in ("!=", "==", "="):
            if op in term:
                key, value = (s.strip() for s in term.split(op, 1))
                terms.append((key, op == "!=", value))
                break
        else:
            raise SelectorError(f"invalid field selector term: {term!r}")

    def check(obj: dict[str, Any]) -> bool:
        return all((_field_value(obj, key) == value) != negated for key, negated, value in terms)

    return check
