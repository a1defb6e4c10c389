"""Recording activities with the outbox against real PostgreSQL, with async and sync sessions.

Every test that records runs twice, once through `AsyncSession` (asyncpg) and
once through `Session` (psycopg), to show that both behave the same.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import pytest
import structlog.testing
from activity_producer import (
    ActivityRecorder,
    EnvelopeError,
    PayloadPolicy,
    PayloadPolicyError,
    ProducerError,
    RecordedActivity,
    UnknownActionError,
    configure_recording,
    current_recorder,
    default_catalogue,
    record_activity_with_outbox,
    record_activity_with_outbox_sync,
    tx_activity,
    tx_activity_sync,
)
from activity_producer import recording as recording_module
from activity_producer.dsn import for_sqlalchemy_async, for_sqlalchemy_sync
from activity_producer.policy import REDACTED
from activity_schemas import ActivityEnvelope, ActivityEvent, AuthorizationDecision, UiHints
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session

CONCURRENT_CALLERS = 16
"""Parallel callers in the concurrency tests; more than one pool's worth would only queue."""

LOCK_WAIT_TIMEOUT_S = 60.0
"""How long to wait for a caller to block on the idempotency key; generous on a busy machine."""

DOMAIN_TABLE = """
CREATE TABLE IF NOT EXISTS recording_test_documents (
    id uuid PRIMARY KEY,
    title text NOT NULL
)
"""


def _fields(**overrides: object) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "tenant_id": uuid4(),
        "actor_principal_id": uuid4(),
        "resource_id": uuid4(),
        "resource_type": "signal",
        "action": "signal.registered",
        "payload": {"signal_type": "momentum"},
    }
    fields.update(overrides)
    return fields


def _envelope(**overrides: object) -> ActivityEnvelope:
    return ActivityEnvelope.model_validate(_fields(**overrides))


@pytest.fixture(scope="module")
async def async_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(
        for_sqlalchemy_async(database_url), pool_size=CONCURRENT_CALLERS, max_overflow=4
    )
    async with engine.begin() as conn:
        await conn.execute(text(DOMAIN_TABLE))
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
def sync_engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(
        for_sqlalchemy_sync(database_url), pool_size=CONCURRENT_CALLERS, max_overflow=4
    )
    yield engine
    engine.dispose()


@dataclass
class Caller:
    """Runs the same step with one kind of session: `async` (asyncpg) or `sync` (psycopg)."""

    kind: str
    async_engine: AsyncEngine
    sync_engine: Engine

    async def record(
        self, envelope: ActivityEnvelope | dict[str, Any], recorder: ActivityRecorder | None = None
    ) -> RecordedActivity:
        """Record `envelope` in a transaction of its own, and commit."""
        chosen = recorder if recorder is not None else current_recorder()
        if self.kind == "async":
            async with AsyncSession(self.async_engine) as session, session.begin():
                return await chosen.record(session, envelope)
        with Session(self.sync_engine) as session, session.begin():
            return chosen.record_sync(session, envelope)

    async def record_then_roll_back(self, envelope: ActivityEnvelope) -> None:
        if self.kind == "async":
            async with AsyncSession(self.async_engine) as session, session.begin():
                await record_activity_with_outbox(session, envelope)
                await session.rollback()
            return
        with Session(self.sync_engine) as session, session.begin():
            record_activity_with_outbox_sync(session, envelope)
            session.rollback()

    async def tx(
        self, envelope: ActivityEnvelope, title: str, *, fail: bool = False
    ) -> tuple[UUID | None, RecordedActivity]:
        """Run `tx_activity` whose domain function inserts a document titled `title`."""
        if self.kind == "async":
            async with AsyncSession(self.async_engine) as session:
                return await tx_activity(session, envelope, _async_domain(title, fail))
        with Session(self.sync_engine) as session:
            return tx_activity_sync(session, envelope, _sync_domain(title, fail))

    async def tx_inside_open_transaction(
        self, outer_title: str, envelope: ActivityEnvelope, title: str, *, fail: bool
    ) -> None:
        """Insert `outer_title`, run `tx_activity` in a savepoint, then commit the outer change."""
        if self.kind == "async":
            async with AsyncSession(self.async_engine) as session, session.begin():
                await _async_domain(outer_title, False)(session)
                with contextlib.suppress(RuntimeError):
                    await tx_activity(session, envelope, _async_domain(title, fail))
                await session.execute(text("SELECT 1"))
            return
        with Session(self.sync_engine) as session, session.begin():
            _sync_domain(outer_title, False)(session)
            with contextlib.suppress(RuntimeError):
                tx_activity_sync(session, envelope, _sync_domain(title, fail))
            session.execute(text("SELECT 1"))

    async def nested_tx(
        self, outer: ActivityEnvelope, inner: ActivityEnvelope, *, roll_back_outer: bool
    ) -> None:
        """Run `tx_activity` inside another one's domain function."""
        if self.kind == "async":

            async def outer_domain(session: AsyncSession) -> None:
                await tx_activity(session, inner, _async_domain("inner", False))
                if roll_back_outer:
                    raise RuntimeError("outer domain change failed")

            async with AsyncSession(self.async_engine) as session:
                await tx_activity(session, outer, outer_domain)
            return

        def outer_sync_domain(session: Session) -> None:
            tx_activity_sync(session, inner, _sync_domain("inner", False))
            if roll_back_outer:
                raise RuntimeError("outer domain change failed")

        with Session(self.sync_engine) as session:
            tx_activity_sync(session, outer, outer_sync_domain)

    async def record_concurrently(self, envelope: ActivityEnvelope, callers: int) -> list[bool]:
        """Record the same envelope from `callers` parallel transactions; return `created` flags."""
        if self.kind == "async":
            outcomes = await asyncio.gather(*(self.record(envelope) for _ in range(callers)))
            return [outcome.created for outcome in outcomes]

        def record_sync() -> bool:
            with Session(self.sync_engine) as session, session.begin():
                return record_activity_with_outbox_sync(session, envelope).created

        with ThreadPoolExecutor(max_workers=callers) as pool:
            futures = [pool.submit(record_sync) for _ in range(callers)]
            return [future.result() for future in futures]


def _async_domain(title: str, fail: bool) -> Any:
    async def domain(session: AsyncSession) -> UUID:
        document_id = uuid4()
        await session.execute(
            text("INSERT INTO recording_test_documents (id, title) VALUES (:id, :title)"),
            {"id": document_id, "title": title},
        )
        if fail:
            raise RuntimeError("domain change failed")
        return document_id

    return domain


def _sync_domain(title: str, fail: bool) -> Any:
    def domain(session: Session) -> UUID:
        document_id = uuid4()
        session.execute(
            text("INSERT INTO recording_test_documents (id, title) VALUES (:id, :title)"),
            {"id": document_id, "title": title},
        )
        if fail:
            raise RuntimeError("domain change failed")
        return document_id

    return domain


@pytest.fixture(params=["async", "sync"])
def caller(
    request: pytest.FixtureRequest, async_engine: AsyncEngine, sync_engine: Engine
) -> Caller:
    return Caller(request.param, async_engine, sync_engine)


@pytest.fixture
def restore_recording() -> Iterator[None]:
    """Put the module-level recorder back after a test that reconfigures it."""
    original = current_recorder()
    yield
    recording_module._default_recorder = original


async def _scalar(engine: AsyncEngine, sql: str, **parameters: object) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql), parameters)).scalar_one()


async def _activities(engine: AsyncEngine, resource_id: object) -> int:
    return int(
        await _scalar(
            engine, "SELECT count(*) FROM activities WHERE resource_id = :r", r=resource_id
        )
    )


async def _outbox_rows(engine: AsyncEngine, resource_id: object) -> int:
    return int(
        await _scalar(
            engine, "SELECT count(*) FROM activity_outbox WHERE subject = :r", r=str(resource_id)
        )
    )


async def _documents(engine: AsyncEngine, title: str) -> int:
    return int(
        await _scalar(
            engine, "SELECT count(*) FROM recording_test_documents WHERE title = :t", t=title
        )
    )


async def test_commit_writes_activity_and_outbox_row(
    caller: Caller, async_engine: AsyncEngine
) -> None:
    envelope = _envelope()

    recorded = await caller.record(envelope)

    assert recorded.created
    assert await _activities(async_engine, envelope.resource_id) == 1
    assert await _outbox_rows(async_engine, envelope.resource_id) == 1


async def test_outbox_row_holds_the_versioned_event_document(
    caller: Caller, async_engine: AsyncEngine
) -> None:
    envelope = _envelope(
        actor_display_name="Ada",
        resource_parent_id=uuid4(),
        target_principal_id=uuid4(),
        visibility="scope",
        payload={"signal_type": "momentum", "auth": {"api_key": "k"}},
        delivery_channels=["inbox"],
        authorization={"allowed": True, "policy": "signals.write"},
        ui={"title": "Signal registered", "severity": "info"},
    )

    recorded = await caller.record(envelope)

    async with async_engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT o.topic, o.message_key, o.event_type, o.payload AS document, "
                    "a.payload, a.recorded_at FROM activity_outbox o "
                    "JOIN activities a ON a.id = o.event_id WHERE o.event_id = :id"
                ),
                {"id": recorded.event_id},
            )
        ).one()
    event = ActivityEvent.model_validate(row.document)
    assert (row.topic, row.event_type) == ("activity.events", "signal.registered")
    assert row.message_key == f"{envelope.tenant_id}:{envelope.resource_id}"
    assert event.schema_version == "1"
    assert event.event_id == recorded.event_id
    assert (event.actor.id, event.actor.kind, event.actor.display_name) == (
        envelope.actor_principal_id,
        "user",
        "Ada",
    )
    assert (event.resource.id, event.resource.type, event.resource.parent_id) == (
        envelope.resource_id,
        "signal",
        envelope.resource_parent_id,
    )
    assert event.target_principal_id == envelope.target_principal_id
    assert event.visibility == "scope"
    assert event.targets == ("inbox",)
    assert event.authorization == AuthorizationDecision(allowed=True, policy="signals.write")
    assert event.ui == UiHints(title="Signal registered", severity="info")
    assert event.payload == row.payload == {"signal_type": "momentum", "auth": REDACTED}
    assert event.recorded_at == row.recorded_at == recorded.recorded_at


async def test_recorded_at_comes_from_the_database_clock(
    caller: Caller, async_engine: AsyncEngine
) -> None:
    envelope = _envelope(created_at="2001-01-01T00:00:00Z")

    recorded = await caller.record(envelope)

    database_now = await _scalar(async_engine, "SELECT clock_timestamp()")
    assert recorded.recorded_at.year > 2001
    assert abs((database_now - recorded.recorded_at).total_seconds()) < 600


async def test_rollback_leaves_nothing(caller: Caller, async_engine: AsyncEngine) -> None:
    envelope = _envelope()

    await caller.record_then_roll_back(envelope)

    assert await _activities(async_engine, envelope.resource_id) == 0
    assert await _outbox_rows(async_engine, envelope.resource_id) == 0


async def test_second_recording_returns_first_and_writes_nothing(
    caller: Caller, async_engine: AsyncEngine
) -> None:
    envelope = _envelope()
    first = await caller.record(envelope)

    second = await caller.record(envelope)

    assert not second.created
    assert (second.event_id, second.recorded_at) == (first.event_id, first.recorded_at)
    assert await _activities(async_engine, envelope.resource_id) == 1
    assert await _outbox_rows(async_engine, envelope.resource_id) == 1


async def test_other_action_on_same_resource_and_correlation_is_a_new_activity(
    caller: Caller, async_engine: AsyncEngine
) -> None:
    envelope = _envelope()
    await caller.record(envelope)

    second = await caller.record(envelope.model_copy(update={"action": "signal.validated"}))

    assert second.created
    assert await _activities(async_engine, envelope.resource_id) == 2


async def test_many_concurrent_callers_record_one_activity_and_one_outbox_row(
    caller: Caller, async_engine: AsyncEngine
) -> None:
    envelope = _envelope()

    created = await caller.record_concurrently(envelope, CONCURRENT_CALLERS)

    assert created.count(True) == 1
    assert await _activities(async_engine, envelope.resource_id) == 1
    assert await _outbox_rows(async_engine, envelope.resource_id) == 1


async def _wait_for_lock_waiter(engine: AsyncEngine, application_name: str) -> bool:
    async def waiting() -> bool:
        return bool(
            await _scalar(
                engine,
                "SELECT count(*) > 0 FROM pg_stat_activity "
                "WHERE application_name = :name AND wait_event_type = 'Lock'",
                name=application_name,
            )
        )

    deadline = asyncio.get_running_loop().time() + LOCK_WAIT_TIMEOUT_S
    while asyncio.get_running_loop().time() < deadline:
        if await waiting():
            return True
        await asyncio.sleep(0.05)
    return False


@pytest.mark.parametrize("first_outcome", ["commit", "rollback"])
async def test_caller_blocked_on_an_open_recording_follows_its_outcome(
    database_url: str, async_engine: AsyncEngine, first_outcome: str
) -> None:
    envelope = _envelope()
    application_name = f"recording-test-{uuid4().hex[:8]}"
    blocked_engine = create_async_engine(
        for_sqlalchemy_async(database_url),
        connect_args={"server_settings": {"application_name": application_name}},
    )
    async with AsyncSession(async_engine) as first_session:
        await first_session.begin()
        first = await record_activity_with_outbox(first_session, envelope)

        async def second_caller() -> RecordedActivity:
            async with AsyncSession(blocked_engine) as session, session.begin():
                return await record_activity_with_outbox(session, envelope)

        second_task = asyncio.create_task(second_caller())
        blocked = await _wait_for_lock_waiter(async_engine, application_name)
        if first_outcome == "commit":
            await first_session.commit()
        else:
            await first_session.rollback()

    second = await asyncio.wait_for(second_task, LOCK_WAIT_TIMEOUT_S)
    await blocked_engine.dispose()

    assert blocked
    assert second.created is (first_outcome == "rollback")
    assert (second.event_id == first.event_id) is (first_outcome == "commit")
    assert await _activities(async_engine, envelope.resource_id) == 1
    assert await _outbox_rows(async_engine, envelope.resource_id) == 1


async def test_async_and_sync_sessions_share_one_idempotency_key(
    async_engine: AsyncEngine, sync_engine: Engine
) -> None:
    envelope = _envelope()
    async_caller = Caller("async", async_engine, sync_engine)
    sync_caller = Caller("sync", async_engine, sync_engine)

    first = await async_caller.record(envelope)
    second = await sync_caller.record(envelope)

    assert (first.created, second.created) == (True, False)
    assert second.event_id == first.event_id


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("tenant_id", "tenant-7", r"tenant_id='tenant-7': Input should be a valid UUID"),
        ("resource_id", 42, r"resource_id=42: UUID input should be a string"),
        ("action", "Signal.Created", r"action='Signal\.Created': .*must be `<resource>\.<verb>`"),
        ("visibility", "everyone", r"visibility='everyone': Input should be 'private'"),
        ("delivery_channels", ["sms"], r"delivery_channels\.0='sms': Input should be 'inbox'"),
        ("created_at", "2026-01-01T12:00:00", r"created_at=.*has no time zone"),
        ("payload", ["password", "hunter2"], r"payload=<payload not shown>: .*valid dictionary"),
        ("actor_display_name", "n" * 300, r"actor_display_name='nnnn*\.\.\.: .*at most 200"),
    ],
)
async def test_invalid_field_gives_its_error_and_writes_nothing(
    caller: Caller, async_engine: AsyncEngine, field: str, value: object, message: str
) -> None:
    fields = _fields(**{field: value})

    with pytest.raises(EnvelopeError, match=rf"activity envelope is invalid: {message}"):
        await caller.record(fields)

    probe = fields["resource_id"] if field != "resource_id" else None
    assert probe is None or await _activities(async_engine, probe) == 0
    assert (
        await _scalar(
            async_engine,
            "SELECT count(*) FROM activities WHERE actor_principal_id = :a",
            a=fields["actor_principal_id"],
        )
        == 0
    )


async def test_valid_mapping_is_recorded_like_an_envelope(
    caller: Caller, async_engine: AsyncEngine
) -> None:
    fields = _fields()

    recorded = await caller.record(fields)

    assert recorded.created
    assert await _activities(async_engine, fields["resource_id"]) == 1


async def test_unknown_action_is_rejected_when_configured_and_writes_nothing(
    caller: Caller, async_engine: AsyncEngine
) -> None:
    recorder = ActivityRecorder(unknown_actions="reject")
    envelope = _envelope(action="invoice.paid")

    with pytest.raises(
        UnknownActionError,
        match=r"action 'invoice\.paid' is not in the action catalogue.*unknown_actions='accept'",
    ):
        await caller.record(envelope, recorder)

    assert await _activities(async_engine, envelope.resource_id) == 0


async def test_catalogued_action_is_recorded_when_unknown_actions_are_rejected(
    caller: Caller,
) -> None:
    recorder = ActivityRecorder(
        unknown_actions="reject",
        catalogue=default_catalogue().with_actions({"invoice.paid": "mutation"}),
    )

    first = await caller.record(_envelope(action="invoice.paid"), recorder)
    second = await caller.record(_envelope(action="promotion.approved"), recorder)

    assert first.created
    assert second.created


async def test_unknown_action_is_accepted_by_default(caller: Caller) -> None:
    recorded = await caller.record(_envelope(action="invoice.paid"))

    assert recorded.created


async def test_accepted_unknown_action_is_logged_once(
    caller: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = ActivityRecorder()

    with structlog.testing.capture_logs() as logs:
        # A fresh logger, bound inside the capture even when loggers are cached on first use.
        monkeypatch.setattr(
            recording_module, "log", structlog.get_logger(recording_module.__name__)
        )
        await caller.record(_envelope(action="invoice.paid"), recorder)
        await caller.record(_envelope(action="invoice.paid"), recorder)
        await caller.record(_envelope(action="signal.registered"), recorder)

    assert logs == [
        {"event": "unknown_action_accepted", "action": "invoice.paid", "log_level": "info"}
    ]


def test_unknown_actions_setting_must_be_accept_or_reject() -> None:
    with pytest.raises(ProducerError, match="unknown_actions='ignore' is not a setting"):
        ActivityRecorder(unknown_actions="ignore")


async def test_secrets_at_any_depth_are_redacted_in_activity_and_outbox(
    caller: Caller, async_engine: AsyncEngine
) -> None:
    envelope = _envelope(
        payload={
            "config": {
                "db": {"Password": "hunter2"},
                "hooks": [{"X-Api-Key": "key-value-not-for-logs"}],
            }
        }
    )

    recorded = await caller.record(envelope)

    stored = await _scalar(
        async_engine,
        "SELECT a.payload::text || o.payload::text FROM activities a "
        "JOIN activity_outbox o ON o.event_id = a.id WHERE a.id = :id",
        id=recorded.event_id,
    )
    assert "hunter2" not in stored
    assert "key-value-not-for-logs" not in stored
    assert stored.count(REDACTED) == 4


async def test_secret_is_rejected_when_configured_and_writes_nothing(
    caller: Caller, async_engine: AsyncEngine
) -> None:
    recorder = ActivityRecorder(PayloadPolicy(on_credential="reject"))
    envelope = _envelope(payload={"steps": [{"auth": {"refresh_token": "r"}}]})

    with pytest.raises(PayloadPolicyError, match=r"payload\.steps\[0\]\.auth looks like"):
        await caller.record(envelope, recorder)

    assert await _activities(async_engine, envelope.resource_id) == 0


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"blob": "x" * 20_000}, "the limit is 16384 bytes"),
        ({"at": object()}, r"payload\.at holds a object"),
    ],
    ids=["oversize", "non-json"],
)
async def test_payload_breaking_the_policy_writes_nothing(
    caller: Caller, async_engine: AsyncEngine, payload: dict[str, Any], message: str
) -> None:
    envelope = _envelope(payload=payload)

    with pytest.raises(PayloadPolicyError, match=message):
        await caller.record(envelope)

    assert await _activities(async_engine, envelope.resource_id) == 0


async def test_configure_recording_sets_the_module_level_policy(
    caller: Caller, restore_recording: None
) -> None:
    configure_recording(PayloadPolicy(max_bytes=64), unknown_actions="reject")

    with pytest.raises(PayloadPolicyError, match="the limit is 64 bytes"):
        await caller.record(_envelope(payload={"text": "y" * 100}))
    with pytest.raises(UnknownActionError, match=r"'invoice\.paid' is not in the action catalogue"):
        await caller.record(_envelope(action="invoice.paid"))


async def test_tx_activity_runs_the_domain_function_and_commits_both(
    caller: Caller, async_engine: AsyncEngine
) -> None:
    envelope = _envelope()
    title = f"doc-{uuid4()}"

    document_id, recorded = await caller.tx(envelope, title)

    assert document_id is not None
    assert recorded.created
    assert await _documents(async_engine, title) == 1
    assert await _activities(async_engine, envelope.resource_id) == 1


async def test_tx_activity_skips_the_domain_function_when_recorded(
    caller: Caller, async_engine: AsyncEngine
) -> None:
    envelope = _envelope()
    title = f"doc-{uuid4()}"
    await caller.tx(envelope, title)

    document_id, recorded = await caller.tx(envelope, title)

    assert document_id is None
    assert not recorded.created
    assert await _documents(async_engine, title) == 1
    assert await _outbox_rows(async_engine, envelope.resource_id) == 1


async def test_tx_activity_failure_rolls_back_change_and_activity(
    caller: Caller, async_engine: AsyncEngine
) -> None:
    envelope = _envelope()
    title = f"doc-{uuid4()}"

    with pytest.raises(RuntimeError, match="domain change failed"):
        await caller.tx(envelope, title, fail=True)

    assert await _documents(async_engine, title) == 0
    assert await _activities(async_engine, envelope.resource_id) == 0


async def test_tx_activity_inside_open_transaction_rolls_back_only_its_savepoint(
    caller: Caller, async_engine: AsyncEngine
) -> None:
    envelope = _envelope()
    outer_title, inner_title = f"outer-{uuid4()}", f"inner-{uuid4()}"

    await caller.tx_inside_open_transaction(outer_title, envelope, inner_title, fail=True)

    assert await _documents(async_engine, outer_title) == 1
    assert await _documents(async_engine, inner_title) == 0
    assert await _activities(async_engine, envelope.resource_id) == 0


async def test_tx_activity_inside_open_transaction_commits_with_the_outer_one(
    caller: Caller, async_engine: AsyncEngine
) -> None:
    envelope = _envelope()
    outer_title, inner_title = f"outer-{uuid4()}", f"inner-{uuid4()}"

    await caller.tx_inside_open_transaction(outer_title, envelope, inner_title, fail=False)

    assert await _documents(async_engine, inner_title) == 1
    assert await _activities(async_engine, envelope.resource_id) == 1


async def test_nested_tx_activity_commits_both_activities(
    caller: Caller, async_engine: AsyncEngine
) -> None:
    outer, inner = _envelope(), _envelope()

    await caller.nested_tx(outer, inner, roll_back_outer=False)

    assert await _activities(async_engine, outer.resource_id) == 1
    assert await _activities(async_engine, inner.resource_id) == 1


async def test_nested_tx_activity_is_undone_when_the_outer_one_fails(
    caller: Caller, async_engine: AsyncEngine
) -> None:
    outer, inner = _envelope(), _envelope()

    with pytest.raises(RuntimeError, match="outer domain change failed"):
        await caller.nested_tx(outer, inner, roll_back_outer=True)

    assert await _activities(async_engine, outer.resource_id) == 0
    assert await _activities(async_engine, inner.resource_id) == 0


async def test_tx_activity_with_an_invalid_envelope_opens_nothing(
    caller: Caller, async_engine: AsyncEngine
) -> None:
    fields = _fields(visibility="everyone")
    title = f"doc-{uuid4()}"

    with pytest.raises(EnvelopeError, match="visibility='everyone'"):
        await caller.tx(fields, title)  # type: ignore[arg-type]

    assert await _documents(async_engine, title) == 0


async def test_database_without_the_tables_names_the_migration_command(
    async_engine: AsyncEngine, sync_engine: Engine
) -> None:
    schema = f"empty_{uuid4().hex[:8]}"
    async with async_engine.begin() as conn:
        await conn.execute(text(f"CREATE SCHEMA {schema}"))

    async with AsyncSession(async_engine) as session, session.begin():
        await session.execute(text(f"SET LOCAL search_path TO {schema}"))
        with pytest.raises(ProducerError, match=r"activities.*run `activity migrate`"):
            await record_activity_with_outbox(session, _envelope())
    with Session(sync_engine) as session, session.begin():
        session.execute(text(f"SET LOCAL search_path TO {schema}"))
        with pytest.raises(ProducerError, match=r"activities.*run `activity migrate`"):
            record_activity_with_outbox_sync(session, _envelope())


async def test_recording_is_visible_to_others_only_after_commit(
    async_engine: AsyncEngine,
) -> None:
    envelope = _envelope()

    async with AsyncSession(async_engine) as session, session.begin():
        await record_activity_with_outbox(session, envelope)
        seen_before_commit = await _activities(async_engine, envelope.resource_id)

    assert seen_before_commit == 0
    assert await _activities(async_engine, envelope.resource_id) == 1


async def test_connections_record_like_sessions(
    async_engine: AsyncEngine, sync_engine: Engine
) -> None:
    envelope = _envelope()

    async with async_engine.begin() as conn:
        first = await record_activity_with_outbox(conn, envelope)
    with sync_engine.begin() as sync_conn:
        second = record_activity_with_outbox_sync(sync_conn, envelope)

    assert (first.created, second.created) == (True, False)
    assert second.event_id == first.event_id
    assert await _outbox_rows(async_engine, envelope.resource_id) == 1
