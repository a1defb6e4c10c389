"""Start, stop and inspect the whole local stack: PostgreSQL, Kafka and Centrifugo, in order.

A file lock in the stack folder keeps two `up` or `down` runs from racing each other.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager

import structlog

from activity_pipeline.stack.centrifugo import CentrifugoService
from activity_pipeline.stack.errors import StackError
from activity_pipeline.stack.kafka import KafkaService
from activity_pipeline.stack.postgres import PostgresService
from activity_pipeline.stack.procs import wait_until_healthy
from activity_pipeline.stack.service import Service, ServiceStatus
from activity_pipeline.stack.settings import StackSettings, load_settings

__all__ = ["build_services", "down", "status", "up"]

log = structlog.get_logger(__name__)

# A service whose process runs but does not answer yet (for example one started by another
# `up` a moment ago) gets this long to become healthy before `up` gives up on it.
RUNNING_BUT_UNHEALTHY_WAIT_S = 120.0

LOCK_FILE_NAME = "stack.lock"


def build_services(settings: StackSettings) -> list[Service]:
    """Return the services in start order: the database and the broker before their users."""
    return [PostgresService(settings), KafkaService(settings), CentrifugoService(settings)]


@contextmanager
def _stack_lock(settings: StackSettings) -> Iterator[None]:
    settings.stack_dir.mkdir(parents=True, exist_ok=True)
    lock_path = settings.stack_dir / LOCK_FILE_NAME
    with lock_path.open("w", encoding="utf-8") as lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("stack_lock_waiting", lock_file=str(lock_path))
            fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _bring_up(service: Service) -> bool:
    """Start `service` unless it runs, and return whether this call started it."""
    pid = service.running_pid()
    if pid is not None:
        if service.is_healthy():
            log.info(
                "service_already_running", service=service.name, port=service.ports[0], pid=pid
            )
            return False
        log.info("service_waiting_for_health", service=service.name, pid=pid)
        wait_until_healthy(
            service=service.name,
            probe=service.is_healthy,
            alive=lambda: service.running_pid() is not None,
            timeout_s=RUNNING_BUT_UNHEALTHY_WAIT_S,
            log_file=service.log_file,
        )
        return False

    service.install()
    # Checked again because an install can take minutes, during which another program may
    # have taken the port.
    service.ensure_ports_free()
    log.info("service_starting", service=service.name, port=service.ports[0])
    service.start()
    started = service.status()
    log.info("service_started", service=service.name, port=started.port, pid=started.pid)
    return True


def up(settings: StackSettings | None = None) -> list[ServiceStatus]:
    """Install what is missing, start every stopped service and wait until all are healthy.

    Services that already run and pass their health check are left alone, so a second call
    is a no-op. Raises StackError when a step fails, and services started before the failure
    keep running.
    """
    settings = settings or load_settings()
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    with _stack_lock(settings):
        services = build_services(settings)
        # Check every port before installing or starting anything, so a busy port fails fast
        # instead of after minutes of downloads or with half of the stack running.
        for service in services:
            if service.running_pid() is None:
                service.ensure_ports_free()
        started = [_bring_up(service) for service in services]
        if not any(started):
            log.info("stack_already_running", stack_dir=str(settings.stack_dir))
        return [service.status() for service in build_services(settings)]


def down(settings: StackSettings | None = None) -> list[ServiceStatus]:
    """Stop every running service in reverse start order, and return their final status."""
    settings = settings or load_settings()
    with _stack_lock(settings):
        failures: list[str] = []
        for service in reversed(build_services(settings)):
            pid = service.running_pid()
            if pid is None:
                log.info("service_not_running", service=service.name)
                continue
            log.info("service_stopping", service=service.name, pid=pid)
            try:
                service.stop()
            except StackError as exc:
                # Stop the remaining services anyway, and report every failure at the end.
                log.error("service_stop_failed", service=service.name, pid=pid, error=str(exc))
                failures.append(str(exc))
                continue
            log.info("service_stopped", service=service.name, pid=pid)
        if failures:
            raise StackError("; ".join(failures))
        return [service.status() for service in build_services(settings)]


def status(settings: StackSettings | None = None) -> list[ServiceStatus]:
    """Return the port, pid and health of every service, in start order."""
    settings = settings or load_settings()
    return [service.status() for service in build_services(settings)]
