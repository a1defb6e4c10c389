"""PostgreSQL of the local stack: apt install, initdb, configuration, start, health and stop.

PostgreSQL refuses to run as root, so when the stack runs as root every server command runs
as the `postgres` OS user that the Debian package creates, and that user owns the data folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shutil
import signal
import tempfile
from pathlib import Path

import structlog

from activity_pipeline.stack.errors import StackError
from activity_pipeline.stack.procs import (
    KILL_WAIT_S,
    is_running_as_root,
    pid_matches,
    run_command,
    run_install_step,
    wait_for_exit,
    wait_until_healthy,
)
from activity_pipeline.stack.service import Service
from activity_pipeline.stack.settings import (
    POSTGRES_DATABASE,
    POSTGRES_PASSWORD,
    POSTGRES_PORT_ENV,
    POSTGRES_USER,
    STACK_DIR_ENV,
)
from activity_pipeline.stack.versions import POSTGRES_APT_PACKAGE, POSTGRES_MAJOR_VERSION

__all__ = ["PostgresService", "render_postgres_conf"]

log = structlog.get_logger(__name__)

BIN_DIR = Path(f"/usr/lib/postgresql/{POSTGRES_MAJOR_VERSION}/bin")
OS_USER = "postgres"

# Included from postgresql.conf and rewritten on every start, so a changed port takes effect.
STACK_CONF_NAME = "activity_stack.conf"
INCLUDE_LINE = f"include = '{STACK_CONF_NAME}'\n"

# apt-get update and install download about 50 MB; a slow mirror can take minutes.
APT_TIMEOUT_S = 900.0

# initdb writes and fsyncs about 40 MB of catalog files; slow CI disks take tens of seconds.
INITDB_TIMEOUT_S = 180.0

# Start-up includes crash recovery after an unclean stop, which replays WAL since the last
# checkpoint; a minute covers the WAL a development box produces.
START_TIMEOUT_S = 90

# A fast shutdown writes a final checkpoint of all dirty shared buffers (at most 256 MB).
STOP_TIMEOUT_S = 60

# An immediate shutdown skips the checkpoint, so it ends within seconds.
IMMEDIATE_STOP_TIMEOUT_S = 20

# pg_isready waits at most this long for the server's reply to one probe.
PROBE_TIMEOUT_S = 3

# psql runs one catalog query or CREATE DATABASE, which copies the template (about 8 MB).
PSQL_TIMEOUT_S = 60.0

# A Unix socket path longer than this does not fit in sockaddr_un (108 bytes with the NUL),
# counting the `/.s.PGSQL.<port>.lock` name that PostgreSQL appends.
MAX_SOCKET_DIR_LENGTH = 80


def render_postgres_conf(*, port: int, host: str, socket_dir: Path) -> str:
    """Return the server settings of the stack for a development and benchmark machine."""
    return (
        "# Written by `activity stack up` on every start; edits are overwritten.\n"
        f"listen_addresses = '{host}'\n"
        f"port = {port}\n"
        f"unix_socket_directories = '{socket_dir}'\n"
        "max_connections = 200\n"
        "shared_buffers = 256MB\n"
        "# Durability stays as in production: benchmarks measure real commit costs.\n"
        "fsync = on\n"
        "synchronous_commit = on\n"
        "wal_level = logical\n"
        "logging_collector = off\n"
        "log_line_prefix = '%m [%p] %q%u@%d '\n"
    )


class PostgresService(Service):
    """PostgreSQL server with superuser `activity` and database `activity`."""

    name = "postgres"
    port_env_vars = (POSTGRES_PORT_ENV,)

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.settings.postgres_port,)

    @property
    def data_dir(self) -> Path:
        """PostgreSQL data folder (PGDATA)."""
        return self.settings.stack_dir / "postgres"

    @property
    def socket_dir(self) -> Path:
        """Folder of the server's Unix socket, inside the stack folder when the path is short."""
        preferred = self.settings.stack_dir / "postgres-run"
        if len(str(preferred)) <= MAX_SOCKET_DIR_LENGTH:
            return preferred
        digest = hashlib.sha256(str(self.settings.stack_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"activity-stack-{digest}"

    # -- commands ---------------------------------------------------------------------------

    def _server_command(self, tool: str, *arguments: str) -> list[str]:
        command = [str(BIN_DIR / tool), *arguments]
        if is_running_as_root():
            return ["runuser", "-u", OS_USER, "--", *command]
        return command

    def _client_env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env["PGPASSWORD"] = POSTGRES_PASSWORD
        env["PGCONNECT_TIMEOUT"] = str(PROBE_TIMEOUT_S)
        return env

    def _psql(self, database: str, sql: str) -> str:
        command = [
            str(BIN_DIR / "psql"),
            f"--host={self.settings.host}",
            f"--port={self.settings.postgres_port}",
            f"--username={POSTGRES_USER}",
            f"--dbname={database}",
            "--set=ON_ERROR_STOP=1",
            "--tuples-only",
            "--no-align",
            f"--command={sql}",
        ]
        return run_command(
            command, description="psql", timeout_s=PSQL_TIMEOUT_S, env=self._client_env()
        ).strip()

    def _give_to_server_user(self, path: Path) -> None:
        if is_running_as_root():
            account = pwd.getpwnam(OS_USER)
            os.chown(path, account.pw_uid, account.pw_gid)

    # -- install ----------------------------------------------------------------------------

    def install(self) -> None:
        if (BIN_DIR / "initdb").is_file():
            return
        if not is_running_as_root():
            raise StackError(
                f"PostgreSQL {POSTGRES_MAJOR_VERSION} not found at {BIN_DIR}: install it with "
                f"`sudo apt-get update && sudo apt-get install -y {POSTGRES_APT_PACKAGE}` "
                "and run up again"
            )
        apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install_log = self.settings.logs_dir / "install-postgres.log"
        run_install_step(
            ["apt-get", "update"],
            step="apt-get update",
            log_file=install_log,
            timeout_s=APT_TIMEOUT_S,
            env=apt_env,
        )
        run_install_step(
            ["apt-get", "install", "-y", "--no-install-recommends", POSTGRES_APT_PACKAGE],
            step=f"apt-get install {POSTGRES_APT_PACKAGE}",
            log_file=install_log,
            timeout_s=APT_TIMEOUT_S,
            env=apt_env,
        )
        if not (BIN_DIR / "initdb").is_file():
            raise StackError(
                f"apt-get installed {POSTGRES_APT_PACKAGE} but {BIN_DIR / 'initdb'} is missing: "
                f"check `dpkg -L {POSTGRES_APT_PACKAGE}` and {install_log}"
            )

    # -- state ------------------------------------------------------------------------------

    def running_pid(self) -> int | None:
        # The first line of postmaster.pid is the postmaster's pid. The file is readable by the
        # server user and by root, which are the two users the stack runs as.
        try:
            first_line = (self.data_dir / "postmaster.pid").read_text(encoding="utf-8")
        except (FileNotFoundError, PermissionError):
            return None
        pid_text = first_line.split("\n", 1)[0].strip()
        if not pid_text.isdigit():
            return None
        pid = int(pid_text)
        return pid if pid_matches(pid, "postgres") else None

    def is_healthy(self) -> bool:
        command = [
            str(BIN_DIR / "pg_isready"),
            f"--host={self.settings.host}",
            f"--port={self.settings.postgres_port}",
            f"--username={POSTGRES_USER}",
            # The maintenance database exists from initdb on, so probes before CREATE
            # DATABASE do not log a "database does not exist" error.
            "--dbname=postgres",
            f"--timeout={PROBE_TIMEOUT_S}",
            "--quiet",
        ]
        try:
            run_command(
                command,
                description="pg_isready",
                timeout_s=PROBE_TIMEOUT_S + 2,
                env=self._client_env(),
            )
        except StackError:
            return False
        return True

    # -- start ------------------------------------------------------------------------------

    def _check_server_user_access(self, path: Path) -> None:
        if not is_running_as_root():
            return
        try:
            run_command(
                ["runuser", "-u", OS_USER, "--", "test", "-w", str(path)],
                description="access check",
                timeout_s=PSQL_TIMEOUT_S,
            )
        except StackError as exc:
            raise StackError(
                f"the {OS_USER} OS user cannot write to {path}: make every parent folder "
                f"traversable (chmod o+x) or set {STACK_DIR_ENV} to a folder it can reach"
            ) from exc

    def _initialize(self) -> None:
        log.info("postgres_initdb_started", data_dir=str(self.data_dir))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        self._give_to_server_user(self.data_dir)
        self._check_server_user_access(self.data_dir)

        password_file = self.settings.stack_dir / "postgres-initdb.pw"
        password_file.write_text(POSTGRES_PASSWORD + "\n", encoding="utf-8")
        password_file.chmod(0o600)
        self._give_to_server_user(password_file)
        try:
            run_command(
                self._server_command(
                    "initdb",
                    f"--pgdata={self.data_dir}",
                    f"--username={POSTGRES_USER}",
                    f"--pwfile={password_file}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=trust",
                    "--encoding=UTF8",
                    "--no-locale",
                ),
                description="initdb",
                timeout_s=INITDB_TIMEOUT_S,
                cwd=self.settings.stack_dir,
            )
        except StackError:
            # initdb leaves an empty folder behind; remove it so the next `up` starts over.
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise
        finally:
            password_file.unlink(missing_ok=True)

        with (self.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(f"\n# Settings of the activity pipeline's local stack.\n{INCLUDE_LINE}")
        log.info("postgres_initdb_finished", data_dir=str(self.data_dir))

    def _write_runtime_files(self) -> None:
        socket_dir = self.socket_dir
        socket_dir.mkdir(parents=True, exist_ok=True)
        self._give_to_server_user(socket_dir)

        stack_conf = self.data_dir / STACK_CONF_NAME
        stack_conf.write_text(
            render_postgres_conf(
                port=self.settings.postgres_port, host=self.settings.host, socket_dir=socket_dir
            ),
            encoding="utf-8",
        )
        self._give_to_server_user(stack_conf)

        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.touch()
        self._give_to_server_user(self.log_file)

    def _ensure_database(self) -> None:
        exists = self._psql(
            "postgres", f"SELECT 1 FROM pg_database WHERE datname = '{POSTGRES_DATABASE}'"
        )
        if exists != "1":
            self._psql("postgres", f"CREATE DATABASE {POSTGRES_DATABASE}")
            log.info("postgres_database_created", database=POSTGRES_DATABASE)

    def start(self) -> None:
        self.settings.stack_dir.mkdir(parents=True, exist_ok=True)
        if not (self.data_dir / "PG_VERSION").is_file():
            self._initialize()
        self._write_runtime_files()
        run_command(
            self._server_command(
                "pg_ctl",
                "start",
                f"--pgdata={self.data_dir}",
                f"--log={self.log_file}",
                "--wait",
                f"--timeout={START_TIMEOUT_S}",
                "--silent",
            ),
            description="pg_ctl start",
            timeout_s=START_TIMEOUT_S + 10,
            cwd=self.settings.stack_dir,
            new_session=True,
        )
        wait_until_healthy(
            service=self.name,
            probe=self.is_healthy,
            alive=lambda: self.running_pid() is not None,
            timeout_s=START_TIMEOUT_S,
            log_file=self.log_file,
        )
        self._ensure_database()

    # -- stop -------------------------------------------------------------------------------

    def _pg_ctl_stop(self, mode: str, timeout_s: int) -> None:
        run_command(
            self._server_command(
                "pg_ctl",
                "stop",
                f"--pgdata={self.data_dir}",
                f"--mode={mode}",
                "--wait",
                f"--timeout={timeout_s}",
            ),
            description=f"pg_ctl stop -m {mode}",
            timeout_s=timeout_s + 10,
            cwd=self.settings.stack_dir,
        )

    def stop(self) -> None:
        pid = self.running_pid()
        if pid is None:
            return
        try:
            self._pg_ctl_stop("fast", STOP_TIMEOUT_S)
            return
        except StackError as exc:
            log.warning("postgres_fast_stop_failed", pid=pid, error=str(exc))
        try:
            self._pg_ctl_stop("immediate", IMMEDIATE_STOP_TIMEOUT_S)
            return
        except StackError as exc:
            log.warning("postgres_immediate_stop_failed", pid=pid, error=str(exc))
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not wait_for_exit(pid, KILL_WAIT_S):
            raise StackError(
                f"postgres (pid {pid}) is still running after SIGKILL: "
                f"inspect it with `ps -o pid,stat,cmd -p {pid}`"
            )
