"""The relay's Prometheus metrics and the HTTP endpoint that serves them with a health check.

Each relay owns its registry, so several relays in one process (tests, the
benchmark) never collide. `/metrics` serves it, and `/healthz` returns 200
while the relay runs (active or standby) and 503 once it stopped.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["MetricsServer", "RelayMetrics"]

log = structlog.get_logger(__name__)

BATCH_SIZE_BUCKETS = (1, 10, 100, 500, 1000, 2500, 5000, 10_000, 50_000, 100_000)
"""Histogram buckets of rows per batch, spanning one row up to the largest batch setting."""

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0)
"""Histogram buckets of record-to-acknowledged seconds, from a few ms up to a minute of lag."""

RATE_WINDOW_S = 5.0
"""Seconds over which the rows-per-second gauge is averaged: smooth, yet recent."""


class RelayMetrics:
    """The relay's metrics, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.rows_sent = Counter(
            "activity_relay_rows_sent",
            "Outbox rows acknowledged by Kafka on their topic.",
            registry=self.registry,
        )
        self.rows_per_second = Gauge(
            "activity_relay_rows_per_second",
            f"Outbox rows acknowledged per second over the last {RATE_WINDOW_S:.0f} s.",
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "activity_relay_batch_size_rows",
            "Outbox rows read per poll that returned rows.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.record_to_ack = Histogram(
            "activity_relay_record_to_ack_seconds",
            "Seconds from an outbox row's insert to Kafka's acknowledgement of its record.",
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.oldest_unsent_age = Gauge(
            "activity_relay_oldest_unsent_age_seconds",
            "Age of the oldest committed outbox row not yet sent (0 when none): the relay lag.",
            registry=self.registry,
        )
        self.unsent_rows = Gauge(
            "activity_relay_unsent_rows",
            "Committed outbox rows not yet sent, counted up to a cap.",
            registry=self.registry,
        )
        self.oldest_transaction_age = Gauge(
            "activity_relay_oldest_transaction_age_seconds",
            "Age of the oldest open transaction in the outbox database, which holds vacuum back.",
            registry=self.registry,
        )
        self.errors = Counter(
            "activity_relay_errors",
            "Failed relay batches and rejected records, by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "activity_relay_dead_letters",
            "Outbox rows sent to the dead-letter topic.",
            registry=self.registry,
        )
        self.rows_deleted = Counter(
            "activity_relay_rows_deleted",
            "Sent outbox rows deleted by the cleanup.",
            registry=self.registry,
        )
        self.active = Gauge(
            "activity_relay_active",
            "1 while this relay holds the outbox's advisory lock, else 0.",
            registry=self.registry,
        )
        self._window: list[tuple[float, int]] = []

    def observe_rate(self, now: float, rows: int) -> None:
        """Add `rows` acknowledged at monotonic time `now` to the rows-per-second window."""
        self._window.append((now, rows))
        self._window = [(t, n) for t, n in self._window if now - t <= RATE_WINDOW_S]
        self.rows_per_second.set(sum(n for _, n in self._window) / RATE_WINDOW_S)

    def render(self) -> bytes:
        """Return the registry in Prometheus' text format."""
        return generate_latest(self.registry)


class MetricsServer:
    """Serves `/metrics` and `/healthz` on a background thread; `start()` and `stop()`."""

    def __init__(
        self,
        host: str,
        port: int,
        metrics: RelayMetrics,
        health: Callable[[], tuple[bool, dict[str, Any]]],
    ) -> None:
        self._address = (host, port)
        self._metrics = metrics
        self._health = health
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int | None:
        """The port listened on, once started (useful when started on port 0)."""
        return None if self._server is None else int(self._server.server_address[1])

    def start(self) -> None:
        """Listen and serve; a port in use is logged and the relay runs without the endpoint."""
        try:
            self._server = ThreadingHTTPServer(self._address, self._handler_class())
        except OSError as exc:
            log.warning(
                "relay_metrics_unavailable",
                host=self._address[0],
                port=self._address[1],
                error=str(exc),
                remedy="set ACTIVITY_RELAY_METRICS_PORT to a free port, or 0 to turn it off",
            )
            return
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="relay-metrics", daemon=True
        )
        self._thread.start()
        log.info("relay_metrics_listening", host=self._address[0], port=self.port)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = None
        self._thread = None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        metrics = self._metrics
        health = self._health

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._reply(200, CONTENT_TYPE_LATEST, metrics.render())
                elif self.path == "/healthz":
                    healthy, document = health()
                    body = json.dumps(document).encode()
                    self._reply(200 if healthy else 503, "application/json", body)
                else:
                    self._reply(404, "text/plain", b"try /metrics or /healthz\n")

            def _reply(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler
