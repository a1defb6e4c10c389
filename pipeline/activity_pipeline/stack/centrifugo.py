"""Centrifugo of the local stack: build with `go install`, config check, start, health and stop.

The configuration is the shipped deploy/centrifugo/config.json; the stack overrides only the
bind address and port, through Centrifugo's environment variables.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import structlog

from activity_pipeline.stack.errors import StackError
from activity_pipeline.stack.procs import (
    pid_matches,
    read_pid_file,
    require_tool,
    run_command,
    run_install_step,
    spawn_detached,
    stop_process_group,
    wait_until_healthy,
)
from activity_pipeline.stack.service import Service
from activity_pipeline.stack.settings import CENTRIFUGO_PORT_ENV
from activity_pipeline.stack.versions import CENTRIFUGO_GO_PACKAGE, CENTRIFUGO_VERSION

__all__ = ["CentrifugoService", "health_url"]

log = structlog.get_logger(__name__)

# Centrifugo v6.9.1's go.mod declares `go 1.26`. Go 1.21 and newer fetch that toolchain from
# the Go module proxy on their own (GOTOOLCHAIN=auto), while Debian bookworm's golang-go is 1.19.
GO_INSTALL_HINT = (
    "install Go 1.26, or Go 1.21 or newer with GOTOOLCHAIN=auto (the default), and put `go` on PATH"
)

# Compiling Centrifugo and its dependencies from an empty Go build cache takes 5-10 minutes
# on two cores, plus the module download.
BUILD_TIMEOUT_S = 1800.0

# `centrifugo version` and `checkconfig` only parse files and exit.
CHECK_TIMEOUT_S = 30.0

# Start-up of the memory engine takes about a second.
START_TIMEOUT_S = 30.0

# Centrifugo's own graceful shutdown waits up to `shutdown.timeout` (30 s by default) for
# connections to close, so the stack waits a little longer before SIGKILL.
STOP_GRACE_S = 35.0

# One GET of /health on loopback.
HEALTH_TIMEOUT_S = 2.0

# An opener without proxy handlers: the health probe must reach the loopback server even
# when http_proxy is set in the environment.
_DIRECT_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def health_url(host: str, port: int) -> str:
    """Return the URL of Centrifugo's health endpoint."""
    return f"http://{host}:{port}/health"


class CentrifugoService(Service):
    """Centrifugo server with the memory engine, configured by deploy/centrifugo/config.json."""

    name = "centrifugo"
    port_env_vars = (CENTRIFUGO_PORT_ENV,)

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.settings.centrifugo_port,)

    @property
    def binary(self) -> Path:
        """Cached Centrifugo executable of the pinned version."""
        return self.settings.centrifugo_cache_dir / "centrifugo"

    @property
    def config_file(self) -> Path:
        """Shipped Centrifugo configuration."""
        return self.settings.deploy_dir / "centrifugo" / "config.json"

    @property
    def work_dir(self) -> Path:
        """Working folder of the Centrifugo process."""
        return self.settings.stack_dir / "centrifugo"

    @property
    def _pid_file(self) -> Path:
        return self.settings.stack_dir / "centrifugo.pid"

    # -- install ----------------------------------------------------------------------------

    def _cached_binary_matches(self) -> bool:
        if not (self.binary.is_file() and os.access(self.binary, os.X_OK)):
            return False
        try:
            output = run_command(
                [str(self.binary), "version"],
                description="centrifugo version",
                timeout_s=CHECK_TIMEOUT_S,
            )
        except StackError as exc:
            log.warning("centrifugo_cached_binary_broken", binary=str(self.binary), error=str(exc))
            return False
        if f"Centrifugo {CENTRIFUGO_VERSION} " in output:
            return True
        log.info(
            "centrifugo_cached_binary_replaced", binary=str(self.binary), output=output.strip()
        )
        return False

    def install(self) -> None:
        if self._cached_binary_matches():
            return
        go = require_tool("go", GO_INSTALL_HINT)
        self.settings.centrifugo_cache_dir.mkdir(parents=True, exist_ok=True)
        # `go install` writes the binary only when the build succeeded, so an interrupted
        # build leaves no binary and the next `up` builds again. Release builds stamp the
        # version with this linker flag; without it Centrifugo reports 0.0.0 and warns that it
        # is a development build.
        version_flag = f"-X {CENTRIFUGO_GO_PACKAGE}/internal/build.Version={CENTRIFUGO_VERSION[1:]}"
        run_install_step(
            [
                go,
                "install",
                "-ldflags",
                version_flag,
                f"{CENTRIFUGO_GO_PACKAGE}@{CENTRIFUGO_VERSION}",
            ],
            step=f"build Centrifugo {CENTRIFUGO_VERSION} with go install",
            log_file=self.settings.logs_dir / "install-centrifugo.log",
            timeout_s=BUILD_TIMEOUT_S,
            env={**os.environ, "GOBIN": str(self.settings.centrifugo_cache_dir)},
        )
        if not self._cached_binary_matches():
            raise StackError(
                f"go install finished but {self.binary} does not report Centrifugo "
                f"{CENTRIFUGO_VERSION}: check GOFLAGS in the environment and "
                f"{self.settings.logs_dir / 'install-centrifugo.log'}"
            )
        log.info("centrifugo_installed", binary=str(self.binary))

    # -- state ------------------------------------------------------------------------------

    def running_pid(self) -> int | None:
        pid = read_pid_file(self._pid_file)
        if pid is None or not pid_matches(pid, str(self.binary)):
            return None
        return pid

    def is_healthy(self) -> bool:
        url = health_url(self.settings.host, self.settings.centrifugo_port)
        try:
            with _DIRECT_OPENER.open(url, timeout=HEALTH_TIMEOUT_S) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    # -- start ------------------------------------------------------------------------------

    def _server_env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("CENTRIFUGO_")}
        env["CENTRIFUGO_HTTP_SERVER_ADDRESS"] = self.settings.host
        env["CENTRIFUGO_HTTP_SERVER_PORT"] = str(self.settings.centrifugo_port)
        return env

    def start(self) -> None:
        if not self.config_file.is_file():
            raise StackError(
                f"Centrifugo configuration {self.config_file} is missing: "
                "restore deploy/centrifugo/config.json from the repository"
            )
        # The strict check rejects unknown keys, which Centrifugo would otherwise ignore.
        run_command(
            [str(self.binary), "checkconfig", "--strict", "--config", str(self.config_file)],
            description=f"centrifugo checkconfig of {self.config_file}",
            timeout_s=CHECK_TIMEOUT_S,
        )
        self.work_dir.mkdir(parents=True, exist_ok=True)
        pid = spawn_detached(
            [str(self.binary), "--config", str(self.config_file)],
            log_file=self.log_file,
            pid_file=self._pid_file,
            env=self._server_env(),
            cwd=self.work_dir,
        )
        log.info("centrifugo_process_started", pid=pid, port=self.settings.centrifugo_port)
        wait_until_healthy(
            service=self.name,
            probe=self.is_healthy,
            alive=lambda: self.running_pid() is not None,
            timeout_s=START_TIMEOUT_S,
            log_file=self.log_file,
        )

    # -- stop -------------------------------------------------------------------------------

    def stop(self) -> None:
        pid = self.running_pid()
        if pid is not None:
            stop_process_group(pid, service=self.name, grace_s=STOP_GRACE_S)
        self._pid_file.unlink(missing_ok=True)
