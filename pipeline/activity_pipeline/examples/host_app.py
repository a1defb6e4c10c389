"""An example host application that mounts the activity router; FOR LOCAL USE ONLY.

UNSAFE FOR PRODUCTION: its authentication trusts the `X-Tenant-Id` and
`X-Principal-Id` request headers, so anyone can act as anyone. A real host
replaces `header_caller` with its own authentication (a session cookie, an
OAuth bearer token) that returns a `Caller`.

Run it against the local stack with
`uv run uvicorn activity_pipeline.examples.host_app:create_app --factory --port 8000`.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated
from uuid import UUID

from activity_producer.dsn import for_sqlalchemy_async
from activity_producer.http import Caller, create_activity_router
from activity_producer.relay import RelaySettings
from fastapi import FastAPI, Header, HTTPException
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

__all__ = ["API_PREFIX", "create_app", "header_caller"]

API_PREFIX = "/api"
"""Path under which the example mounts the router."""


def _header_uuid(name: str, value: str | None) -> UUID:
    if value is None:
        raise HTTPException(
            status_code=401,
            detail=f"header {name} is missing; the example host identifies callers by "
            "X-Tenant-Id and X-Principal-Id (UUIDs)",
            headers={"WWW-Authenticate": "X-Principal-Id"},
        )
    try:
        return UUID(value)
    except ValueError as exc:
        raise HTTPException(
            status_code=401,
            detail=f"header {name} is {value[:64]!r}, not a UUID; send the caller's id as a UUID",
            headers={"WWW-Authenticate": "X-Principal-Id"},
        ) from exc


def header_caller(
    x_tenant_id: Annotated[
        str | None, Header(description="UNSAFE stub: the caller's tenant.")
    ] = None,
    x_principal_id: Annotated[
        str | None, Header(description="UNSAFE stub: the caller's principal.")
    ] = None,
) -> Caller:
    """Return the caller named by two request headers. UNSAFE: for local use only."""
    return Caller(
        tenant_id=_header_uuid("X-Tenant-Id", x_tenant_id),
        principal_id=_header_uuid("X-Principal-Id", x_principal_id),
    )


def create_app(database_url: str | None = None) -> FastAPI:
    """Return the example application on `database_url`, by default `ACTIVITY_DATABASE_URL`."""
    url = database_url if database_url is not None else RelaySettings().database_url
    engine = create_async_engine(for_sqlalchemy_async(url))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await engine.dispose()

    app = FastAPI(
        title="Example host application (local use only: trusts X-Tenant-Id/X-Principal-Id)",
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.include_router(
        create_activity_router(header_caller, async_sessionmaker(engine, expire_on_commit=False)),
        prefix=API_PREFIX,
    )
    return app
