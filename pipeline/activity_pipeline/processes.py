"""The relay and both Faust workers as child processes, for the demo and the tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from confluent_kafka.admin import AdminClient

__all__ = ["CONSUMER_GROUPS", "PipelineProcesses"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


CONSUMER_GROUPS = ("activity-enrichment", "activity-sinks")
"""Consumer groups of the enrichment and sink workers (their Faust app ids), before the prefix."""

READY_TIMEOUT_S = 90.0
"""How long the Faust workers may take to join their consumer groups, in seconds."""

STOP_TIMEOUT_S = 20.0
"""How long a child may take to stop after SIGTERM before it is killed, in seconds."""

_COMMANDS = {
    "relay": ["relay"],
    "enrichment": ["worker", "enrichment"],
    "sinks": ["worker", "sinks"],
}


class PipelineProcesses:
    """Starts the relay and the workers with extra environment, and stops them on exit.

    Each child's output goes to `<logs>/<name>.log`.
    """

    def __init__(self, environment: dict[str, str], logs: Path) -> None:
        self._environment = {
            "ACTIVITY_ENRICHMENT_WEB_PORT": str(_free_port()),
            "ACTIVITY_SINK_WEB_PORT": str(_free_port()),
            **os.environ,
            **environment,
        }
        prefix = self._environment.get("ACTIVITY_TOPIC_PREFIX", "")
        self.consumer_groups = [f"{prefix}{group}" for group in CONSUMER_GROUPS]
        self._logs = logs
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._outputs: list[IO[bytes]] = []

    def start(self) -> None:
        """Start every child process."""
        self._logs.mkdir(parents=True, exist_ok=True)
        for name, arguments in _COMMANDS.items():
            output = open(self._logs / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
            self._outputs.append(output)
            self._children[name] = subprocess.Popen(
                [sys.executable, "-m", "activity_pipeline.cli", *arguments],
                env=self._environment,
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def check_alive(self) -> None:
        """Raise `RuntimeError` naming the log when a child has exited."""
        for name, child in self._children.items():
            if child.poll() is not None:
                raise RuntimeError(
                    f"the {name} process exited with code {child.returncode}; "
                    f"see {self._logs / (name + '.log')}"
                )

    def wait_until_ready(self, bootstrap_servers: str) -> None:
        """Return once both workers hold partitions of their consumer groups."""
        admin = AdminClient({"bootstrap.servers": bootstrap_servers})
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            self.check_alive()
            if all(self._group_ready(admin, group) for group in self.consumer_groups):
                return
            time.sleep(0.5)
        raise RuntimeError(
            f"the Faust workers did not join their consumer groups within "
            f"{READY_TIMEOUT_S:.0f} s; see the logs in {self._logs}"
        )

    @staticmethod
    def _group_ready(admin: AdminClient, group: str) -> bool:
        future = admin.describe_consumer_groups([group], request_timeout=10)[group]
        try:
            description = future.result()
        except Exception:
            return False
        members = description.members
        return bool(members) and all(m.assignment.topic_partitions for m in members)

    def stop(self) -> None:
        """Stop every child: SIGTERM, then SIGKILL after the timeout."""
        for child in self._children.values():
            if child.poll() is None:
                child.terminate()
        for child in self._children.values():
            try:
                child.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        for output in self._outputs:
            output.close()
        self._children.clear()
        self._outputs.clear()

    def __enter__(self) -> PipelineProcesses:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
