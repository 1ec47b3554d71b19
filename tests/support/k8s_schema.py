"""Offline validation of manifests against the Kubernetes OpenAPI schemas (kubernetes-validate).

kubernetes-validate re-reads its large definitions file on every call; caching the file reads
makes validating thousands of rendered children take seconds instead of minutes. The schemas
themselves are untouched, and validation stays strict (unknown fields are errors).
"""

from __future__ import annotations

import functools
from typing import Any

import kubernetes_validate
import kubernetes_validate.utils as _utils

_utils.schema_contents = functools.lru_cache(maxsize=None)(_utils.schema_contents)

KUBERNETES_VERSIONS = ("1.29.0", "1.33.0")


def validation_errors(manifest: dict[str, Any], version: str) -> str | None:
    """None when valid; else a message naming the object and the schema error."""
    try:
        kubernetes_validate.validate(manifest, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        return f"{manifest['kind']}/{manifest['metadata']['name']} (k8s {version}) at {where}: {exc.message}"
    return None
