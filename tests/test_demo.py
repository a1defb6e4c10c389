"""The demo on a slice of the real input: every count agrees."""

from __future__ import annotations

from pathlib import Path

from activity_pipeline.demo.run import DemoOptions, run_demo

DEMO_SLICE = 400
"""Lines of the input replayed: enough to span several wikis and both actions."""


def test_demo_counts_agree_on_slice(tmp_path: Path) -> None:
    lines: list[str] = []

    summary = run_demo(DemoOptions(limit=DEMO_SLICE, work_dir=tmp_path), echo=lines.append)

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
