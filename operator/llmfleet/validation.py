"""Turn an LLMService object (a dict from YAML or the API server) into a validated model.

Users see every problem at once, each with the field path they would edit
(``spec.loadBalancer.sessionHeader``), never a traceback. The same function guards the CLI and
the operator, so ``llmfleet render`` rejects exactly what the operator would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from llmfleet.api import LLMService

# Children are named <name>-gateway, <name>-model-cache, ...; Services must be DNS-1035 labels
# of at most 63 characters, so the service name keeps room for the longest suffix.
NAME_MAX = 40
NAME_PATTERN = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class InvalidService(ValueError):
    """An LLMService that cannot be rendered; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "<root>"


def _message(error: Any) -> str:
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def validate_service(obj: Any) -> LLMService:
    """A validated ``LLMService``; raises ``InvalidService`` with every problem found."""
    problems: list[Problem] = []
    if not isinstance(obj, dict):
        raise InvalidService([Problem("<root>", "expected an LLMService object (a YAML mapping)")])
    if obj.get("kind", "LLMService") != "LLMService":
        problems.append(Problem("kind", f"expected LLMService, got {obj.get('kind')!r}"))
    if obj.get("apiVersion", "llmfleet.io/v1alpha1") != "llmfleet.io/v1alpha1":
        problems.append(
            Problem("apiVersion", f"expected llmfleet.io/v1alpha1, got {obj.get('apiVersion')!r}")
        )
    name = (obj.get("metadata") or {}).get("name")
    if not name:
        problems.append(Problem("metadata.name", "is required"))
    elif not isinstance(name, str) or not NAME_PATTERN.match(name) or len(name) > NAME_MAX:
        problems.append(
            Problem(
                "metadata.name",
                f"must be a DNS-1035 label of at most {NAME_MAX} characters (lower-case letters, digits, '-'; starts with a letter), got {name!r}",
            )
        )
    service: LLMService | None = None
    try:
        service = LLMService.model_validate(
            {**obj, "apiVersion": "llmfleet.io/v1alpha1", "kind": "LLMService"}
        )
    except ValidationError as exc:
        for error in exc.errors():
            for message in _message(error).split("; "):
                problems.append(Problem(_path(tuple(error["loc"])), message))
    if problems or service is None:
        raise InvalidService(problems)
    return service
