"""The interface that each local stack service implements, and its status record."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path

from activity_pipeline.stack.procs import ensure_port_free
from activity_pipeline.stack.settings import StackSettings

__all__ = ["Service", "ServiceStatus"]


@dataclass(frozen=True)
class ServiceStatus:
    """State of one service: `pid` is None when no process runs."""

    name: str
    port: int
    pid: int | None
    healthy: bool

    @property
    def state(self) -> str:
        """One word for the status table: healthy, unhealthy or stopped."""
        if self.healthy:
            return "healthy"
        return "stopped" if self.pid is None else "unhealthy"


class Service(abc.ABC):
    """One third-party server of the local stack, installed and run without containers."""

    name: str
    # Environment variables that set the ports this service binds, in the order of `ports`.
    port_env_vars: tuple[str, ...]

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings

    @property
    @abc.abstractmethod
    def ports(self) -> tuple[int, ...]:
        """Ports the service binds; the first is the one clients use."""

    @property
    def log_file(self) -> Path:
        """File that receives the service's output."""
        return self.settings.logs_dir / f"{self.name}.log"

    @abc.abstractmethod
    def install(self) -> None:
        """Download or build what the service needs, unless the cache already has it."""

    @abc.abstractmethod
    def running_pid(self) -> int | None:
        """Return the pid of the running service process, or None when it is not running."""

    @abc.abstractmethod
    def is_healthy(self) -> bool:
        """Return whether the service passes its health check now."""

    @abc.abstractmethod
    def start(self) -> None:
        """Prepare the data folder, start the process and wait until it is healthy."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop the process gracefully, and kill it when it does not exit in time."""

    def ensure_ports_free(self) -> None:
        """Raise StackError when another process already binds one of this service's ports."""
        for port, env_var in zip(self.ports, self.port_env_vars, strict=True):
            ensure_port_free(self.settings.host, port, env_var)

    def status(self) -> ServiceStatus:
        """Return the current pid and health of the service."""
        pid = self.running_pid()
        healthy = pid is not None and self.is_healthy()
        return ServiceStatus(name=self.name, port=self.ports[0], pid=pid, healthy=healthy)
