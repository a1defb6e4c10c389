"""Print the OpenAPI document: `uv run python -m activity_producer.http > producer/openapi.json`."""

import sys

from activity_producer.http.openapi import render_openapi_document

sys.stdout.write(render_openapi_document())
