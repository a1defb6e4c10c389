"""The checked-in OpenAPI document, and schemathesis against the API it describes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
import schemathesis
from activity_producer.dsn import for_sqlalchemy_async
from activity_producer.http import Caller, RealtimeTokenIssuer, create_api_app
from activity_producer.http.openapi import render_openapi_document
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

OPENAPI_FILE = Path(__file__).resolve().parents[2] / "producer" / "openapi.json"

SCHEMATHESIS_MAX_EXAMPLES = 8
"""Examples per operation and phase; keeps the whole run well under a minute."""

FUZZ_CALLER = Caller(tenant_id=uuid4(), principal_id=uuid4())


def test_checked_in_openapi_document_matches_the_router() -> None:
    checked_in = OPENAPI_FILE.read_text()

    generated = render_openapi_document()

    assert json.loads(checked_in) == json.loads(generated), (
        "producer/openapi.json is stale; regenerate it with "
        "`uv run python -m activity_producer.http > producer/openapi.json`"
    )


def test_openapi_document_covers_every_endpoint() -> None:
    document = json.loads(OPENAPI_FILE.read_text())

    operations = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }

    assert operations == {
        ("GET", "/notifications/preferences"),
        ("PUT", "/notifications/preferences"),
        ("POST", "/subscriptions"),
        ("GET", "/subscriptions"),
        ("DELETE", "/subscriptions/{subscription_id}"),
        ("GET", "/notifications"),
        ("POST", "/notifications/{event_id}/read"),
        ("POST", "/notifications/read-all"),
        ("POST", "/realtime/token"),
    }


FUZZ_SESSIONS: async_sessionmaker[AsyncSession] = async_sessionmaker(expire_on_commit=False)
"""Sessions of the fuzzed application; bound to the test database by `fuzz_database`."""

FUZZED_APP = create_api_app(
    lambda: FUZZ_CALLER,
    FUZZ_SESSIONS,
    RealtimeTokenIssuer(secret="fuzzing-secret-0123456789-0123456789"),
)

schema = schemathesis.openapi.from_asgi("/openapi.json", FUZZED_APP)


@pytest.fixture(scope="module")
def fuzz_database(database_url: str) -> Iterator[None]:
    """Bind the fuzzed application's sessions to the test database.

    Schemathesis calls the application through a synchronous test client that
    runs it on its own event loop, so the engine keeps no pooled connections.
    """
    engine = create_async_engine(for_sqlalchemy_async(database_url), poolclass=NullPool)
    FUZZ_SESSIONS.configure(bind=engine)
    yield
    FUZZ_SESSIONS.configure(bind=None)


def test_fuzzed_application_serves_the_checked_in_document() -> None:
    served = FUZZED_APP.openapi()

    assert served == json.loads(OPENAPI_FILE.read_text())


@schema.parametrize()
@settings(
    max_examples=SCHEMATHESIS_MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_openapi_document(case: schemathesis.Case, fuzz_database: None) -> None:
    # A paging cursor is opaque: any string fits its schema, yet only the ones the
    # API issued are accepted, so a made-up cursor is rightly refused with 422.
    excluded = [positive_data_acceptance] if case.operation.path == "/notifications" else []

    case.call_and_validate(excluded_checks=excluded)
