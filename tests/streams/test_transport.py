"""The Faust transport of both workers: Faust's aiokafka consumer with a short fetch wait."""

from __future__ import annotations

from pathlib import Path
from uuid import uuid4

from activity_streams.app import create_app
from activity_streams.settings import StreamsSettings
from activity_streams.transport import FETCH_MAX_WAIT_MS, Transport


async def _ignore(*_: object) -> None:
    return None


async def test_worker_consumer_waits_100_ms_per_fetch(tmp_path: Path) -> None:
    settings = StreamsSettings(faust_data_dir=str(tmp_path))
    app = create_app(
        f"transport-test-{uuid4().hex[:6]}", settings, web_port=settings.enrichment_web_port
    )

    consumer = app.transport.create_consumer(
        callback=_ignore, on_partitions_revoked=_ignore, on_partitions_assigned=_ignore
    )
    kafka_consumer = consumer._new_consumer_thread()._create_worker_consumer(app.transport)

    assert isinstance(app.transport, Transport)
    assert kafka_consumer._fetch_max_wait_ms == FETCH_MAX_WAIT_MS == 100
