"""The OCSF mapping of an audit record: an API Activity event (class 6003), beside the native one.

Analysts whose tools speak the Open Cybersecurity Schema Framework read this
form; every field without an OCSF attribute goes into `unmapped`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

__all__ = ["OCSF_VERSION", "to_ocsf"]

OCSF_VERSION = "1.3.0"
"""Version of the OCSF schema the mapping follows."""
# NOTE: the attribute names follow the documented OCSF API Activity class. The output has not
# been checked with an OCSF schema validator, because none is installed here.

API_ACTIVITY_CLASS_UID = 6003
APPLICATION_CATEGORY_UID = 6
SEVERITY_INFORMATIONAL = 1
STATUS_SUCCESS, STATUS_FAILURE = 1, 2

_ACTIVITY_IDS = {
    "create": 1,
    "created": 1,
    "read": 2,
    "viewed": 2,
    "update": 3,
    "updated": 3,
    "edited": 3,
    "delete": 4,
    "deleted": 4,
    "removed": 4,
}
"""OCSF activity ids by the verb of an action (`<resource>.<verb>`); any other verb is 99, Other."""

_ACTIVITY_NAMES = {1: "Create", 2: "Read", 3: "Update", 4: "Delete", 99: "Other"}


def _epoch_ms(value: str) -> int:
    return int(datetime.fromisoformat(value).timestamp() * 1000)


def to_ocsf(record: dict[str, Any]) -> dict[str, Any]:
    """Map an archived audit record (its JSON form) to an OCSF API Activity event."""
    event = record["event"]
    verb = event["action"].rsplit(".", 1)[-1]
    activity_id = _ACTIVITY_IDS.get(verb, 99)
    authorization = event.get("authorization") or {}
    allowed = authorization.get("allowed", True)
    actor = event["actor"]
    resource = event["resource"]

    mapped: dict[str, Any] = {
        "class_uid": API_ACTIVITY_CLASS_UID,
        "class_name": "API Activity",
        "category_uid": APPLICATION_CATEGORY_UID,
        "category_name": "Application Activity",
        "activity_id": activity_id,
        "activity_name": _ACTIVITY_NAMES[activity_id],
        "type_uid": API_ACTIVITY_CLASS_UID * 100 + activity_id,
        "time": _epoch_ms(event["time"]),
        "severity_id": SEVERITY_INFORMATIONAL,
        "status_id": STATUS_SUCCESS if allowed else STATUS_FAILURE,
        "status": "Success" if allowed else "Failure",
        "message": event["action"],
        "metadata": {
            "version": OCSF_VERSION,
            "uid": event["event_id"],
            "correlation_uid": event["correlation_id"],
            "tenant_uid": event["tenant_id"],
            "original_time": event["time"],
            "logged_time": _epoch_ms(event["recorded_at"]),
            "processed_time": _epoch_ms(record["processed_at"]),
            "product": {"name": "activity-pipeline", "vendor_name": "activity-pipeline"},
        },
        "actor": {
            "user": {
                "uid": actor["id"],
                "name": actor.get("display_name"),
                "type": "System" if actor["kind"] == "service" else "User",
            }
        },
        "api": {"operation": event["action"]},
        "resources": [{"uid": resource["id"], "type": resource["type"], "data": event["payload"]}],
        "src_endpoint": {},
        "unmapped": {
            "visibility": event["visibility"],
            "recipients": record["recipients"],
            "targets": event["targets"],
            "target_principal_id": event.get("target_principal_id"),
            "resource_parent_id": resource.get("parent_id"),
        },
    }
    if authorization:
        mapped["unmapped"]["authorization"] = authorization
    return mapped
