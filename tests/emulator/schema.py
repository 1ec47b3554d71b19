"""Structural-schema handling of custom resources, from their CustomResourceDefinition.

When the CRD of a custom resource is stored in the emulator (the fixtures load ``crds/*.yaml``, as
``kubectl apply -f crds/`` does on a cluster), every write of that resource goes through the same
steps as in kube-apiserver: unknown fields are pruned (except under
``x-kubernetes-preserve-unknown-fields``), nulls in non-nullable fields are dropped, ``default``
values are filled in, and the OpenAPI constraints are validated (422 ``Invalid`` when violated).
Not evaluated: CEL rules (``x-kubernetes-validations``), ``anyOf``/``oneOf``/``allOf``/``not``, formats.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from tests.emulator.resources import ResourceType

Schema = dict[str, Any]
ROOT_KEEP = ("apiVersion", "kind", "metadata")


def resources_from_crd(crd: dict[str, Any]) -> list[ResourceType]:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    return [
        ResourceType(
            spec["group"],
            version["name"],
            names["plural"],
            names["kind"],
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            subresources=frozenset((version.get("subresources") or {}).keys()),
            short_names=tuple(names.get("shortNames") or ()),
            categories=tuple(names.get("categories") or ()),
            builtin=False,
        )
        for version in spec.get("versions") or []
        if version.get("served", True)
    ]


def schema_for(crd: dict[str, Any] | None, version: str) -> Schema | None:
    for entry in ((crd or {}).get("spec") or {}).get("versions") or []:
        if entry.get("name") == version:
            schema: Schema | None = (entry.get("schema") or {}).get("openAPIV3Schema")
            return schema
    return None


def process(obj: dict[str, Any], schema: Schema) -> tuple[dict[str, Any], list[str]]:
    """Prune, default and validate an object; returns (the new object, validation errors)."""
    props = schema.get("properties") or {}
    result = {k: v for k, v in obj.items() if k in ROOT_KEEP}
    errors: list[str] = []
    for key, value in obj.items():
        if key in ROOT_KEEP:
            continue
        if key not in props:
            if schema.get("x-kubernetes-preserve-unknown-fields"):
                result[key] = value
            continue
        pruned = _prune(value, props[key])
        if pruned is not _DROP:
            result[key] = pruned
    for key, sub in props.items():
        if key not in ROOT_KEEP and key not in result and "default" in sub:
            result[key] = copy.deepcopy(sub["default"])
    for key in list(result):
        if key not in ROOT_KEEP and key in props:
            result[key] = _default(result[key], props[key])
            errors += _validate(result[key], props[key], key)
    errors += [f"{key}: Required value" for key in schema.get("required") or [] if key not in result]
    return result, errors


_DROP: Any = object()


def _prune(value: Any, schema: Schema) -> Any:
    if value is None:
        return None if schema.get("nullable") else _DROP
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        keep_unknown = schema.get("x-kubernetes-preserve-unknown-fields") or extra is True
        result = {}
        for key, sub in value.items():
            if props and key in props:
                pruned = _prune(sub, props[key])
            elif isinstance(extra, dict):
                pruned = _prune(sub, extra)
            elif keep_unknown:
                pruned = sub
            else:
                continue
            if pruned is not _DROP:
                result[key] = pruned
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [item for item in (_prune(v, schema["items"]) for v in value) if item is not _DROP]
    return value


def _default(value: Any, schema: Schema) -> Any:
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for key, sub in props.items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
        for key in list(value):
            sub = props.get(key) or (
                schema.get("additionalProperties")
                if isinstance(schema.get("additionalProperties"), dict)
                else None
            )
            if sub is not None:
                value[key] = _default(value[key], sub)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_default(item, schema["items"]) for item in value]
    return value


_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
}


def _validate(value: Any, schema: Schema, path: str) -> list[str]:
    if value is None:
        return (
            []
            if schema.get("nullable")
            else [f"{path}: Invalid value: null: {path} in body must not be null"]
        )
    errors: list[str] = []
    expected = schema.get("type")
    if schema.get("x-kubernetes-int-or-string"):
        if not isinstance(value, int | str) or isinstance(value, bool):
            return [f"{path}: Invalid value: {value!r}: {path} in body must be of type int-or-string"]
    elif expected in _TYPES and (
        not isinstance(value, _TYPES[expected])
        or (isinstance(value, bool) and expected in ("integer", "number"))
    ):
        return [f"{path}: Invalid value: {value!r}: {path} in body must be of type {expected}"]
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(repr(v) for v in schema["enum"])
        errors.append(f"{path}: Unsupported value: {value!r}: supported values: {allowed}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and (
            value < schema["minimum"]
            or (schema.get("exclusiveMinimum") is True and value == schema["minimum"])
        ):
            errors.append(
                f"{path}: Invalid value: {value}: {path} in body should be greater than or equal "
                f"to {schema['minimum']}"
            )
        if "maximum" in schema and (
            value > schema["maximum"]
            or (schema.get("exclusiveMaximum") is True and value == schema["maximum"])
        ):
            errors.append(
                f"{path}: Invalid value: {value}: {path} in body should be less than or equal "
                f"to {schema['maximum']}"
            )
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: Too long: may not be longer than {schema['maxLength']}")
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(
                f"{path}: Invalid value: {value!r}: {path} in body should be at least "
                f"{schema['minLength']} chars long"
            )
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(
                f"{path}: Invalid value: {value!r}: {path} in body should match '{schema['pattern']}'"
            )
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: Too many: {len(value)}: must have at most {schema['maxItems']} items")
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(
                f"{path}: Invalid value: {len(value)}: {path} in body should have at least "
                f"{schema['minItems']} items"
            )
        if isinstance(schema.get("items"), dict):
            for i, item in enumerate(value):
                errors += _validate(item, schema["items"], f"{path}[{i}]")
    if isinstance(value, dict):
        for key in schema.get("required") or []:
            if key not in value:
                errors.append(f"{path}.{key}: Required value")
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, sub in value.items():
            if key in props:
                errors += _validate(sub, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                errors += _validate(sub, extra, f"{path}[{key}]")
    return errors
