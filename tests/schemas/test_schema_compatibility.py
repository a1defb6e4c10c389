"""Compatibility of the published schemas with the committed ones, and its checker."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from activity_schemas.export import (
    DEFAULT_DIRECTORY,
    SchemaCompatibilityError,
    breaking_changes,
    compatibility_problems,
    released_path,
    render_schemas,
    schema_version,
    write_schemas,
)

Schema = dict[str, Any]

BASE: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "kind"],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "kind": {"$ref": "#/$defs/Kind"},
        "name": {"anyOf": [{"type": "string", "maxLength": 200}, {"type": "null"}]},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "$defs": {"Kind": {"enum": ["user", "service"], "type": "string"}},
}


def _changed(edit: Any) -> Schema:
    schema = copy.deepcopy(BASE)
    edit(schema)
    return schema


@pytest.mark.parametrize("name", sorted(render_schemas()))
def test_models_do_not_break_the_published_schemas(name: str) -> None:
    generated = render_schemas()[name]

    problems = compatibility_problems(DEFAULT_DIRECTORY, name, generated)

    assert problems == [], (
        f"{name} breaks readers of the published schema; make the change additive "
        "or bump the model's schema_version"
    )


@pytest.mark.parametrize("name", sorted(render_schemas()))
def test_every_published_version_is_released(name: str) -> None:
    generated = render_schemas()[name]

    released = released_path(DEFAULT_DIRECTORY, name, schema_version(generated))

    assert released.exists(), f"run `uv run python -m activity_schemas.export` to add {released}"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda s: s["properties"].pop("name"), r"\$\.name: field removed"),
        (
            lambda s: s["properties"].update(id={"type": "integer"}),
            r"\$\.id: type changed from string to integer",
        ),
        (
            lambda s: (
                s["properties"].update(note={"type": "string"}),
                s["required"].append("note"),
            ),
            r"\$\.note: field became required",
        ),
        (
            lambda s: s["$defs"]["Kind"]["enum"].remove("service"),
            r"\$\.kind: enum narrowed, no longer accepts \['service'\]",
        ),
        (
            lambda s: s["properties"].update(name={"type": "string"}),
            r"\$\.name: null is no longer accepted",
        ),
        (
            lambda s: s["properties"]["name"]["anyOf"][0].update(maxLength=20),
            r"\$\.name: maxLength tightened from 200 to 20",
        ),
        (
            lambda s: s["properties"]["tags"]["items"].update(type="integer"),
            r"\$\.tags\[\]: type changed from string to integer",
        ),
        (
            lambda s: s["properties"]["id"].update(format="email"),
            r"\$\.id: format changed from 'uuid' to 'email'",
        ),
        (
            lambda s: s["properties"]["tags"]["items"].update(pattern="^[a-z]+$"),
            r"\$\.tags\[\]: pattern changed from 'none' to",
        ),
    ],
    ids=[
        "removed-field",
        "changed-type",
        "added-required-field",
        "narrowed-enum",
        "dropped-null",
        "tighter-max-length",
        "changed-item-type",
        "changed-format",
        "added-pattern",
    ],
)
def test_breaking_change_is_reported(edit: Any, expected: str) -> None:
    changes = breaking_changes(BASE, _changed(edit))

    assert len(changes) == 1, changes
    assert re.match(expected, changes[0]), changes


@pytest.mark.parametrize(
    "edit",
    [
        lambda s: s["properties"].update(note={"anyOf": [{"type": "string"}, {"type": "null"}]}),
        lambda s: s["$defs"]["Kind"]["enum"].append("robot"),
        lambda s: s["properties"]["id"].update(description="The principal's id."),
        lambda s: s["required"].remove("kind"),
        lambda s: s["properties"]["name"]["anyOf"][0].update(maxLength=500),
        lambda s: s["properties"].update(id={"type": ["string", "null"], "format": "uuid"}),
    ],
    ids=[
        "new-optional-field",
        "wider-enum",
        "new-description",
        "field-became-optional",
        "looser-max-length",
        "null-added",
    ],
)
def test_additive_change_is_compatible(edit: Any) -> None:
    changes = breaking_changes(BASE, _changed(edit))

    assert changes == []


def test_removing_a_field_from_the_real_event_schema_is_breaking() -> None:
    committed = render_schemas()["activity.events.schema.json"]
    generated = copy.deepcopy(committed)
    del generated["$defs"]["ResourceRef"]["properties"]["parent_id"]

    changes = breaking_changes(committed, generated)

    assert changes == ["$.resource.parent_id: field removed"]


def test_export_refuses_a_breaking_change_and_writes_nothing(tmp_path: Path) -> None:
    write_schemas(tmp_path)
    events = tmp_path / "activity.events.schema.json"
    committed = json.loads(events.read_text(encoding="utf-8"))
    committed["properties"]["retired"] = {"type": "string"}
    events.write_text(json.dumps(committed), encoding="utf-8")

    with pytest.raises(
        SchemaCompatibilityError,
        match=r"(?s)activity\.events\.schema\.json: \$\.retired: field removed.*schema_version",
    ):
        write_schemas(tmp_path)

    assert "retired" in json.loads(events.read_text(encoding="utf-8"))["properties"]


def test_export_refuses_to_break_the_released_schema(tmp_path: Path) -> None:
    write_schemas(tmp_path)
    released = released_path(tmp_path, "activity.events.schema.json", "1")
    first = json.loads(released.read_text(encoding="utf-8"))
    first["$defs"]["Visibility"]["enum"].append("world")
    released.write_text(json.dumps(first), encoding="utf-8")

    with pytest.raises(
        SchemaCompatibilityError,
        match=r"activity\.events\.schema\.json: \$\.visibility: enum narrowed.*\['world'\]",
    ):
        write_schemas(tmp_path)


def test_export_keeps_the_released_schema_of_a_version(tmp_path: Path) -> None:
    write_schemas(tmp_path)
    released = released_path(tmp_path, "activity.events.schema.json", "1")
    first = json.loads(released.read_text(encoding="utf-8"))
    del first["properties"]["ui"]
    released.write_text(json.dumps(first), encoding="utf-8")

    write_schemas(tmp_path)

    assert "ui" not in json.loads(released.read_text(encoding="utf-8"))["properties"]


def test_export_writes_a_breaking_change_under_a_new_schema_version(tmp_path: Path) -> None:
    name = "activity.events.schema.json"
    older = copy.deepcopy(render_schemas()[name])
    older["properties"]["retired"] = {"type": "string"}
    older["properties"]["schema_version"]["const"] = "0"
    committed = tmp_path / name
    committed.write_text(json.dumps(older), encoding="utf-8")
    released_path(tmp_path, name, "0").parent.mkdir()
    released_path(tmp_path, name, "0").write_text(json.dumps(older), encoding="utf-8")

    write_schemas(tmp_path)

    assert "retired" not in json.loads(committed.read_text(encoding="utf-8"))["properties"]
    assert released_path(tmp_path, name, "1").exists()
    assert json.loads(released_path(tmp_path, name, "0").read_text(encoding="utf-8")) == older
