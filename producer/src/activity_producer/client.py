"""Async Python client of the HTTP API: preferences, subscriptions, the inbox, realtime tokens.

One `ActivityClient` wraps one `httpx.AsyncClient`; the host's authentication
travels in the headers it is given. Error responses raise `ActivityApiError`
carrying the problem details.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar
from uuid import UUID

import httpx
from pydantic import BaseModel, ValidationError

from activity_producer.errors import ProducerError
from activity_producer.http.models import (
    Notification,
    NotificationPage,
    Preference,
    Problem,
    ReadAllResult,
    RealtimeToken,
    Subscription,
    SubscriptionList,
)
from activity_producer.preferences import FilterMode
from activity_producer.subscriptions import SubscriptionScope

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "ActivityApiError",
    "ActivityClient",
    "ActivityClientError",
    "NotificationsApi",
    "RealtimeApi",
    "SubscriptionsApi",
]

DEFAULT_TIMEOUT_S = 10.0
"""Seconds to wait for one response; every endpoint is one short transaction."""

M = TypeVar("M", bound=BaseModel)


class ActivityClientError(ProducerError):
    """Raised when the client receives no response: connection refused, reset or timed out."""

    retriable = True


class ActivityApiError(ActivityClientError):
    """Raised when the API answers with an error status; `problem` holds its problem details."""

    retriable = False

    def __init__(self, message: str, status: int, problem: Problem | None) -> None:
        super().__init__(message)
        self.status = status
        self.problem = problem


class _Transport:
    """Sends requests and turns answers into models or `ActivityApiError`."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def call(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        try:
            response = await self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ActivityClientError(
                f"{method} {self.http.base_url}{path} got no answer: {exc!r}; "
                "check that the host application runs and the base URL is right"
            ) from exc

        if response.is_error:
            raise _error(method, path, response)
        return model.model_validate_json(response.content)


def _error(method: str, path: str, response: httpx.Response) -> ActivityApiError:
    try:
        problem: Problem | None = Problem.model_validate_json(response.content)
    except ValidationError:
        problem = None
    detail = problem.detail if problem is not None else response.text[:200]
    return ActivityApiError(
        f"{method} {path} failed with {response.status_code}: {detail}",
        response.status_code,
        problem,
    )


class SubscriptionsApi:
    """`client.subscriptions`: subscribe to resources, list and revoke subscriptions."""

    def __init__(self, transport: _Transport) -> None:
        self._transport = transport

    async def create(
        self, resource_id: UUID, scope: SubscriptionScope | str = SubscriptionScope.RESOURCE
    ) -> Subscription:
        """Subscribe to a resource; subscribing again returns the active subscription."""
        body = {"resource_id": str(resource_id), "scope": str(scope)}
        return await self._transport.call(Subscription, "POST", "subscriptions", json=body)

    async def list(self, resource_id: UUID | None = None) -> list[Subscription]:
        """Return the caller's active subscriptions, newest first, optionally of one resource."""
        params = {} if resource_id is None else {"resource_id": str(resource_id)}
        found = await self._transport.call(SubscriptionList, "GET", "subscriptions", params=params)
        return found.items

    async def revoke(self, subscription_id: UUID) -> Subscription:
        """Revoke one active subscription; returns it with `revoked_at` set."""
        return await self._transport.call(
            Subscription, "DELETE", f"subscriptions/{subscription_id}"
        )


class NotificationsApi:
    """`client.notifications`: the preference and the durable inbox."""

    def __init__(self, transport: _Transport) -> None:
        self._transport = transport

    async def get_preferences(self) -> Preference:
        """Return the caller's notification preference (the default when never saved)."""
        return await self._transport.call(Preference, "GET", "notifications/preferences")

    async def update_preferences(
        self, filter_mode: FilterMode | str, custom_actions: Iterable[str] = ()
    ) -> Preference:
        """Save the caller's notification preference; patterns are validated on save."""
        body = {"filter_mode": str(filter_mode), "custom_actions": list(custom_actions)}
        return await self._transport.call(Preference, "PUT", "notifications/preferences", json=body)

    async def list(
        self, *, unread_only: bool = False, limit: int | None = None, cursor: str | None = None
    ) -> NotificationPage:
        """Return one page of the inbox, newest first; pass `next_cursor` for the next page."""
        params: dict[str, str | int] = {"unread_only": "true" if unread_only else "false"}
        if limit is not None:
            params["limit"] = limit
        if cursor is not None:
            params["cursor"] = cursor
        return await self._transport.call(NotificationPage, "GET", "notifications", params=params)

    async def read(self, event_id: UUID) -> Notification:
        """Mark one notification read; returns it with `read_at` set."""
        return await self._transport.call(Notification, "POST", f"notifications/{event_id}/read")

    async def read_all(self) -> int:
        """Mark every unread notification read; returns how many were unread."""
        result = await self._transport.call(ReadAllResult, "POST", "notifications/read-all")
        return result.marked_read


class RealtimeApi:
    """`client.realtime`: Centrifugo connection tokens."""

    def __init__(self, transport: _Transport) -> None:
        self._transport = transport

    async def token(self) -> RealtimeToken:
        """Return a connection token and the caller's inbox channel."""
        return await self._transport.call(RealtimeToken, "POST", "realtime/token")


class ActivityClient:
    """The API's client; use it as an async context manager, or call `aclose()`.

    `base_url` is where the host mounted the router, e.g.
    `http://127.0.0.1:8000/api/`; `headers` carry the host's authentication.
    `transport` lets tests call an application in process
    (`httpx.ASGITransport(app)`).
    """

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url if base_url.endswith("/") else f"{base_url}/",
            headers=dict(headers or {}),
            transport=transport,
            timeout=timeout_s,
        )
        transport_ = _Transport(self._http)
        self.subscriptions = SubscriptionsApi(transport_)
        self.notifications = NotificationsApi(transport_)
        self.realtime = RealtimeApi(transport_)

    async def aclose(self) -> None:
        """Close the connections of the client."""
        await self._http.aclose()

    async def __aenter__(self) -> ActivityClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
