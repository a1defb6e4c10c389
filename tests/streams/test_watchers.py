"""Watcher rules on hand-built reference snapshots; no database involved."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID, uuid4

from activity_schemas import ActivityEvent, ActorKind, ActorRef, ResourceRef, Visibility
from activity_streams.preferences import FilterMode, Preference
from activity_streams.reference import ChainNode, ReferenceSnapshot
from activity_streams.watchers import Exclusion, resolve, resolve_delivery

TENANT = uuid4()
ROOT, FOLDER, DOC = uuid4(), uuid4(), uuid4()
OWNER, ACTOR, DELEGATOR, DEEP_SUBSCRIBER, SHALLOW_SUBSCRIBER, OUTSIDER = (uuid4() for _ in range(6))


def _event(
    action: str = "resource.updated",
    visibility: Visibility = Visibility.RESOURCE,
    target: UUID | None = None,
    payload: dict[str, object] | None = None,
) -> ActivityEvent:
    now = datetime.now(UTC)
    return ActivityEvent(
        event_id=uuid4(),
        tenant_id=TENANT,
        time=now,
        recorded_at=now,
        correlation_id=uuid4(),
        actor=ActorRef(id=ACTOR, kind=ActorKind.USER),
        resource=ResourceRef(id=DOC, type="document", parent_id=FOLDER),
        action=action,
        target_principal_id=target,
        visibility=visibility,
        payload=payload or {},
        targets=("inbox", "resource", "chat"),
    )


def _snapshot() -> ReferenceSnapshot:
    snapshot = ReferenceSnapshot()
    snapshot.chains[(TENANT, DOC)] = [
        ChainNode(DOC, OWNER, 0),
        ChainNode(FOLDER, OWNER, 1),
        ChainNode(ROOT, OWNER, 2),
    ]
    snapshot.subscriptions[(TENANT, FOLDER)] += [
        (DEEP_SUBSCRIBER, "descendants"),
        (SHALLOW_SUBSCRIBER, "resource"),
    ]
    snapshot.subscriptions[(TENANT, DOC)] += [(ACTOR, "resource")]
    snapshot.role_bindings[(TENANT, ROOT)] += [
        (DEEP_SUBSCRIBER, "viewer"),
        (SHALLOW_SUBSCRIBER, "viewer"),
        (ACTOR, "editor"),
    ]
    snapshot.role_bindings[(TENANT, FOLDER)] += [(DELEGATOR, "delegator")]
    for principal in (OWNER, DELEGATOR, DEEP_SUBSCRIBER, SHALLOW_SUBSCRIBER, ACTOR):
        snapshot.preferences[(TENANT, principal)] = Preference(FilterMode.ALL)
    return snapshot


def _recipients(event: ActivityEvent, snapshot: ReferenceSnapshot) -> set[UUID]:
    return {r.principal_id for r in resolve_delivery(event, snapshot).recipients}


def test_watchers_include_owner_delegator_and_descendant_subscriber() -> None:
    recipients = _recipients(_event(), _snapshot())

    assert recipients == {OWNER, DELEGATOR, DEEP_SUBSCRIBER}


def test_resource_scope_subscription_on_ancestor_does_not_count() -> None:
    recipients = _recipients(_event(), _snapshot())

    assert SHALLOW_SUBSCRIBER not in recipients


def test_actor_is_never_notified() -> None:
    snapshot = _snapshot()
    snapshot.role_bindings[(TENANT, FOLDER)] += [(ACTOR, "delegator")]

    recipients = _recipients(_event(), snapshot)

    assert ACTOR not in recipients


def test_reasons_name_the_rule_and_resource() -> None:
    delivery = resolve_delivery(_event(), _snapshot())

    reasons = {r.principal_id: r.reasons for r in delivery.recipients}
    assert reasons[OWNER] == ("owner",)
    assert reasons[DELEGATOR] == (f"role:delegator:{FOLDER}",)
    assert reasons[DEEP_SUBSCRIBER] == (f"subscription:descendants:{FOLDER}",)


def test_subscriber_without_access_is_dropped() -> None:
    snapshot = _snapshot()
    snapshot.role_bindings[(TENANT, ROOT)].remove((DEEP_SUBSCRIBER, "viewer"))

    recipients = _recipients(_event(), snapshot)

    assert DEEP_SUBSCRIBER not in recipients


def test_tenant_visibility_needs_no_access() -> None:
    snapshot = _snapshot()
    snapshot.role_bindings[(TENANT, ROOT)].remove((DEEP_SUBSCRIBER, "viewer"))

    recipients = _recipients(_event(visibility=Visibility.TENANT), snapshot)

    assert DEEP_SUBSCRIBER in recipients


def test_private_activity_reaches_only_target() -> None:
    delivery = resolve_delivery(_event(visibility=Visibility.PRIVATE, target=OUTSIDER), _snapshot())

    assert [r.principal_id for r in delivery.recipients] == [OUTSIDER]
    assert delivery.shared_channels == ()


def test_muted_watcher_is_not_notified() -> None:
    snapshot = _snapshot()
    snapshot.preferences[(TENANT, OWNER)] = Preference(FilterMode.MUTED)

    recipients = _recipients(_event(), snapshot)

    assert OWNER not in recipients


def test_default_preference_skips_non_mutations() -> None:
    snapshot = _snapshot()
    del snapshot.preferences[(TENANT, OWNER)]

    assert OWNER in _recipients(_event("resource.updated"), snapshot)
    assert OWNER not in _recipients(_event("run.completed"), snapshot)


def test_invite_without_target_reaches_invitee_from_payload() -> None:
    delivery = resolve_delivery(
        _event("invite.created", payload={"invitee_principal_id": str(OUTSIDER)}), _snapshot()
    )

    reasons = {r.principal_id: r.reasons for r in delivery.recipients}
    assert reasons[OUTSIDER] == ("target",)


def test_other_tenant_reference_data_never_counts() -> None:
    snapshot = _snapshot()
    other_tenant = uuid4()
    snapshot.subscriptions[(other_tenant, DOC)] += [(OUTSIDER, "resource")]
    snapshot.role_bindings[(other_tenant, DOC)] += [(OUTSIDER, "owner")]

    recipients = _recipients(_event(), snapshot)

    assert OUTSIDER not in recipients


def test_tenant_default_applies_to_principals_without_their_own() -> None:
    snapshot = _snapshot()
    del snapshot.preferences[(TENANT, OWNER)]
    snapshot.tenant_defaults[TENANT] = Preference(FilterMode.MUTED)

    recipients = _recipients(_event(), snapshot)

    assert OWNER not in recipients
    assert DELEGATOR in recipients


def test_critical_action_overrides_mute_and_says_so() -> None:
    snapshot = _snapshot()
    snapshot.preferences[(TENANT, OWNER)] = Preference(FilterMode.MUTED)

    delivery = resolve_delivery(
        _event("security.alert"), snapshot, critical_actions=("security.*",)
    )

    reasons = {r.principal_id: r.reasons for r in delivery.recipients}
    assert reasons[OWNER] == ("owner", "critical")


def test_explain_mode_records_why_each_watcher_was_left_out() -> None:
    snapshot = _snapshot()
    snapshot.preferences[(TENANT, OWNER)] = Preference(FilterMode.MUTED)

    resolution = resolve(_event(), snapshot, explain=True)

    assert resolution.excluded[OWNER] == (Exclusion.PREFERENCE, ("owner",))
    assert resolution.excluded[ACTOR] == (Exclusion.ACTOR, (f"subscription:resource:{DOC}",))
    assert SHALLOW_SUBSCRIBER not in resolution.excluded
