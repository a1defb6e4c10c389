"""The API as a standalone FastAPI application, and the OpenAPI document it publishes.

`producer/openapi.json` is this document, checked in; regenerate it with
`uv run python -m activity_producer.http > producer/openapi.json`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, HTTPException
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from activity_producer.http.router import Caller, create_activity_router
from activity_producer.http.tokens import RealtimeTokenIssuer

__all__ = [
    "API_TITLE",
    "API_VERSION",
    "create_api_app",
    "openapi_document",
    "render_openapi_document",
]

API_TITLE = "Activity notifications and subscriptions"
API_VERSION = "1.0.0"
API_DESCRIPTION = (
    "What a person hears about: notification preferences, subscriptions to resources, "
    "the durable inbox and realtime connection tokens. Every endpoint acts for the caller "
    "that the host application authenticated, within the caller's tenant."
)


def create_api_app(
    caller: Callable[..., Any],
    sessions: async_sessionmaker[AsyncSession],
    token_issuer: RealtimeTokenIssuer | None = None,
) -> FastAPI:
    """Return an application that serves the router alone, at the root path."""
    app = FastAPI(title=API_TITLE, version=API_VERSION, description=API_DESCRIPTION)
    app.include_router(create_activity_router(caller, sessions, token_issuer))
    return app


def _host_caller() -> Caller:
    """Stands for the host's authentication in the document; the document never runs it."""
    raise HTTPException(status_code=401, detail="no caller dependency is mounted")


def openapi_document() -> dict[str, Any]:
    """Return the OpenAPI document of the API."""
    app = create_api_app(
        _host_caller, async_sessionmaker(), RealtimeTokenIssuer(secret="document-only")
    )
    return app.openapi()


def render_openapi_document() -> str:
    """Return the OpenAPI document as the text checked in at `producer/openapi.json`."""
    return json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"
