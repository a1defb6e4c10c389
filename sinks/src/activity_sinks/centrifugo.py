"""Publishing broadcasts to Centrifugo through one long-lived `cent` client.

A batch of activities becomes one `batch` API call holding one `broadcast`
per activity. The broadcast's idempotency key is the event id; Centrifugo
keeps it per channel, so the effective key is (event, channel) and a retry
after a timeout never shows a person the same notification twice.

The request is built from plain dicts and the reply is read with one
`json.loads`. `cent`'s own reply parsing builds a pydantic schema for every
broadcast in a batch, which cost about 0.7 ms of CPU per activity and made
the sink CPU-bound. Transient failures (network, timeout, HTTP 5xx,
Centrifugo's internal and rate-limit codes) are retried with exponential
backoff and full jitter within a time budget. Permanent ones are returned per
channel, so that the caller dead-letters exactly those channels.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from cent import AsyncClient, BatchRequest
from cent.dto import BatchResult, Response
from cent.exceptions import (
    CentApiResponseError,
    CentDecodeError,
    CentError,
    CentTransportError,
    CentUnauthorizedError,
)

from activity_sinks.errors import PublishError
from activity_sinks.publish_metrics import (
    PUBLICATIONS,
    PUBLISH_LATENCY,
    PUBLISH_RETRIES,
)

__all__ = [
    "BACKOFF_BASE_S",
    "BACKOFF_MAX_S",
    "TRANSIENT_REPLY_CODES",
    "Broadcast",
    "CentrifugoPublisher",
    "ChannelFailure",
]

log = structlog.get_logger(__name__)

BACKOFF_BASE_S = 0.2
"""Upper bound of the first retry delay, in seconds; each later bound doubles (full jitter)."""

BACKOFF_MAX_S = 5.0
"""Maximum delay between two tries, in seconds, so a recovered Centrifugo is used within 5 s."""

TRANSIENT_REPLY_CODES = frozenset({100, 106, 108, 111})
"""Centrifugo reply codes worth retrying: internal, limit exceeded, not available, too many
requests. Every other code (unknown channel, bad request, permission denied...) is permanent."""

_RETRIED_STATUS = frozenset({408, 425, 429})
"""HTTP statuses below 500 that mean "try again later"."""


@dataclass(frozen=True)
class Broadcast:
    """One publication to several channels, deduplicated by Centrifugo on its key per channel."""

    channels: tuple[str, ...]
    data: dict[str, Any]
    idempotency_key: str


@dataclass(frozen=True)
class ChannelFailure:
    """A channel of a broadcast that Centrifugo rejected for good, with its reason."""

    channel: str
    code: int
    message: str

    @property
    def reason(self) -> str:
        """Return a reason line for the dead-letter topic."""
        return f"Centrifugo rejected channel {self.channel!r}: {self.code} {self.message}"


@dataclass
class _Reply:
    """One broadcast's reply: a whole-command error, or one error (or None) per channel."""

    error: tuple[int, str] | None = None
    channel_errors: list[tuple[int, str] | None] = field(default_factory=list)


class _RequestRejected(Exception):
    """Centrifugo rejected a whole request (bad request, too large)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message


class BroadcastBatchRequest(BatchRequest):
    """A `batch` request of prebuilt broadcast commands, with a reply parser that stays cheap."""

    @property
    def api_payload(self) -> Any:
        return {"commands": self.requests, "parallel": bool(self.parallel)}

    def parse_response(self, content: str) -> Response[Any]:  # type: ignore[override]
        try:
            document = json.loads(content)
        except ValueError as exc:
            raise CentDecodeError from exc
        error = document.get("error")
        if error:
            raise CentApiResponseError(code=error["code"], message=error["message"])
        replies = []
        for raw in document.get("replies", ()):
            reply = _Reply()
            if "error" in raw:
                reply.error = (raw["error"]["code"], raw["error"]["message"])
            else:
                for response in raw.get("broadcast", {}).get("responses", ()):
                    channel_error = response.get("error")
                    reply.channel_errors.append(
                        None
                        if channel_error is None
                        else (channel_error["code"], channel_error["message"])
                    )
            replies.append(reply)
        return Response[BatchResult].model_construct(
            result=BatchResult.model_construct(replies=replies)
        )


def _classify(exc: CentError) -> _RequestRejected | None:
    """Return `_RequestRejected` for an error that retrying cannot fix, None for a transient one."""
    if isinstance(exc, CentApiResponseError):
        return _RequestRejected(exc.code, exc.message)
    if isinstance(exc, CentUnauthorizedError):
        return None
    if isinstance(exc, CentTransportError):
        if exc.status_code >= 500 or exc.status_code in _RETRIED_STATUS:
            return None
        return _RequestRejected(exc.status_code, f"HTTP status {exc.status_code}")
    return None


class CentrifugoPublisher:
    """Publishes batches of broadcasts; `start()` and `stop()` bound its HTTP connection pool."""

    def __init__(
        self,
        api_url: str,
        api_key: str,
        timeout_s: float,
        retry_budget_s: float,
        client: AsyncClient | None = None,
    ) -> None:
        self._api_url = api_url
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._retry_budget_s = retry_budget_s
        self._given_client = client
        self._client: AsyncClient | None = None

    async def start(self) -> None:
        """Open the client and its connection pool (or adopt the one given)."""
        self._client = self._given_client or AsyncClient(
            self._api_url, self._api_key, timeout=self._timeout_s
        )

    async def stop(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            await self._client._session.close()
            self._client = None

    async def broadcast(self, broadcasts: Sequence[Broadcast]) -> list[list[ChannelFailure]]:
        """Publish every broadcast; return, per broadcast, the channels rejected for good.

        Raises `PublishError` when transient failures outlast the retry budget.
        """
        failures: list[list[ChannelFailure]] = [[] for _ in broadcasts]
        remaining = {i: list(b.channels) for i, b in enumerate(broadcasts) if b.channels}
        deadline = time.monotonic() + self._retry_budget_s
        await self._publish(broadcasts, remaining, failures, deadline)
        return failures

    async def _publish(
        self,
        broadcasts: Sequence[Broadcast],
        remaining: dict[int, list[str]],
        failures: list[list[ChannelFailure]],
        deadline: float,
    ) -> None:
        attempt = 0
        while remaining:
            attempt += 1
            indices = list(remaining)
            try:
                replies = await self._call(broadcasts, indices, remaining)
            except _RequestRejected as rejected:
                await self._split(broadcasts, remaining, failures, deadline, rejected)
                return
            except CentError as exc:
                await self._back_off(attempt, deadline, str(exc), len(indices))
                continue

            retry: dict[int, list[str]] = {}
            for index, reply in zip(indices, replies, strict=True):
                self._sort_reply(index, remaining[index], reply, retry, failures)
            remaining = retry
            if remaining:
                await self._back_off(attempt, deadline, "channels not available", len(remaining))

    async def _split(
        self,
        broadcasts: Sequence[Broadcast],
        remaining: dict[int, list[str]],
        failures: list[list[ChannelFailure]],
        deadline: float,
        rejected: _RequestRejected,
    ) -> None:
        """Find the broadcast a whole request was rejected for by halving the request."""
        indices = list(remaining)
        if len(indices) == 1:
            index = indices[0]
            failures[index].extend(
                ChannelFailure(channel, rejected.code, rejected.message)
                for channel in remaining[index]
            )
            return
        middle = len(indices) // 2
        for part in (indices[:middle], indices[middle:]):
            await self._publish(broadcasts, {i: remaining[i] for i in part}, failures, deadline)

    @staticmethod
    def _sort_reply(
        index: int,
        channels: list[str],
        reply: _Reply,
        retry: dict[int, list[str]],
        failures: list[list[ChannelFailure]],
    ) -> None:
        """Count accepted channels; queue transient failures; record permanent ones."""
        if reply.error is not None:
            code, message = reply.error
            if code in TRANSIENT_REPLY_CODES:
                retry[index] = channels
            else:
                failures[index].extend(ChannelFailure(c, code, message) for c in channels)
            return
        accepted = 0
        for channel, error in zip(channels, reply.channel_errors, strict=True):
            if error is None:
                accepted += 1
            elif error[0] in TRANSIENT_REPLY_CODES:
                retry.setdefault(index, []).append(channel)
            else:
                failures[index].append(ChannelFailure(channel, *error))
        PUBLICATIONS.inc(accepted)

    async def _call(
        self,
        broadcasts: Sequence[Broadcast],
        indices: list[int],
        remaining: dict[int, list[str]],
    ) -> list[_Reply]:
        if self._client is None:
            raise PublishError(
                "CentrifugoPublisher.broadcast() was called before start(); start it first"
            )
        commands = []
        for index in indices:
            broadcast = broadcasts[index]
            commands.append(
                {
                    "broadcast": {
                        "channels": remaining[index],
                        "data": broadcast.data,
                        "idempotency_key": broadcast.idempotency_key,
                    }
                }
            )
        request = BroadcastBatchRequest(requests=commands, parallel=True)
        started = time.perf_counter()
        try:
            result = await self._client.batch(request)
        except CentError as exc:
            rejected = _classify(exc)
            if rejected is not None:
                raise rejected from exc
            raise
        finally:
            PUBLISH_LATENCY.observe(time.perf_counter() - started)
        replies: list[_Reply] = result.replies  # type: ignore[assignment]
        return replies

    async def _back_off(self, attempt: int, deadline: float, error: str, broadcasts: int) -> None:
        delay = random.uniform(0, min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (attempt - 1)))
        if time.monotonic() + delay > deadline:
            raise PublishError(
                f"Centrifugo at {self._api_url} did not accept {broadcasts} broadcasts within "
                f"the retry budget of {self._retry_budget_s:g} s ({attempt} tries; last "
                f"error: {error}); check that Centrifugo is up, then replay the dead letters"
            )
        PUBLISH_RETRIES.inc()
        log.warning(
            "centrifugo_publish_retry",
            attempt=attempt,
            delay_s=round(delay, 3),
            broadcasts=broadcasts,
            error=error,
            consequence="sent again; idempotency keys drop what Centrifugo already has",
        )
        await asyncio.sleep(delay)
