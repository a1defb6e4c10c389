"""The payload policy: credentials, non-JSON values, size and depth."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from activity_producer import PayloadPolicy, PayloadPolicyError, ProducerError
from activity_producer.policy import DEFAULT_MAX_PAYLOAD_BYTES, REDACTED


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "DB_PASSWORD",
        "userPasswd",
        "client_secret",
        "access_token",
        "refreshToken",
        "api_key",
        "X-Api-Key",
        "API KEY",
        "Authorization",
        "private_key",
        "privateKeyPem",
        "aws_credentials",
        "Set-Cookie",
        "auth",
        "pass",
    ],
)
def test_credential_like_key_is_redacted(key: str) -> None:
    cleaned, _ = PayloadPolicy().apply({key: "s3cr3t", "title": "Q3 report"})

    assert cleaned == {key: REDACTED, "title": "Q3 report"}


@pytest.mark.parametrize("key", ["author", "passenger_count", "compass", "title", "keyboard"])
def test_ordinary_key_is_kept(key: str) -> None:
    cleaned, _ = PayloadPolicy().apply({key: "value"})

    assert cleaned == {key: "value"}


def test_credentials_are_redacted_at_any_depth() -> None:
    payload = {
        "user": {"profile": {"API_Key": "k"}, "items": [{"password": "p"}, ({"token": "t"},)]},
        "n": 1,
    }

    cleaned, encoded = PayloadPolicy().apply(payload)

    assert cleaned["user"]["profile"]["API_Key"] == REDACTED
    assert cleaned["user"]["items"][0]["password"] == REDACTED
    assert cleaned["user"]["items"][1][0]["token"] == REDACTED
    assert cleaned["n"] == 1
    assert '"k"' not in encoded
    assert '"p"' not in encoded
    assert '"t"' not in encoded


def test_credential_key_holding_an_object_is_redacted_whole() -> None:
    cleaned, _ = PayloadPolicy().apply({"credentials": {"user": "a", "pin": "1234"}})

    assert cleaned == {"credentials": REDACTED}


def test_redaction_leaves_the_callers_payload_untouched() -> None:
    payload = {"secret": "x"}

    PayloadPolicy().apply(payload)

    assert payload == {"secret": "x"}


def test_reject_mode_names_the_path() -> None:
    with pytest.raises(
        PayloadPolicyError, match=r"payload\.session\[0\]\.token looks like a credential"
    ):
        PayloadPolicy(on_credential="reject").apply({"session": [{"token": "t"}]})


def test_allowed_key_is_not_treated_as_a_credential() -> None:
    policy = PayloadPolicy(allowed_keys=frozenset({"tokencount"}))

    cleaned, _ = policy.apply({"token_count": 512, "token": "t"})

    assert cleaned == {"token_count": 512, "token": REDACTED}


def test_oversize_payload_is_rejected_with_size_and_limit() -> None:
    with pytest.raises(PayloadPolicyError, match="payload is 211 bytes once encoded; the limit is"):
        PayloadPolicy(max_bytes=100).apply({"blob": "x" * 200})


def test_default_limit_is_16_kib_of_encoded_json() -> None:
    just_fits = {"b": "x" * (DEFAULT_MAX_PAYLOAD_BYTES - len('{"b":""}'))}

    _, encoded = PayloadPolicy().apply(just_fits)

    assert len(encoded.encode()) == DEFAULT_MAX_PAYLOAD_BYTES
    with pytest.raises(PayloadPolicyError, match="the limit is 16384 bytes"):
        PayloadPolicy().apply({"b": just_fits["b"] + "y"})


def test_size_counts_utf8_bytes_not_characters() -> None:
    with pytest.raises(PayloadPolicyError, match="payload is 208 bytes"):
        PayloadPolicy(max_bytes=200).apply({"t": "é" * 100})


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (object(), "object"),
        (datetime(2026, 1, 1, tzinfo=UTC), "datetime"),
        (uuid4(), "UUID"),
        ({1, 2}, "set"),
        (b"raw", "bytes"),
    ],
)
def test_non_json_value_is_rejected_with_its_path_and_type(value: object, kind: str) -> None:
    with pytest.raises(
        PayloadPolicyError, match=rf"payload is not JSON: payload\.a\.when holds a {kind}"
    ):
        PayloadPolicy().apply({"a": {"when": value}})


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_and_infinity_are_rejected(value: float) -> None:
    with pytest.raises(PayloadPolicyError, match=r"payload\.score is (nan|inf); JSON has no NaN"):
        PayloadPolicy().apply({"score": value})


def test_non_string_key_is_rejected() -> None:
    with pytest.raises(PayloadPolicyError, match=r"payload\.counts has the non-string key 3"):
        PayloadPolicy().apply({"counts": {3: "three"}})


def test_too_deep_payload_is_rejected() -> None:
    payload: dict[str, object] = {}
    node = payload
    for _ in range(40):
        node["a"] = {}
        node = node["a"]  # type: ignore[assignment]

    with pytest.raises(PayloadPolicyError, match="nests deeper than 32 levels"):
        PayloadPolicy().apply(payload)


def test_json_values_round_trip_unchanged() -> None:
    payload = {"s": "x", "i": 1, "f": 1.5, "b": True, "n": None, "l": [1, "2"], "t": (1, 2)}

    cleaned, encoded = PayloadPolicy().apply(payload)

    assert json.loads(encoded) == cleaned == {**payload, "t": [1, 2]}


def test_unknown_credential_mode_is_a_settings_error() -> None:
    with pytest.raises(ProducerError, match=r"on_credential='drop'.* use 'redact' or 'reject'"):
        PayloadPolicy(on_credential="drop")  # type: ignore[arg-type]
