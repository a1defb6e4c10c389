"""A sink worker whose Centrifugo publisher stalls the broadcasts of chosen tenants: a test fake.

Real Centrifugo cannot be made to hang for one tenant only, so this fake wraps
the real publisher. While a file `<tenant id>.stall` exists in the directory
named by the first argument, every broadcast batch with a channel of that
tenant waits, and the fake creates `<tenant id>.stalled` to show it. Removing
the `.stall` file releases the batch, which then goes to the real Centrifugo.

Run it as `python -m tests.sinks.stalling_worker STALL_DIR` with the usual
`ACTIVITY_*` environment of a sink worker. Its lanes split a stalled shared
batch after `STALLING_SPLIT_AFTER_S` instead of `lanes.SPLIT_AFTER_S`, so that
the tests do not wait 10 s per stall.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from activity_pipeline.workers import WorkerKind, run_worker
from activity_sinks import lanes, publishing
from activity_sinks.app import settings
from activity_sinks.centrifugo import Broadcast, CentrifugoPublisher, ChannelFailure

STALL_POLL_S = 0.05
"""How often a stalled broadcast checks whether it was released, in seconds."""

STALLING_SPLIT_AFTER_S = 2.0
"""When these workers split a stalled shared batch, in seconds: long enough for a healthy
batch of a few test deliveries on a busy machine, short enough to keep the tests fast."""

STALL_SUFFIX = ".stall"
STALLED_SUFFIX = ".stalled"


class StallingPublisher(CentrifugoPublisher):
    """The real publisher, except that broadcasts of stalled tenants wait until released."""

    def __init__(self, stall_dir: Path) -> None:
        super().__init__(
            settings.centrifugo_api_url,
            settings.centrifugo_api_key.get_secret_value(),
            settings.centrifugo_timeout_s,
            settings.centrifugo_retry_budget_s,
        )
        self._stall_dir = stall_dir

    def _stalled_tenants(self, broadcasts: Sequence[Broadcast]) -> list[str]:
        tenants = [path.name.removesuffix(STALL_SUFFIX) for path in self._stall_dir.glob("*.stall")]
        return [
            tenant
            for tenant in tenants
            if any(tenant in channel for b in broadcasts for channel in b.channels)
        ]

    async def broadcast(self, broadcasts: Sequence[Broadcast]) -> list[list[ChannelFailure]]:
        while stalled := self._stalled_tenants(broadcasts):
            for tenant in stalled:
                (self._stall_dir / f"{tenant}{STALLED_SUFFIX}").touch()
            await asyncio.sleep(STALL_POLL_S)
        return await super().broadcast(broadcasts)


def main() -> None:
    stall_dir = Path(sys.argv[1])
    lanes.SPLIT_AFTER_S = STALLING_SPLIT_AFTER_S
    publishing.resources = publishing.SinkResources(lambda: StallingPublisher(stall_dir))
    run_worker(WorkerKind.SINKS, "info")


if __name__ == "__main__":
    main()
