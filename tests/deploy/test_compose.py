"""The compose file and the Dockerfile, checked without Docker (no engine runs here).

The compose file is parsed with PyYAML; each product service's environment is
validated against the settings classes its process reads, the way the process
itself would read it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from activity_pipeline.cli import app as cli_app
from activity_pipeline.settings_reference import PROCESS_SETTINGS, process_settings_classes
from activity_pipeline.stack.versions import (
    CENTRIFUGO_VERSION,
    KAFKA_VERSION,
    POSTGRES_MAJOR_VERSION,
)
from activity_schemas.settings import ENV_PREFIX, SETTINGS_FILE_ENV
from pydantic import SecretStr
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

PRODUCT_SERVICES = ("migrate", "relay", "enrichment", "sinks")
LONG_LIVED_SERVICES = ("relay", "enrichment", "sinks")
LOCAL_ONLY_MARKERS = ("127.0.0.1", "localhost", ".stack")
"""A default containing one of these only works on a developer's machine, not in a container."""

_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?::-(?P<default>[^}]*))?\}")


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return loaded


def _interpolate(value: object) -> str:
    """Resolve `${NAME:-default}` as Compose does when NAME is unset."""

    def replace(match: re.Match[str]) -> str:
        if match.group("default") is None:
            raise AssertionError(f"{value!r} needs {match.group('name')} set; give a default")
        return match.group("default")

    return _INTERPOLATION.sub(replace, str(value))


def _environment(service: str) -> dict[str, str]:
    raw = _compose()["services"][service].get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {key: _interpolate(value) for key, value in raw.items()}


def _process(service: str) -> str:
    command = _compose()["services"][service]["command"]
    return " ".join(["activity", *command])


@pytest.fixture
def only_service_environment(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Clear every ACTIVITY_* variable of this test process, and return a setter."""
    import os

    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)

    def apply(environment: dict[str, str]) -> None:
        for name, value in environment.items():
            monkeypatch.setenv(name, value)

    return apply


def test_compose_pins_the_native_stacks_versions() -> None:
    services = _compose()["services"]

    images = {name: services[name]["image"] for name in ("postgres", "kafka", "centrifugo")}

    assert images == {
        "postgres": f"postgres:{POSTGRES_MAJOR_VERSION}",
        "kafka": f"apache/kafka:{KAFKA_VERSION}",
        "centrifugo": f"centrifugo/centrifugo:{CENTRIFUGO_VERSION}",
    }


@pytest.mark.parametrize("service", PRODUCT_SERVICES)
def test_service_runs_dockerfile_image_command(service: str) -> None:
    definition = _compose()["services"][service]
    commands = {
        command.name or getattr(command.callback, "__name__", "")
        for command in cli_app.registered_commands
    }

    build = definition["build"]

    assert build == {"context": ".", "dockerfile": "Dockerfile"}
    assert definition["command"][0] in commands
    assert _process(service) in PROCESS_SETTINGS


@pytest.mark.parametrize("service", PRODUCT_SERVICES)
def test_product_service_environment_validates_against_its_settings(
    service: str, only_service_environment: Any
) -> None:
    only_service_environment(_environment(service))

    loaded = [settings_cls() for settings_cls in process_settings_classes(_process(service))]

    assert all(settings.model_fields_set for settings in loaded)


@pytest.mark.parametrize("service", LONG_LIVED_SERVICES)
def test_service_overrides_local_only_defaults(service: str) -> None:
    environment = _environment(service)
    needed = set()
    for settings_cls in process_settings_classes(_process(service)):
        prefix = settings_cls.model_config.get("env_prefix", "")
        for name, field in settings_cls.model_fields.items():
            default = field.default
            local_only = isinstance(default, str) and any(
                marker in default for marker in LOCAL_ONLY_MARKERS
            )
            development_secret = isinstance(default, SecretStr)
            required = default is PydanticUndefined and field.default_factory is None
            if local_only or development_secret or required:
                needed.add(f"{prefix}{name}".upper())

    missing = needed - set(environment)

    assert not missing, f"{service} must set {sorted(missing)} in docker-compose.yml"


def test_migrate_shares_relay_database_and_kafka() -> None:
    shared = (
        "ACTIVITY_DATABASE_URL",
        "ACTIVITY_KAFKA_BOOTSTRAP_SERVERS",
        "ACTIVITY_TOPIC_PARTITIONS",
        "ACTIVITY_TOPIC_REPLICATION_FACTOR",
    )

    migrate, relay = _environment("migrate"), _environment("relay")

    assert {name: migrate[name] for name in shared} == {name: relay[name] for name in shared}


@pytest.mark.parametrize("service", PRODUCT_SERVICES)
def test_product_service_passes_no_unknown_setting(service: str) -> None:
    known = {SETTINGS_FILE_ENV}
    for settings_cls in process_settings_classes(_process(service)):
        prefix = settings_cls.model_config.get("env_prefix", "")
        known |= {f"{prefix}{name}".upper() for name in settings_cls.model_fields}

    unknown = {name for name in _environment(service) if name.startswith(ENV_PREFIX)} - known

    assert not unknown, f"{service} passes {sorted(unknown)}, which no settings class reads"


@pytest.mark.parametrize(
    ("service", "port_variable", "path"),
    [
        ("relay", "ACTIVITY_RELAY_METRICS_PORT", "/healthz"),
        ("enrichment", "ACTIVITY_ENRICHMENT_WEB_PORT", "/ready"),
        ("sinks", "ACTIVITY_SINK_WEB_PORT", "/ready"),
    ],
)
def test_health_check_probes_service_port(service: str, port_variable: str, path: str) -> None:
    definition = _compose()["services"][service]

    probe = " ".join(definition["healthcheck"]["test"])

    assert f"http://127.0.0.1:{_environment(service)[port_variable]}{path}" in probe


def test_long_lived_services_scale_and_restart() -> None:
    services = _compose()["services"]

    replicas = {name: services[name]["deploy"]["replicas"] for name in LONG_LIVED_SERVICES}
    restarts = {services[name]["restart"] for name in LONG_LIVED_SERVICES}

    assert replicas == {"relay": 2, "enrichment": 2, "sinks": 2}
    assert restarts == {"unless-stopped"}
    assert all("container_name" not in services[name] for name in LONG_LIVED_SERVICES)


def test_mounted_volumes_are_declared() -> None:
    compose = _compose()
    mounted = {
        volume.split(":", 1)[0]
        for service in compose["services"].values()
        for volume in service.get("volumes", [])
        if not volume.startswith((".", "/"))
    }

    declared = set(compose["volumes"])

    assert mounted == declared == {"postgres-data", "kafka-data", "archive"}


def test_dockerfile_staged_frozen_unprivileged() -> None:
    lines = [line.strip() for line in DOCKERFILE.read_text(encoding="utf-8").splitlines()]

    stages = [line for line in lines if line.startswith("FROM ")]
    syncs = [line for line in lines if "uv sync" in line]
    users = [line for line in lines if line.startswith("USER ")]
    entrypoints = [line for line in lines if line.startswith("ENTRYPOINT ")]

    assert len(stages) >= 3
    assert syncs and all("--frozen" in line for line in syncs)
    assert users == ["USER 10001:10001"]
    assert entrypoints == ['ENTRYPOINT ["activity"]']


def test_centrifugo_accepts_the_sinks_api_key() -> None:
    centrifugo, sinks = _environment("centrifugo"), _environment("sinks")

    keys = (centrifugo["CENTRIFUGO_HTTP_API_KEY"], sinks["ACTIVITY_CENTRIFUGO_API_KEY"])

    assert keys == ("dev-api-key", "dev-api-key")
