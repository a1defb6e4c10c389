"""The HTTP API of preferences, subscriptions, the inbox and realtime tokens, for host apps.

Needs the `http` extra (`activity-producer[http]`). A host mounts
`create_activity_router(caller, sessions)` with its own authentication
dependency returning a `Caller`.
"""

from activity_producer.http.openapi import create_api_app, openapi_document
from activity_producer.http.router import Caller, create_activity_router
from activity_producer.http.tokens import RealtimeTokenIssuer

__all__ = [
    "Caller",
    "RealtimeTokenIssuer",
    "create_activity_router",
    "create_api_app",
    "openapi_document",
]
