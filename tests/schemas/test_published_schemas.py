"""The committed JSON Schemas match the models."""

from __future__ import annotations

import json

from activity_schemas.export import DEFAULT_DIRECTORY, render_schemas


def test_committed_schemas_match_models() -> None:
    rendered = render_schemas()

    for name, schema in rendered.items():
        committed = json.loads((DEFAULT_DIRECTORY / name).read_text(encoding="utf-8"))
        assert committed == schema, (
            f"{name} differs from the model; run `uv run python -m activity_schemas.export`"
        )
