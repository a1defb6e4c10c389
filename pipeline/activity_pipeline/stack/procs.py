"""Process and port helpers of the local stack: tool look-up, install steps with progress,
detached service processes with pid files, health polling and graceful stop.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import structlog

from activity_pipeline.stack.errors import StackError

__all__ = [
    "HEALTH_POLL_INTERVAL_S",
    "KILL_WAIT_S",
    "ensure_port_free",
    "is_port_free",
    "is_running_as_root",
    "log_tail",
    "pid_alive",
    "pid_matches",
    "read_pid_file",
    "require_tool",
    "run_command",
    "run_install_step",
    "spawn_detached",
    "stop_process_group",
    "tcp_connectable",
    "wait_for_exit",
    "wait_until_healthy",
]

log = structlog.get_logger(__name__)

# How often an install step that is still running logs a progress line. The interval is long
# enough not to flood the terminal and short enough to show that the command is alive.
INSTALL_HEARTBEAT_S = 15.0

# Pause between two health probes while a service starts: probes are cheap, and a short pause
# keeps `up` fast once the service is ready.
HEALTH_POLL_INTERVAL_S = 0.5

# Pause between two liveness checks while a process shuts down.
STOP_POLL_INTERVAL_S = 0.2

# A process that ignores SIGKILL for this long is stuck in the kernel (for example on I/O).
KILL_WAIT_S = 10.0

# Lines of a log file quoted in an error message: enough for a stack trace's head.
LOG_TAIL_LINES = 25

# Timeout of a single TCP connect to a loopback port, where a listener accepts within
# microseconds.
TCP_CONNECT_TIMEOUT_S = 1.0


def is_running_as_root() -> bool:
    """Return whether this process runs with effective user id 0."""
    return os.geteuid() == 0


def require_tool(name: str, install_hint: str) -> str:
    """Return the absolute path of executable `name`, or raise StackError with `install_hint`."""
    path = shutil.which(name)
    if path is None:
        raise StackError(f"{name} not found on PATH: {install_hint}")
    return path


def is_port_free(host: str, port: int) -> bool:
    """Return whether a server could bind `host:port` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR matches what servers set, so sockets in TIME_WAIT do not count as busy.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def ensure_port_free(host: str, port: int, env_var: str) -> None:
    """Raise StackError naming `env_var` when `host:port` is already bound by another process."""
    if not is_port_free(host, port):
        raise StackError(
            f"port {port} on {host} is in use by another process: free it or set {env_var} "
            "to another port"
        )


def tcp_connectable(host: str, port: int) -> bool:
    """Return whether a TCP connection to `host:port` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=TCP_CONNECT_TIMEOUT_S):
            return True
    except OSError:
        return False


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """Return the last `lines` lines of a text file, or a note when it does not exist."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return f"(no log file at {path})"
    return "\n".join(text.splitlines()[-lines:])


def run_command(
    command: Sequence[str],
    *,
    description: str,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    new_session: bool = False,
) -> str:
    """Run a short command to completion and return its output; raise StackError on failure.

    `new_session` detaches background processes that the command leaves behind (as
    `pg_ctl start` does) from this terminal's session.
    """
    try:
        completed = subprocess.run(
            list(command),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            start_new_session=new_session,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise StackError(
            f"{description} timed out after {timeout_s:.0f} s: command {' '.join(command)}"
        ) from exc
    if completed.returncode != 0:
        output = (completed.stdout + completed.stderr).strip()
        raise StackError(
            f"{description} failed with exit code {completed.returncode}: "
            f"command {' '.join(command)}\n{output}"
        )
    return completed.stdout


def run_install_step(
    command: Sequence[str],
    *,
    step: str,
    log_file: Path,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> None:
    """Run a long install command with its output appended to `log_file`, logging progress.

    Raises StackError with the end of the log when the command fails or exceeds `timeout_s`.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log.info("install_step_started", step=step, log_file=str(log_file))
    started = time.monotonic()
    with log_file.open("ab") as output:
        output.write(f"\n$ {' '.join(command)}\n".encode())
        output.flush()
        process = subprocess.Popen(
            list(command),
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
        )
        while True:
            try:
                return_code = process.wait(timeout=INSTALL_HEARTBEAT_S)
                break
            except subprocess.TimeoutExpired:
                elapsed_s = time.monotonic() - started
                if elapsed_s > timeout_s:
                    process.kill()
                    process.wait()
                    raise StackError(
                        f"{step} timed out after {timeout_s:.0f} s; its output is in {log_file}: "
                        "check the network access to the package registry and run up again"
                    ) from None
                log.info("install_step_running", step=step, elapsed_s=round(elapsed_s))
    if return_code != 0:
        raise StackError(
            f"{step} failed with exit code {return_code}; the end of {log_file} follows, "
            f"fix the cause and run up again:\n{log_tail(log_file)}"
        )
    log.info("install_step_finished", step=step, elapsed_s=round(time.monotonic() - started))


def spawn_detached(
    command: Sequence[str],
    *,
    log_file: Path,
    pid_file: Path | None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start `command` in a new session that outlives this process, and return its pid.

    The new session makes the pid the process group id, so `stop_process_group` reaches every
    child, and a Ctrl-C in the terminal that ran `up` does not reach the service.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as output:
        process = subprocess.Popen(
            list(command),
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    # The service outlives this Popen object by design. Marking it finished stops Python from
    # warning about a running child when the object is collected.
    process.returncode = 0
    if pid_file is not None:
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        pid_file.write_text(f"{process.pid}\n", encoding="utf-8")
    return process.pid


def read_pid_file(pid_file: Path) -> int | None:
    """Return the pid in the first line of `pid_file`, or None when it is missing or invalid."""
    try:
        first_line = pid_file.read_text(encoding="utf-8").splitlines()[0].strip()
    except (FileNotFoundError, IndexError, PermissionError):
        return None
    return int(first_line) if first_line.isdigit() else None


def pid_alive(pid: int) -> bool:
    """Return whether process `pid` exists and is not a zombie."""
    # Reap the process first in case this interpreter started it (as `up` followed by `down`
    # in one test run does): an unreaped child stays a zombie that signal 0 still reaches.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except FileNotFoundError:
        return False
    # The state letter follows the command name in brackets, which may itself contain spaces.
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")


def pid_matches(pid: int, marker: str) -> bool:
    """Return whether process `pid` is alive and its command line contains `marker`.

    This guards against a stale pid file whose pid the system has since given to another
    program.
    """
    if not pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except (FileNotFoundError, PermissionError):
        return False
    return marker.encode() in cmdline


def wait_until_healthy(
    *,
    service: str,
    probe: Callable[[], bool],
    alive: Callable[[], bool],
    timeout_s: float,
    log_file: Path,
    console_log_file: Path | None = None,
) -> None:
    """Poll `probe` until it returns True.

    Raises StackError when the process exits or `timeout_s` passes, quoting the end of
    `log_file` and of `console_log_file`, where a process writes errors raised before its
    logging is set up.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if probe():
            return
        if not alive():
            raise StackError(
                f"{service} exited during start-up; the end of its log follows:\n"
                f"{_quote_logs(log_file, console_log_file)}"
            )
        if time.monotonic() > deadline:
            raise StackError(
                f"{service} did not become healthy within {timeout_s:.0f} s: read {log_file} "
                f"for the cause; its end follows:\n{_quote_logs(log_file, console_log_file)}"
            )
        time.sleep(HEALTH_POLL_INTERVAL_S)


def _quote_logs(log_file: Path, console_log_file: Path | None) -> str:
    quoted = [f"--- {log_file}\n{log_tail(log_file)}"]
    has_console_output = (
        console_log_file is not None
        and console_log_file.is_file()
        and console_log_file.stat().st_size > 0
    )
    if console_log_file is not None and has_console_output:
        quoted.append(f"--- {console_log_file}\n{log_tail(console_log_file)}")
    return "\n".join(quoted)


def wait_for_exit(pid: int, timeout_s: float) -> bool:
    """Wait until process `pid` has exited, and return False if it still runs after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(STOP_POLL_INTERVAL_S)
    return True


def stop_process_group(pid: int, *, service: str, grace_s: float) -> None:
    """Send SIGTERM to the process group of `pid`, then SIGKILL if it outlives `grace_s`."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    if wait_for_exit(pid, grace_s):
        return
    log.warning("service_stop_timed_out", service=service, pid=pid, grace_s=grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    if not wait_for_exit(pid, KILL_WAIT_S):
        raise StackError(
            f"{service} (pid {pid}) is still running after SIGKILL: "
            f"inspect it with `ps -o pid,stat,cmd -p {pid}`"
        )
