"""Write the JSON Schema of every published record into `schemas/json/`, and guard them.

Run `python -m activity_schemas.export [DIRECTORY]` after changing a model and
commit the result: the committed files are the contract that consumers and
analysts read. `released/` beside them keeps the first schema published under
each `schema_version`, and is never overwritten. `breaking_changes` compares
two schemas. Writing raises when a model would break readers of the committed
schema or of the released one with the same `schema_version`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from activity_schemas.errors import ActivityPipelineError
from activity_schemas.notification import Notification
from activity_schemas.topics import TOPIC_MODELS

__all__ = [
    "DEFAULT_DIRECTORY",
    "RELEASED_SUBDIRECTORY",
    "SchemaCompatibilityError",
    "breaking_changes",
    "compatibility_problems",
    "released_path",
    "render_schemas",
    "schema_version",
    "write_schemas",
]

DEFAULT_DIRECTORY = Path(__file__).resolve().parents[2] / "json"

RELEASED_SUBDIRECTORY = "released"
"""Folder, inside the schema directory, of the first schema of every `schema_version`."""

_UPPER_BOUNDS = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")
_LOWER_BOUNDS = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
_EXACT_RULES = ("pattern", "format", "multipleOf")
_VALUE_KEYWORDS = ("type", "enum", "const", "properties", "items", "prefixItems", "$ref", "anyOf")

Schema = dict[str, Any]


class SchemaCompatibilityError(ActivityPipelineError):
    """Raised when a generated schema would break readers of the committed one."""


def render_schemas() -> dict[str, dict[str, Any]]:
    """Return each topic's JSON Schema, keyed by the file name it is published under.

    The notification that Centrifugo clients receive is published beside them.
    """
    schemas = {
        f"{topic}.schema.json": model.model_json_schema(mode="serialization")
        for topic, model in TOPIC_MODELS.items()
    }
    schemas["notification.schema.json"] = Notification.model_json_schema(mode="serialization")
    return schemas


def schema_version(schema: Schema) -> str | None:
    """Return the `schema_version` a document of `schema` carries, or None if it has none."""
    field = schema.get("properties", {}).get("schema_version", {})
    version = field.get("const", field.get("default"))
    return str(version) if version is not None else None


def breaking_changes(committed: Schema, generated: Schema) -> list[str]:
    """Return how `generated` would break readers of `committed`; empty when it would not.

    A change is breaking when a document valid under the committed schema may
    be invalid under the generated one, or when a field disappears. Examples
    are a removed field, a changed type, a field that became required, a
    narrowed enum, and a tighter bound, pattern or format. New optional fields,
    wider enums and new descriptions are compatible. Each entry reads
    `<path>: <what changed>`.
    """
    return list(_Comparison(committed, generated).compare(committed, generated, "$"))


def released_path(directory: Path, name: str, version: str | None) -> Path:
    """Return where the first schema of `name` under `version` is kept, inside `directory`."""
    stem = name.removesuffix(".schema.json")
    return directory / RELEASED_SUBDIRECTORY / f"{stem}.v{version or 'none'}.schema.json"


def write_schemas(directory: Path = DEFAULT_DIRECTORY) -> list[Path]:
    """Write every schema into `directory`, and a released copy of each new version.

    Raises `SchemaCompatibilityError`, writing nothing, when a schema breaks the
    committed or the released one with the same `schema_version`. Returns the
    paths written.
    """
    rendered = render_schemas()

    problems = [
        f"{name}: {change}"
        for name, schema in rendered.items()
        for change in compatibility_problems(directory, name, schema)
    ]
    if problems:
        raise SchemaCompatibilityError(
            "the models would break readers of the published schemas:\n  "
            + "\n  ".join(problems)
            + "\nmake the change additive (new optional fields, wider enums), or bump the "
            "model's schema_version to publish a new version"
        )

    written = []
    for name, schema in rendered.items():
        text = json.dumps(schema, indent=2, sort_keys=True) + "\n"
        released = released_path(directory, name, schema_version(schema))
        targets = [directory / name] + ([] if released.exists() else [released])
        for path in targets:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written


def compatibility_problems(directory: Path, name: str, generated: Schema) -> list[str]:
    """Return how `generated` breaks the committed or released `name` of its version."""
    version = schema_version(generated)
    problems: list[str] = []
    for path in (directory / name, released_path(directory, name, version)):
        if not path.exists():
            continue
        published = json.loads(path.read_text(encoding="utf-8"))
        if schema_version(published) != version:
            continue
        for change in breaking_changes(published, generated):
            if change not in problems:
                problems.append(change)
    return problems


class _Comparison:
    """One comparison of two schema documents, each resolving its own `$ref`s."""

    def __init__(self, old_root: Schema, new_root: Schema) -> None:
        self.old_root = old_root
        self.new_root = new_root
        self.visiting: set[tuple[str, str]] = set()

    def compare(self, old: Schema, new: Schema, path: str) -> Iterator[str]:
        old_resolved = _resolve(self.old_root, old)
        new_resolved = _resolve(self.new_root, new)
        refs = (str(old.get("$ref", "")), str(new.get("$ref", "")))
        if refs == ("", ""):
            yield from self._compare_resolved(old_resolved, new_resolved, path)
            return
        if refs in self.visiting:
            # A recursive definition already under comparison further up.
            return
        self.visiting.add(refs)
        try:
            yield from self._compare_resolved(old_resolved, new_resolved, path)
        finally:
            self.visiting.discard(refs)

    def _compare_resolved(self, old: Schema, new: Schema, path: str) -> Iterator[str]:
        if not _constrains(new):
            return
        if not _constrains(old):
            yield f"{path}: accepted any value, now only {_describe(new)}"
            return
        old_branches = old.get("anyOf") or old.get("oneOf")
        new_branches = new.get("anyOf") or new.get("oneOf")
        if old_branches or new_branches:
            yield from self._compare_branches(old_branches or [old], new_branches or [new], path)
            return

        yield from _compare_types(old, new, path)
        yield from _compare_values(old, new, path)
        yield from _compare_rules(old, new, path)
        yield from self._compare_object(old, new, path)
        yield from self._compare_array(old, new, path)

    def _compare_branches(
        self, old_branches: list[Schema], new_branches: list[Schema], path: str
    ) -> Iterator[str]:
        for old_branch in old_branches:
            attempts = [
                list(self.compare(old_branch, new_branch, path)) for new_branch in new_branches
            ]
            if any(not changes for changes in attempts):
                continue
            old_resolved = _resolve(self.old_root, old_branch)
            if old_resolved.get("type") == "null":
                yield f"{path}: null is no longer accepted"
                continue
            yield from min(attempts, key=len)

    def _compare_object(self, old: Schema, new: Schema, path: str) -> Iterator[str]:
        old_properties = old.get("properties", {})
        new_properties = new.get("properties", {})
        for name, old_field in old_properties.items():
            if name not in new_properties:
                yield f"{path}.{name}: field removed"
                continue
            yield from self.compare(old_field, new_properties[name], f"{path}.{name}")

        for name in sorted(set(new.get("required", ())) - set(old.get("required", ()))):
            yield f"{path}.{name}: field became required"

        old_extra = old.get("additionalProperties", True)
        new_extra = new.get("additionalProperties", True)
        if old_extra is not False and new_extra is False:
            yield f"{path}: extra fields are no longer accepted"
        elif isinstance(old_extra, dict) and isinstance(new_extra, dict):
            yield from self.compare(old_extra, new_extra, f"{path}.*")
        elif old_extra is True and isinstance(new_extra, dict) and _constrains(new_extra):
            yield f"{path}: extra fields, once free, are now constrained"

    def _compare_array(self, old: Schema, new: Schema, path: str) -> Iterator[str]:
        if "items" in old or "items" in new:
            yield from self.compare(old.get("items", {}), new.get("items", {}), f"{path}[]")
        old_prefix = old.get("prefixItems", [])
        for index, new_item in enumerate(new.get("prefixItems", [])):
            old_item = old_prefix[index] if index < len(old_prefix) else old.get("items", {})
            yield from self.compare(old_item, new_item, f"{path}[{index}]")
        if new.get("uniqueItems") and not old.get("uniqueItems"):
            yield f"{path}: items must now be unique"


def _resolve(root: Schema, node: Schema) -> Schema:
    ref = node.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return node
    target: Any = root
    for part in ref[2:].split("/"):
        target = target.get(part, {}) if isinstance(target, dict) else {}
    merged = {key: value for key, value in node.items() if key != "$ref"}
    return {**target, **merged}


def _constrains(schema: Schema) -> bool:
    return any(key in schema for key in (*_VALUE_KEYWORDS, "oneOf", "not"))


def _types(schema: Schema) -> set[str] | None:
    declared = schema.get("type")
    if declared is None:
        return None
    return {declared} if isinstance(declared, str) else set(declared)


def _compare_types(old: Schema, new: Schema, path: str) -> Iterator[str]:
    old_types, new_types = _types(old), _types(new)
    if new_types is None:
        return
    if old_types is None:
        if "enum" not in old and "const" not in old:
            yield f"{path}: any type was accepted, now only {sorted(new_types)}"
        return
    if "number" in new_types:
        new_types = new_types | {"integer"}
    lost = old_types - new_types
    if lost:
        yield f"{path}: type changed from {_one_or_list(old_types)} to {_one_or_list(new_types)}"


def _compare_values(old: Schema, new: Schema, path: str) -> Iterator[str]:
    old_values = _allowed_values(old)
    new_values = _allowed_values(new)
    if new_values is None:
        return
    if old_values is None:
        yield f"{path}: values are now restricted to {new_values}"
        return
    removed = [value for value in old_values if value not in new_values]
    if removed:
        yield f"{path}: enum narrowed, no longer accepts {removed}"


def _allowed_values(schema: Schema) -> list[Any] | None:
    if "const" in schema:
        return [schema["const"]]
    if "enum" in schema:
        return list(schema["enum"])
    return None


def _compare_rules(old: Schema, new: Schema, path: str) -> Iterator[str]:
    for key in _UPPER_BOUNDS:
        if key in new and (key not in old or new[key] < old[key]):
            yield f"{path}: {key} tightened from {old.get(key, 'none')} to {new[key]}"
    for key in _LOWER_BOUNDS:
        if key in new and (key not in old or new[key] > old[key]):
            yield f"{path}: {key} tightened from {old.get(key, 'none')} to {new[key]}"
    for key in _EXACT_RULES:
        if key in new and new[key] != old.get(key):
            yield f"{path}: {key} changed from {old.get(key, 'none')!r} to {new[key]!r}"


def _describe(schema: Schema) -> str:
    values = _allowed_values(schema)
    if values is not None:
        return f"values {values}"
    types = _types(schema)
    return f"type {_one_or_list(types)}" if types else "a constrained value"


def _one_or_list(types: set[str] | None) -> str:
    if not types:
        return "any"
    ordered = sorted(types)
    return ordered[0] if len(ordered) == 1 else str(ordered)


def main(arguments: list[str]) -> int:
    """Write the schemas into the directory named in `arguments` (default: the package's)."""
    target = Path(arguments[0]) if arguments else DEFAULT_DIRECTORY
    try:
        written = write_schemas(target)
    except SchemaCompatibilityError as exc:
        print(exc, file=sys.stderr)
        return 1
    for written_path in written:
        print(written_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
