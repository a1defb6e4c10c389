"""Centrifugo channel names."""

from __future__ import annotations

from uuid import UUID

import pytest
from activity_streams.channels import ChannelNameError, chat_channel, inbox_channel

TENANT = UUID("00000000-0000-0000-0000-00000000000a")
PRINCIPAL = UUID("00000000-0000-0000-0000-00000000000b")


def test_inbox_channel_is_user_limited() -> None:
    assert inbox_channel(TENANT, PRINCIPAL) == f"inbox:{TENANT}#{PRINCIPAL}"


def test_channel_with_free_text_is_rejected() -> None:
    with pytest.raises(ChannelNameError, match="contains characters outside"):
        chat_channel(TENANT, "general chat")


def test_overlong_channel_is_rejected() -> None:
    with pytest.raises(ChannelNameError, match="Centrifugo accepts at most 255"):
        chat_channel(TENANT, "x" * 300)
