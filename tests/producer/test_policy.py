"""The payload policy."""

from __future__ import annotations

import pytest
from activity_producer import PayloadPolicy, PayloadPolicyError
from activity_producer.policy import REDACTED


def test_credentials_are_redacted_at_any_depth() -> None:
    payload = {"user": {"profile": {"API_Key": "k"}, "items": [{"password": "p"}]}, "n": 1}

    cleaned, _ = PayloadPolicy().apply(payload)

    assert cleaned["user"]["profile"]["API_Key"] == REDACTED
    assert cleaned["user"]["items"][0]["password"] == REDACTED
    assert cleaned["n"] == 1


def test_reject_mode_names_the_path() -> None:
    with pytest.raises(PayloadPolicyError, match=r"payload\.auth\.token looks like a credential"):
        PayloadPolicy(on_credential="reject").apply({"auth": {"token": "t"}})


def test_oversize_payload_is_rejected() -> None:
    with pytest.raises(PayloadPolicyError, match="the limit is 100 bytes"):
        PayloadPolicy(max_bytes=100).apply({"blob": "x" * 200})


def test_non_json_value_is_rejected() -> None:
    with pytest.raises(PayloadPolicyError, match="payload is not JSON"):
        PayloadPolicy().apply({"when": object()})
