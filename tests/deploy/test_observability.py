"""The web endpoints of a Faust worker, checked on an app that is created but not started.

The scale-out test exercises them on running workers; these tests pin the
state table, the bind address and the metrics a worker exposes.
"""

from __future__ import annotations

from uuid import uuid4

import faust
import pytest
from activity_streams.observability import (
    WorkerCollector,
    WorkerState,
    WorkerStateTracker,
    install_web_endpoints,
)
from prometheus_client import CollectorRegistry, generate_latest


def _app() -> faust.App:
    return faust.App(f"test-observability-{uuid4().hex[:8]}", broker="kafka://127.0.0.1:19092")


def test_web_bind_comes_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTIVITY_WEB_BIND", "0.0.0.0")
    app = _app()

    install_web_endpoints(app)

    assert app.conf.web_bind == "0.0.0.0"


def test_endpoints_registered_on_web_server() -> None:
    app = _app()

    install_web_endpoints(app)

    paths = {view.view_path for view in app.web.views.values()}
    assert {"/health", "/ready", "/metrics"} <= paths


def test_tracker_ready_after_rebalance_completes() -> None:
    tracker = WorkerStateTracker(_app())

    tracker.move_to(WorkerState.REBALANCING)
    tracker.move_to(WorkerState.READY)

    assert tracker.state is WorkerState.READY
    assert tracker.ready


def test_tracker_stays_stopping_after_late_signal() -> None:
    tracker = WorkerStateTracker(_app())

    tracker.move_to(WorkerState.STOPPING)
    tracker.move_to(WorkerState.READY)

    assert tracker.state is WorkerState.STOPPING
    assert not tracker.ready


def test_collector_reports_unready_worker_without_partitions() -> None:
    app = _app()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(WorkerStateTracker(app)))

    exposition = generate_latest(registry).decode()

    assert f'activity_worker_ready{{consumer_group="{app.conf.id}"}} 0.0' in exposition
    assert "activity_worker_assigned_partitions{" not in exposition
    assert f'activity_worker_rebalances_total{{consumer_group="{app.conf.id}"}} 0.0' in exposition
