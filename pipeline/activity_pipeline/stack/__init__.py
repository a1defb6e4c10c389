"""Local development stack without Docker: PostgreSQL 15, Kafka 4.1.1 (KRaft) and Centrifugo v6.

`up`, `down` and `status` are the Python entry points, and `stack_app` is the Typer app
mounted as `activity stack`.
"""

from __future__ import annotations

from activity_pipeline.stack.cli import stack_app
from activity_pipeline.stack.errors import StackError
from activity_pipeline.stack.manager import down, status, up
from activity_pipeline.stack.service import ServiceStatus
from activity_pipeline.stack.settings import StackSettings, load_settings

__all__ = [
    "ServiceStatus",
    "StackError",
    "StackSettings",
    "down",
    "load_settings",
    "stack_app",
    "status",
    "up",
]
