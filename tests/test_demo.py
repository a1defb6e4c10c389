"""The demo on a slice of the real input: every count agrees."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from activity_pipeline.demo.loader import drop_database
from activity_pipeline.demo.run import DemoOptions, run_demo
from activity_producer.relay import RelaySettings

from tests.conftest import TEST_DATABASE

DEMO_SLICE = 400
"""Lines of the input replayed: enough to span several wikis and both actions."""


@pytest.fixture
def demo_database(relay_settings: RelaySettings) -> Iterator[str]:
    name = f"{TEST_DATABASE}_demo"
    yield name
    drop_database(relay_settings.database_url, name)


def test_demo_counts_agree_on_slice(tmp_path: Path, demo_database: str) -> None:
    lines: list[str] = []

    summary = run_demo(
        DemoOptions(limit=DEMO_SLICE, work_dir=tmp_path, database=demo_database),
        echo=lines.append,
    )

    assert summary.activities == DEMO_SLICE
    assert summary.recorded == DEMO_SLICE
    assert summary.produced == DEMO_SLICE
    assert summary.enriched == DEMO_SLICE
    assert summary.delivered_activities == DEMO_SLICE
    assert summary.archived == DEMO_SLICE
    assert summary.notifications > 0
    assert summary.received_by_client == summary.expected_by_client
    assert summary.expected_by_client > 0
    assert summary.consistent
    assert any(line.startswith("recorded ") for line in lines)
