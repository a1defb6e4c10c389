"""Tests of the local stack: settings, generated configuration and the running services."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from activity_pipeline.stack import StackError, load_settings, status, up
from activity_pipeline.stack.centrifugo import CentrifugoService
from activity_pipeline.stack.kafka import render_server_properties
from activity_pipeline.stack.postgres import render_postgres_conf
from activity_pipeline.stack.settings import (
    CENTRIFUGO_API_KEY,
    CENTRIFUGO_HMAC_SECRET,
    CENTRIFUGO_PORT_ENV,
    KAFKA_CONTROLLER_PORT_ENV,
    KAFKA_PORT_ENV,
    find_project_root,
)

CENTRIFUGO_CONFIG = find_project_root() / "deploy" / "centrifugo" / "config.json"

# A first `up` on a new machine downloads Kafka's jars and compiles Centrifugo, which takes
# several minutes on two cores. Later runs find the stack running and return at once.
STACK_UP_TIMEOUT_S = 2400


@pytest.fixture
def busy_loopback_port() -> Iterator[int]:
    """Yield a loopback port that a listening socket holds for the duration of the test."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


def _centrifugo_namespaces() -> dict[str, dict[str, object]]:
    config = json.loads(CENTRIFUGO_CONFIG.read_text(encoding="utf-8"))
    return {namespace["name"]: namespace for namespace in config["channel"]["namespaces"]}


def test_busy_port_error_names_env_var(
    busy_loopback_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CENTRIFUGO_PORT_ENV, str(busy_loopback_port))
    service = CentrifugoService(load_settings())

    with pytest.raises(StackError, match=CENTRIFUGO_PORT_ENV) as raised:
        service.ensure_ports_free()

    assert str(busy_loopback_port) in str(raised.value)


def test_invalid_port_env_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KAFKA_PORT_ENV, "not-a-port")

    with pytest.raises(StackError, match=KAFKA_PORT_ENV):
        load_settings()


def test_duplicate_ports_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KAFKA_PORT_ENV, "39092")
    monkeypatch.setenv(KAFKA_CONTROLLER_PORT_ENV, "39092")

    with pytest.raises(StackError, match="both set to port 39092"):
        load_settings()


def test_kafka_properties_use_configured_ports(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(KAFKA_PORT_ENV, "39092")
    monkeypatch.setenv(KAFKA_CONTROLLER_PORT_ENV, "39093")
    properties = render_server_properties(load_settings(), tmp_path / "data")
    lines = properties.splitlines()

    assert "listeners=PLAINTEXT://127.0.0.1:39092,CONTROLLER://127.0.0.1:39093" in lines
    assert "advertised.listeners=PLAINTEXT://127.0.0.1:39092" in lines
    assert "controller.quorum.bootstrap.servers=127.0.0.1:39093" in lines
    assert f"log.dirs={tmp_path / 'data'}" in lines
    # `format --standalone` requires the dynamic quorum, which excludes a static voter list.
    assert not any(line.startswith("controller.quorum.voters") for line in lines)


def test_postgres_conf_keeps_durability(tmp_path: Path) -> None:
    conf = render_postgres_conf(port=55999, host="127.0.0.1", socket_dir=tmp_path).splitlines()

    assert "port = 55999" in conf
    assert "listen_addresses = '127.0.0.1'" in conf
    assert "fsync = on" in conf
    assert "synchronous_commit = on" in conf


def test_centrifugo_config_declares_namespaces() -> None:
    namespaces = _centrifugo_namespaces()

    assert set(namespaces) == {"inbox", "resource", "chat"}
    for name, namespace in namespaces.items():
        assert int(str(namespace.get("history_size", 0))) > 0, name
        # Without allow_subscribe_for_client, a subscription needs a token or a user limit.
        assert not namespace.get("allow_subscribe_for_client", False), name


def test_centrifugo_inbox_is_user_limited() -> None:
    inbox = _centrifugo_namespaces()["inbox"]

    assert inbox["allow_user_limited_channels"] is True
    assert inbox["force_recovery"] is True


def test_centrifugo_config_matches_dev_credentials() -> None:
    config = json.loads(CENTRIFUGO_CONFIG.read_text(encoding="utf-8"))

    assert config["http_api"]["key"] == CENTRIFUGO_API_KEY
    assert config["client"]["token"]["hmac_secret_key"] == CENTRIFUGO_HMAC_SECRET
    assert config["health"]["enabled"] is True
    # Tokens with an empty `sub` would let anonymous users subscribe to `inbox:<tenant>#`.
    assert config["client"]["disallow_anonymous_connection_tokens"] is True


@pytest.mark.timeout(STACK_UP_TIMEOUT_S)
def test_status_reports_all_healthy_after_up() -> None:
    # `up` is a no-op when the stack already runs; the stack is left running for the other
    # integration tests, and `activity stack down` stops it.
    up()
    settings = load_settings()
    statuses = {entry.name: entry for entry in status()}

    assert list(statuses) == ["postgres", "kafka", "centrifugo"]
    assert statuses["postgres"].port == settings.postgres_port
    assert statuses["kafka"].port == settings.kafka_port
    assert statuses["centrifugo"].port == settings.centrifugo_port
    for name, entry in statuses.items():
        assert entry.healthy, f"{name} is {entry.state}"
        assert entry.pid is not None, name
