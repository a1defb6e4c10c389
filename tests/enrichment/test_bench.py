"""`activity bench enrichment --through-faust` on a small slice of the real input."""

from __future__ import annotations

from activity_pipeline.bench.enrichment import run_enrichment_bench
from activity_producer.relay import RelaySettings


def test_bench_prints_worker_and_idle_agent_rates(relay_settings: RelaySettings) -> None:
    result = run_enrichment_bench(
        relay_settings.database_url, limit=600, sample=20, batch_size=100, through_faust=True
    )

    lines = result.render()
    assert result.identical
    assert result.through_faust_per_s is not None and result.through_faust_per_s > 0
    assert result.idle_agent_per_s is not None and result.idle_agent_per_s > 0
    assert "backlog drained by one Faust worker" in lines
    assert "agent that does nothing" in lines
