"""Write the JSON Schema of every topic's record into `schemas/json/`.

Run `python -m activity_schemas.export [DIRECTORY]` after changing a model and
commit the result: the committed files are the contract analysts read.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from activity_schemas.topics import TOPIC_MODELS

__all__ = ["render_schemas", "write_schemas"]

DEFAULT_DIRECTORY = Path(__file__).resolve().parents[2] / "json"


def render_schemas() -> dict[str, dict[str, Any]]:
    """Return each topic's JSON Schema, keyed by the file name it is published under."""
    return {
        f"{topic}.schema.json": model.model_json_schema(mode="serialization")
        for topic, model in TOPIC_MODELS.items()
    }


def write_schemas(directory: Path = DEFAULT_DIRECTORY) -> list[Path]:
    """Write every topic's JSON Schema into `directory` and return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in render_schemas().items():
        path = directory / name
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DIRECTORY
    for written_path in write_schemas(target):
        print(written_path)
