"""The demo's input: one day of Wikipedia edits, mapped onto tenants, resources and activities.

Each wiki is a tenant; its root, namespaces and pages form the resource tree.
Editors own the pages they created first, watch the pages they edit, and the
busiest human editors of a namespace delegate or patrol it. `data/README.md`
states the mapping; every id is `uuid5(NAMESPACE_URL, name)` so runs compare.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from activity_schemas import ActivityEnvelope, ActorKind, Visibility

__all__ = [
    "DATA_FILE",
    "Edit",
    "ReferenceData",
    "build_reference_data",
    "edit_envelope",
    "read_edits",
    "steward_id",
    "tenant_id",
]

DATA_FILE = Path(__file__).resolve().parents[3] / "data" / "wikiticker-2015-09-12.ndjson.gz"

DELEGATOR_MIN_EDITS = 20
"""Edits a namespace needs before its two busiest human editors become delegators."""

PATROL_MIN_EDITS = 50
"""Edits a namespace needs before its three busiest other human editors patrol it."""


def _id(name: str) -> UUID:
    return uuid5(NAMESPACE_URL, name)


def tenant_id(channel: str) -> UUID:
    """Return the tenant id of a wiki."""
    return _id(f"tenant/{channel}")


def steward_id(channel: str) -> UUID:
    """Return the principal id of a wiki's steward."""
    return _id(f"principal/steward/{channel}")


@dataclass(frozen=True)
class Edit:
    """One line of the input file."""

    line: int
    raw: dict[str, Any]

    @property
    def channel(self) -> str:
        return str(self.raw["channel"])

    @property
    def namespace(self) -> str:
        return str(self.raw["namespace"])

    @property
    def page(self) -> str:
        return str(self.raw["page"])

    @property
    def user(self) -> str:
        return str(self.raw["user"])

    @property
    def is_human(self) -> bool:
        return not self.raw["isRobot"] and not self.raw["isAnonymous"]

    @property
    def tenant_id(self) -> UUID:
        return tenant_id(self.channel)

    @property
    def actor_id(self) -> UUID:
        return _id(f"principal/{self.user}")

    @property
    def root_id(self) -> UUID:
        return _id(f"resource/{self.channel}")

    @property
    def namespace_id(self) -> UUID:
        return _id(f"resource/{self.channel}/{self.namespace}")

    @property
    def page_id(self) -> UUID:
        return _id(f"resource/{self.channel}/{self.namespace}/{self.page}")


def read_edits(path: Path = DATA_FILE, limit: int | None = None) -> Iterator[Edit]:
    """Yield the edits of the input file in file order, at most `limit` of them."""
    with gzip.open(path, "rt", encoding="utf-8") as file:
        for line_number, line in enumerate(file):
            if limit is not None and line_number >= limit:
                return
            yield Edit(line_number, json.loads(line))


@dataclass
class ReferenceData:
    """Rows of the reference tables, ready for bulk loading."""

    resources: list[tuple[UUID, UUID, str, UUID | None, UUID | None, str]] = field(
        default_factory=list
    )
    role_bindings: list[tuple[UUID, UUID, UUID, UUID, str]] = field(default_factory=list)
    subscriptions: list[tuple[UUID, UUID, UUID, UUID, str]] = field(default_factory=list)
    preferences: list[tuple[UUID, UUID, str, list[str]]] = field(default_factory=list)


def _preference(principal_id: UUID) -> tuple[str, list[str]] | None:
    first_byte = hashlib.sha256(str(principal_id).encode()).digest()[0]
    if first_byte < 13:
        return ("muted", [])
    if first_byte < 51:
        return ("custom", ["resource.created"])
    if first_byte < 90:
        return ("all", [])
    return None


def _busiest(counts: Counter[str], how_many: int, excluded: set[str]) -> list[str]:
    ranked = sorted(
        ((user, edits) for user, edits in counts.items() if user not in excluded),
        key=lambda item: (-item[1], item[0]),
    )
    return [user for user, _ in ranked[:how_many]]


def build_reference_data(edits: list[Edit]) -> ReferenceData:
    """Derive owners, role bindings, subscriptions and preferences from the edits."""
    data = ReferenceData()
    channels: dict[str, None] = {}
    namespaces: dict[tuple[str, str], None] = {}
    page_owner: dict[tuple[str, str, str], str] = {}
    editors: dict[str, set[str]] = defaultdict(set)
    watched: set[tuple[str, str, str, str]] = set()
    namespace_edits: Counter[tuple[str, str]] = Counter()
    human_edits: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)

    for edit in edits:
        channels.setdefault(edit.channel)
        namespaces.setdefault((edit.channel, edit.namespace))
        page_owner.setdefault((edit.channel, edit.namespace, edit.page), edit.user)
        editors[edit.channel].add(edit.user)
        watched.add((edit.channel, edit.namespace, edit.page, edit.user))
        namespace_edits[(edit.channel, edit.namespace)] += 1
        if edit.is_human:
            human_edits[(edit.channel, edit.namespace)][edit.user] += 1

    for channel in channels:
        tenant, steward, root = tenant_id(channel), steward_id(channel), _id(f"resource/{channel}")
        data.resources.append((tenant, root, "wiki", None, steward, channel))
        data.role_bindings.append(
            (_id(f"binding/{channel}/steward"), tenant, steward, root, "owner")
        )
        data.preferences.append((tenant, steward, "custom", ["resource.created"]))
        for user in sorted(editors[channel]):
            principal = _id(f"principal/{user}")
            data.role_bindings.append(
                (_id(f"binding/{channel}/{user}/viewer"), tenant, principal, root, "viewer")
            )
            preference = _preference(principal)
            if preference is not None:
                data.preferences.append((tenant, principal, *preference))

    for channel, namespace in namespaces:
        tenant = tenant_id(channel)
        namespace_id = _id(f"resource/{channel}/{namespace}")
        root = _id(f"resource/{channel}")
        data.resources.append(
            (tenant, namespace_id, "namespace", root, steward_id(channel), namespace)
        )
        total = namespace_edits[(channel, namespace)]
        counts = human_edits[(channel, namespace)]
        delegators = _busiest(counts, 2, set()) if total >= DELEGATOR_MIN_EDITS else []
        for user in delegators:
            data.role_bindings.append(
                (
                    _id(f"binding/{channel}/{namespace}/{user}/delegator"),
                    tenant,
                    _id(f"principal/{user}"),
                    namespace_id,
                    "delegator",
                )
            )
        if total >= PATROL_MIN_EDITS:
            for user in _busiest(counts, 3, set(delegators)):
                data.subscriptions.append(
                    (
                        _id(f"subscription/{channel}/{namespace}/{user}"),
                        tenant,
                        _id(f"principal/{user}"),
                        namespace_id,
                        "descendants",
                    )
                )

    for (channel, namespace, page), owner in page_owner.items():
        data.resources.append(
            (
                tenant_id(channel),
                _id(f"resource/{channel}/{namespace}/{page}"),
                "page",
                _id(f"resource/{channel}/{namespace}"),
                _id(f"principal/{owner}"),
                page,
            )
        )

    for channel, namespace, page, user in sorted(watched):
        data.subscriptions.append(
            (
                _id(f"subscription/{channel}/{namespace}/{page}/{user}"),
                tenant_id(channel),
                _id(f"principal/{user}"),
                _id(f"resource/{channel}/{namespace}/{page}"),
                "resource",
            )
        )
    return data


def edit_envelope(edit: Edit) -> ActivityEnvelope:
    """Return the activity envelope of one edit."""
    raw = edit.raw
    return ActivityEnvelope(
        tenant_id=edit.tenant_id,
        actor_principal_id=edit.actor_id,
        actor_kind=ActorKind.SERVICE if raw["isRobot"] else ActorKind.USER,
        actor_display_name=edit.user,
        resource_id=edit.page_id,
        resource_type="page",
        resource_parent_id=edit.namespace_id,
        action="resource.created" if raw["isNew"] else "resource.updated",
        visibility=Visibility.RESOURCE,
        correlation_id=_id(f"event/{edit.line}"),
        created_at=datetime.fromisoformat(raw["time"].replace("Z", "+00:00")),
        payload={
            "page": edit.page,
            "namespace": edit.namespace,
            "added": raw["added"],
            "deleted": raw["deleted"],
            "delta": raw["delta"],
            "minor": raw["isMinor"],
            "robot": raw["isRobot"],
            "unpatrolled": raw["isUnpatrolled"],
            "comment_length": raw["commentLength"],
        },
    )
