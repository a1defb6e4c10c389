"""Locations, ports and development credentials of the local stack, read from the environment.

Downloads and builds live in a per-user cache, so a fresh clone reuses them. Data, logs and
pid files live in the project's `.stack/` folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from activity_pipeline.stack.errors import StackError
from activity_pipeline.stack.versions import CENTRIFUGO_VERSION, KAFKA_VERSION

__all__ = [
    "BIND_HOST",
    "CACHE_DIR_NAME",
    "CENTRIFUGO_API_KEY",
    "CENTRIFUGO_HMAC_SECRET",
    "CENTRIFUGO_PORT_ENV",
    "KAFKA_CONTROLLER_PORT_ENV",
    "KAFKA_PORT_ENV",
    "POSTGRES_DATABASE",
    "POSTGRES_PASSWORD",
    "POSTGRES_PORT_ENV",
    "POSTGRES_USER",
    "STACK_DIR_ENV",
    "StackSettings",
    "find_project_root",
    "load_settings",
]

BIND_HOST = "127.0.0.1"

STACK_DIR_ENV = "ACTIVITY_STACK_DIR"
POSTGRES_PORT_ENV = "ACTIVITY_STACK_POSTGRES_PORT"
KAFKA_PORT_ENV = "ACTIVITY_STACK_KAFKA_PORT"
KAFKA_CONTROLLER_PORT_ENV = "ACTIVITY_STACK_KAFKA_CONTROLLER_PORT"
CENTRIFUGO_PORT_ENV = "ACTIVITY_STACK_CENTRIFUGO_PORT"

DEFAULT_POSTGRES_PORT = 55432
DEFAULT_KAFKA_PORT = 19092
DEFAULT_KAFKA_CONTROLLER_PORT = 19093
DEFAULT_CENTRIFUGO_PORT = 18000

# Development-only credentials. deploy/centrifugo/config.json and docker-compose.yml repeat
# them, and tests/stack checks that the Centrifugo values match the shipped config.
POSTGRES_USER = "activity"
POSTGRES_PASSWORD = "activity"
POSTGRES_DATABASE = "activity"
CENTRIFUGO_API_KEY = "dev-api-key"
CENTRIFUGO_HMAC_SECRET = "dev-hmac-secret-change-me-0123456789"

CACHE_DIR_NAME = "activity-pipeline"
STACK_DIR_NAME = ".stack"

# Ports below 1024 need root to bind, so they are rejected for a developer stack.
MIN_PORT = 1024
MAX_PORT = 65535

# The root pyproject.toml is the one that declares the uv workspace.
WORKSPACE_MARKER = "[tool.uv.workspace]"


def find_project_root(start: Path | None = None) -> Path:
    """Find the folder of the workspace's root pyproject.toml, searching upwards from `start`."""
    origin = (start or Path(__file__)).resolve()
    for folder in [origin, *origin.parents]:
        candidate = folder / "pyproject.toml"
        if candidate.is_file() and WORKSPACE_MARKER in candidate.read_text(encoding="utf-8"):
            return folder
    raise StackError(
        f"project root not found: no pyproject.toml declaring {WORKSPACE_MARKER} above {origin}: "
        "run the stack from a clone of the repository (uv sync installs it in editable mode)"
    )


def _read_port(env_var: str, default: int) -> int:
    raw = os.environ.get(env_var, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not MIN_PORT <= int(raw) <= MAX_PORT:
        raise StackError(
            f"{env_var}={raw!r} is not a valid port: "
            f"set it to an integer from {MIN_PORT} to {MAX_PORT} or unset it to use {default}"
        )
    return int(raw)


def _cache_root() -> Path:
    xdg_cache = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg_cache) if xdg_cache else Path.home() / ".cache"
    return base.resolve() / CACHE_DIR_NAME


@dataclass(frozen=True)
class StackSettings:
    """Resolved folders and ports of one stack; build it with `load_settings`."""

    project_root: Path
    stack_dir: Path
    cache_dir: Path
    postgres_port: int
    kafka_port: int
    kafka_controller_port: int
    centrifugo_port: int
    host: str = BIND_HOST

    @property
    def logs_dir(self) -> Path:
        """Folder of every service's log file."""
        return self.stack_dir / "logs"

    @property
    def kafka_cache_dir(self) -> Path:
        """Cache folder of the Kafka jars of the pinned version."""
        return self.cache_dir / f"kafka-{KAFKA_VERSION}"

    @property
    def centrifugo_cache_dir(self) -> Path:
        """Cache folder of the Centrifugo binary of the pinned version."""
        return self.cache_dir / f"centrifugo-{CENTRIFUGO_VERSION}"

    @property
    def deploy_dir(self) -> Path:
        """Folder of the configuration files shipped in the repository."""
        return self.project_root / "deploy"

    @property
    def postgres_dsn(self) -> str:
        """Connection URL of the development database."""
        return (
            f"postgresql://{POSTGRES_USER}:{POSTGRES_PASSWORD}"
            f"@{self.host}:{self.postgres_port}/{POSTGRES_DATABASE}"
        )

    @property
    def kafka_bootstrap_servers(self) -> str:
        """Kafka `bootstrap.servers` value for clients on this machine."""
        return f"{self.host}:{self.kafka_port}"

    @property
    def centrifugo_url(self) -> str:
        """Base HTTP URL of Centrifugo; the server API is under `/api/<method>`."""
        return f"http://{self.host}:{self.centrifugo_port}"


def load_settings() -> StackSettings:
    """Build the stack settings from the environment variables and their defaults."""
    project_root = find_project_root()
    stack_override = os.environ.get(STACK_DIR_ENV, "").strip()
    stack_dir = Path(stack_override).resolve() if stack_override else project_root / STACK_DIR_NAME
    settings = StackSettings(
        project_root=project_root,
        stack_dir=stack_dir,
        cache_dir=_cache_root(),
        postgres_port=_read_port(POSTGRES_PORT_ENV, DEFAULT_POSTGRES_PORT),
        kafka_port=_read_port(KAFKA_PORT_ENV, DEFAULT_KAFKA_PORT),
        kafka_controller_port=_read_port(KAFKA_CONTROLLER_PORT_ENV, DEFAULT_KAFKA_CONTROLLER_PORT),
        centrifugo_port=_read_port(CENTRIFUGO_PORT_ENV, DEFAULT_CENTRIFUGO_PORT),
    )
    _reject_duplicate_ports(settings)
    return settings


def _reject_duplicate_ports(settings: StackSettings) -> None:
    ports = {
        POSTGRES_PORT_ENV: settings.postgres_port,
        KAFKA_PORT_ENV: settings.kafka_port,
        KAFKA_CONTROLLER_PORT_ENV: settings.kafka_controller_port,
        CENTRIFUGO_PORT_ENV: settings.centrifugo_port,
    }
    seen: dict[int, str] = {}
    for env_var, port in ports.items():
        if port in seen:
            raise StackError(
                f"{seen[port]} and {env_var} are both set to port {port}: "
                "give each service its own port"
            )
        seen[port] = env_var
