"""RFC 9457 problem details for every error the router returns.

The router's own route class turns request validation errors, HTTP errors
raised by the host's authentication dependency and the library's errors into
`application/problem+json` responses, so a host gets them without installing
exception handlers on its application.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from http import HTTPStatus
from typing import Any, ClassVar

import structlog
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute
from starlette.types import Receive, Scope, Send

from activity_producer.http.inbox import InvalidCursorError, NotificationNotFoundError
from activity_producer.http.models import FieldProblem, Problem
from activity_producer.preferences import InvalidPreferenceError
from activity_producer.subscriptions import (
    ResourceAccessDeniedError,
    ResourceNotFoundError,
    SubscriptionNotFoundError,
)

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "ProblemRoute",
    "problem_responses",
]

log = structlog.get_logger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"

_TYPE_PREFIX = "urn:activity-pipeline:problem:"

_KNOWN_ERRORS: dict[type[Exception], tuple[HTTPStatus, str]] = {
    ResourceNotFoundError: (HTTPStatus.NOT_FOUND, "resource-not-found"),
    SubscriptionNotFoundError: (HTTPStatus.NOT_FOUND, "subscription-not-found"),
    NotificationNotFoundError: (HTTPStatus.NOT_FOUND, "notification-not-found"),
    ResourceAccessDeniedError: (HTTPStatus.FORBIDDEN, "resource-access-denied"),
}


def problem_response(problem: Problem) -> JSONResponse:
    """Return `problem` as an `application/problem+json` response."""
    return JSONResponse(
        problem.model_dump(mode="json"), status_code=problem.status, media_type=PROBLEM_MEDIA_TYPE
    )


def _field(location: Sequence[int | str]) -> tuple[str, str]:
    """Split a pydantic error location into (where, dotted field path)."""
    where = str(location[0]) if location else "body"
    path = ".".join(str(part) for part in location[1:])
    return where, path or where


def _validation_problem(exc: RequestValidationError, instance: str) -> Problem:
    errors = []
    for error in exc.errors():
        where, field = _field(error.get("loc", ()))
        errors.append(FieldProblem(field=field, location=where, message=str(error.get("msg"))))
    listed = "; ".join(f"{error.field}: {error.message}" for error in errors)
    return Problem(
        type=f"{_TYPE_PREFIX}invalid-request",
        title="Invalid request",
        status=HTTPStatus.UNPROCESSABLE_ENTITY,
        detail=f"the request has invalid fields: {listed}; fix them and send it again",
        instance=instance,
        errors=errors,
    )


def _field_problem(exc: Exception, field: str, where: str, instance: str) -> Problem:
    return Problem(
        type=f"{_TYPE_PREFIX}invalid-request",
        title="Invalid request",
        status=HTTPStatus.UNPROCESSABLE_ENTITY,
        detail=str(exc),
        instance=instance,
        errors=[FieldProblem(field=field, location=where, message=str(exc))],
    )


def _server_problem(instance: str) -> Problem:
    status = HTTPStatus.INTERNAL_SERVER_ERROR
    return Problem(
        title=status.phrase,
        status=status,
        detail="the server failed to handle the request and logged it as `request_failed`; "
        "try again later, and report it if it persists",
        instance=instance,
    )


def _problem(exc: Exception, instance: str) -> Problem | None:
    """Return the problem details of `exc`, or None when it is not an error of the API."""
    if isinstance(exc, RequestValidationError):
        return _validation_problem(exc, instance)
    if isinstance(exc, InvalidPreferenceError):
        return _field_problem(exc, exc.field, "body", instance)
    if isinstance(exc, InvalidCursorError):
        return _field_problem(exc, exc.field, "query", instance)
    if isinstance(exc, HTTPException):
        status = HTTPStatus(exc.status_code)
        return Problem(
            title=status.phrase, status=status, detail=str(exc.detail), instance=instance
        )
    for error_type, (status, slug) in _KNOWN_ERRORS.items():
        if isinstance(exc, error_type):
            return Problem(
                type=f"{_TYPE_PREFIX}{slug}",
                title=status.phrase,
                status=status,
                detail=str(exc),
                instance=instance,
            )
    return None


class ProblemRoute(APIRoute):
    """A route that responds to every known error, and to a wrong method, with problem details."""

    allowed_by_name: ClassVar[dict[str, frozenset[str]]] = {}
    """Methods served on each route's path, by route name; see `with_sibling_methods`."""

    @classmethod
    def with_sibling_methods(cls, routes: Sequence[BaseRoute]) -> None:
        """Record, for each of `routes`, every method that any of them serves on its path."""
        by_path: dict[str, set[str]] = {}
        for route in routes:
            if isinstance(route, APIRoute):
                by_path.setdefault(route.path_format, set()).update(route.methods or ())
        for route in routes:
            if isinstance(route, APIRoute):
                cls.allowed_by_name[route.name] = frozenset(by_path[route.path_format])

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Respond 405 to a method the path does not serve, listing every method it serves."""
        if scope["type"] != "http" or scope["method"] in (self.methods or ()):
            await super().handle(scope, receive, send)
            return

        allowed = ", ".join(sorted(self.allowed_by_name.get(self.name, self.methods or ())))
        log.info("method_not_allowed", path=scope["path"], method=scope["method"], allowed=allowed)
        status = HTTPStatus.METHOD_NOT_ALLOWED
        response = problem_response(
            Problem(
                title=status.phrase,
                status=status,
                detail=f"{scope['method']} is not allowed on {scope['path']}; use {allowed}",
                instance=scope["path"],
            )
        )
        response.headers["Allow"] = allowed
        await response(scope, receive, send)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Wrap FastAPI's handler so that known errors become problem responses."""
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                problem = _problem(exc, request.url.path)
                if problem is None:
                    log.exception("request_failed", path=request.url.path)
                    return problem_response(_server_problem(request.url.path))
                log.info(
                    "request_rejected",
                    path=request.url.path,
                    status=problem.status,
                    problem=problem.type,
                )
                response = problem_response(problem)
                if isinstance(exc, HTTPException) and exc.headers:
                    response.headers.update(exc.headers)
                return response

        return handle


def _inlined(schema: Any, definitions: dict[str, Any]) -> Any:
    """Return `schema` with every local `$defs` reference replaced by its definition."""
    if isinstance(schema, dict):
        reference = schema.get("$ref")
        if isinstance(reference, str) and reference.startswith("#/$defs/"):
            return _inlined(definitions[reference.removeprefix("#/$defs/")], definitions)
        return {key: _inlined(value, definitions) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_inlined(item, definitions) for item in schema]
    return schema


def _problem_schema() -> dict[str, Any]:
    schema = Problem.model_json_schema(mode="serialization")
    definitions = schema.pop("$defs", {})
    inlined: dict[str, Any] = _inlined(schema, definitions)
    return inlined


def problem_responses(*statuses: HTTPStatus) -> dict[int | str, dict[str, Any]]:
    """Return OpenAPI `responses` entries that document problem details for `statuses`.

    The schema is written inline, so the entries stay valid in whatever
    application mounts the router.
    """
    schema = _problem_schema()
    return {
        int(status): {
            "description": status.phrase,
            "content": {PROBLEM_MEDIA_TYPE: {"schema": schema}},
        }
        for status in statuses
    }
