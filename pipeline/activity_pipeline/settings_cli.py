"""The `activity settings` command: every setting the processes read, as Markdown.

Without options it prints the reference that `docs/configuration.md` holds;
with `--effective` it prints the values the current environment and settings
file give, secrets masked.
"""

from __future__ import annotations

from typing import Annotated

import typer

from activity_pipeline.settings_reference import (
    collect_settings_reference,
    find_settings_classes,
    render_effective_markdown,
    render_markdown,
)

__all__ = ["settings"]


def settings(
    effective: Annotated[
        bool,
        typer.Option(
            "--effective",
            help="Print the values read from the environment and ACTIVITY_SETTINGS_FILE instead "
            "of the defaults; secrets are masked.",
        ),
    ] = False,
) -> None:
    """Print every setting as a Markdown table: variable, type, default, unit, description."""
    if effective:
        typer.echo(render_effective_markdown(find_settings_classes()), nl=False)
        return
    typer.echo(render_markdown(collect_settings_reference()), nl=False)
