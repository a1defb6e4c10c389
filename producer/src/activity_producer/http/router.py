"""The FastAPI router a host application mounts: preferences, subscriptions, inbox, token.

The host passes the dependency that identifies the caller (`Caller`: tenant and
principal) and a session factory for its database. Every endpoint works
within the caller's tenant only, so another tenant's ids answer 404. Every
change runs in one transaction with the activity that records it.
"""

# FastAPI resolves the annotations of the endpoints below at definition time, and
# they refer to the host's dependency; postponed annotations would hide it.

from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Annotated, Any, ClassVar
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, Response
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from activity_producer.http.inbox import list_inbox, mark_all_read, mark_read
from activity_producer.http.models import (
    INBOX_PAGE_DEFAULT,
    INBOX_PAGE_MAX,
    Notification,
    NotificationPage,
    Preference,
    PreferenceUpdate,
    ReadAllResult,
    RealtimeToken,
    Subscription,
    SubscriptionCreate,
    SubscriptionList,
)
from activity_producer.http.problems import ProblemRoute, problem_responses
from activity_producer.http.tokens import RealtimeTokenIssuer, inbox_channel
from activity_producer.preferences import get_preference, update_preference
from activity_producer.subscriptions import list_subscriptions, revoke_subscription, subscribe

__all__ = ["Caller", "create_activity_router"]

CURSOR_MAX_LENGTH = 512
"""Longest accepted paging cursor, in characters; issued cursors are under 100."""


@dataclass(frozen=True)
class Caller:
    """The principal calling the API and the tenant it acts in, as the host authenticated them."""

    tenant_id: UUID
    principal_id: UUID


def _notification(row: Any) -> Notification:
    return Notification(
        event_id=row.event_id,
        action=row.action,
        notification=row.notification,
        created_at=row.created_at,
        read_at=row.read_at,
    )


def create_activity_router(
    caller: Callable[..., Any],
    sessions: async_sessionmaker[AsyncSession],
    token_issuer: RealtimeTokenIssuer | None = None,
) -> APIRouter:
    """Return the router; `caller` is a FastAPI dependency that returns a `Caller`.

    `caller` may take its own parameters (headers, a bearer token) as any
    FastAPI dependency does, and raise `HTTPException(401)` for an unknown
    caller; that response becomes problem details too. `token_issuer` signs
    realtime tokens; by default it reads `ACTIVITY_CENTRIFUGO_TOKEN_SECRET`.
    """
    issuer = token_issuer if token_issuer is not None else RealtimeTokenIssuer()

    class ActivityRoute(ProblemRoute):
        """The routes of this router; they share one record of the methods on each path."""

        allowed_by_name: ClassVar[dict[str, frozenset[str]]] = {}

    router = APIRouter(
        route_class=ActivityRoute,
        responses=problem_responses(
            HTTPStatus.UNAUTHORIZED,
            HTTPStatus.UNPROCESSABLE_ENTITY,
            HTTPStatus.INTERNAL_SERVER_ERROR,
        ),
    )
    CurrentCaller = Annotated[Caller, Depends(caller)]

    @router.get(
        "/notifications/preferences",
        operation_id="get_preferences",
        tags=["preferences"],
        summary="Read the caller's notification preference, or the default it falls back to",
    )
    async def read_preferences(current: CurrentCaller) -> Preference:
        async with sessions() as session:
            stored = await get_preference(session, current.tenant_id, current.principal_id)
        return Preference.from_stored(stored)

    @router.put(
        "/notifications/preferences",
        operation_id="update_preferences",
        tags=["preferences"],
        summary="Save the caller's notification preference",
        responses=problem_responses(HTTPStatus.BAD_REQUEST),
    )
    async def save_preferences(current: CurrentCaller, update: PreferenceUpdate) -> Preference:
        async with sessions() as session, session.begin():
            change = await update_preference(
                session, current.tenant_id, current.principal_id, update
            )
        return Preference.from_stored(change.preference)

    @router.post(
        "/subscriptions",
        operation_id="create_subscription",
        tags=["subscriptions"],
        summary="Subscribe the caller to a resource",
        status_code=HTTPStatus.CREATED,
        responses={
            HTTPStatus.OK: {
                "model": Subscription,
                "description": "Already subscribed with that scope; the active subscription.",
            },
            **problem_responses(HTTPStatus.BAD_REQUEST, HTTPStatus.FORBIDDEN, HTTPStatus.NOT_FOUND),
        },
    )
    async def create_subscription(
        current: CurrentCaller, request: SubscriptionCreate, response: Response
    ) -> Subscription:
        async with sessions() as session, session.begin():
            change = await subscribe(
                session, current.tenant_id, current.principal_id, request.resource_id, request.scope
            )
        if not change.created:
            response.status_code = HTTPStatus.OK
        return Subscription.from_stored(change.subscription)

    @router.get(
        "/subscriptions",
        operation_id="list_subscriptions",
        tags=["subscriptions"],
        summary="List the caller's active subscriptions, newest first",
    )
    async def read_subscriptions(
        current: CurrentCaller,
        resource_id: Annotated[
            UUID | None, Query(description="Only the subscriptions of this resource.")
        ] = None,
    ) -> SubscriptionList:
        async with sessions() as session:
            stored = await list_subscriptions(
                session, current.tenant_id, current.principal_id, resource_id
            )
        return SubscriptionList(items=[Subscription.from_stored(item) for item in stored])

    @router.delete(
        "/subscriptions/{subscription_id}",
        operation_id="revoke_subscription",
        tags=["subscriptions"],
        summary="Revoke one of the caller's subscriptions",
        responses=problem_responses(HTTPStatus.NOT_FOUND),
    )
    async def delete_subscription(
        current: CurrentCaller,
        subscription_id: Annotated[UUID, Path(description="Id of an active subscription.")],
    ) -> Subscription:
        async with sessions() as session, session.begin():
            change = await revoke_subscription(
                session, current.tenant_id, current.principal_id, subscription_id
            )
        return Subscription.from_stored(change.subscription)

    @router.get(
        "/notifications",
        operation_id="list_notifications",
        tags=["notifications"],
        summary="Read the caller's durable inbox, newest first",
    )
    async def read_notifications(
        current: CurrentCaller,
        unread_only: Annotated[
            bool, Query(description="Only notifications the caller has not read.")
        ] = False,
        limit: Annotated[
            int, Query(ge=1, le=INBOX_PAGE_MAX, description="Notifications per page.")
        ] = INBOX_PAGE_DEFAULT,
        cursor: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=CURSOR_MAX_LENGTH,
                description="`next_cursor` of the previous page; omit for the first page.",
            ),
        ] = None,
    ) -> NotificationPage:
        async with sessions() as session:
            page = await list_inbox(
                session,
                current.tenant_id,
                current.principal_id,
                limit=limit,
                cursor=cursor,
                unread_only=unread_only,
            )
        return NotificationPage(
            items=[_notification(row) for row in page.rows], next_cursor=page.next_cursor
        )

    @router.post(
        "/notifications/read-all",
        operation_id="read_all_notifications",
        tags=["notifications"],
        summary="Mark every notification of the caller read",
    )
    async def read_all(current: CurrentCaller) -> ReadAllResult:
        async with sessions() as session, session.begin():
            marked = await mark_all_read(session, current.tenant_id, current.principal_id)
        return ReadAllResult(marked_read=marked)

    @router.post(
        "/notifications/{event_id}/read",
        operation_id="read_notification",
        tags=["notifications"],
        summary="Mark one notification of the caller read",
        responses=problem_responses(HTTPStatus.NOT_FOUND),
    )
    async def read_one(
        current: CurrentCaller,
        event_id: Annotated[UUID, Path(description="Event id of the notification.")],
    ) -> Notification:
        async with sessions() as session, session.begin():
            row = await mark_read(session, current.tenant_id, current.principal_id, event_id)
        return _notification(row)

    @router.post(
        "/realtime/token",
        operation_id="create_realtime_token",
        tags=["realtime"],
        summary="Issue a Centrifugo connection token for the caller",
    )
    async def realtime_token(current: CurrentCaller) -> RealtimeToken:
        issued = issuer.issue(current.principal_id)
        return RealtimeToken(
            token=issued.token,
            expires_at=issued.expires_at,
            inbox_channel=inbox_channel(current.tenant_id, current.principal_id),
        )

    ActivityRoute.with_sibling_methods(router.routes)
    return router
