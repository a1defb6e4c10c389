"""The settings reference and the settings file: what the docs list, what a process reads.

The committed `docs/configuration.md` must equal what `activity settings`
prints, so adding a setting without regenerating the docs fails here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from activity_pipeline.cli import app as cli_app
from activity_pipeline.settings_reference import (
    GENERATED_BY,
    MASK,
    collect_settings_reference,
    find_settings_classes,
    render_markdown,
)
from activity_producer.relay import RelaySettings
from activity_schemas.settings import ENV_PREFIX, SETTINGS_FILE_ENV, SettingsFileError
from activity_sinks.settings import SinkSettings
from activity_streams.observability import WorkerWebSettings
from activity_streams.settings import StreamsSettings
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]
CONFIGURATION_DOC = ROOT / "docs" / "configuration.md"

SetEnvironment = Callable[[dict[str, str]], None]


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> SetEnvironment:
    """Clear every ACTIVITY_* variable of this process; return a setter for new ones."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)

    def apply(environment: dict[str, str]) -> None:
        for name, value in environment.items():
            monkeypatch.setenv(name, value)

    return apply


def test_configuration_doc_matches_code() -> None:
    generated = render_markdown(collect_settings_reference())
    documented = CONFIGURATION_DOC.read_text(encoding="utf-8")

    documented_variables = set(re.findall(r"^\| `(ACTIVITY_[A-Z0-9_]+)` \|", documented, re.M))
    defined_variables = {
        setting.env_var
        for reference in collect_settings_reference()
        for setting in reference.settings
    }

    assert documented_variables == defined_variables, f"regenerate with `{GENERATED_BY}`"
    assert documented == generated, f"docs/configuration.md is stale: run `{GENERATED_BY}`"


def test_reference_finds_every_settings_class_of_the_packages() -> None:
    found = find_settings_classes()

    assert {RelaySettings, StreamsSettings, SinkSettings, WorkerWebSettings} <= set(found)


def test_reference_lists_inherited_settings_once_under_the_parent() -> None:
    references = {ref.qualified_name: ref for ref in collect_settings_reference()}

    sinks = references["activity_sinks.settings:SinkSettings"]
    own = {setting.env_var for setting in sinks.settings}

    assert sinks.inherits == ("activity_streams.settings:StreamsSettings",)
    assert "ACTIVITY_CENTRIFUGO_API_KEY" in own
    assert "ACTIVITY_KAFKA_BOOTSTRAP_SERVERS" not in own


def test_reference_masks_secret_defaults_and_url_passwords() -> None:
    settings = {
        setting.env_var: setting
        for reference in collect_settings_reference()
        for setting in reference.settings
    }

    api_key = settings["ACTIVITY_CENTRIFUGO_API_KEY"]
    database_url = settings["ACTIVITY_DATABASE_URL"]

    assert (api_key.default, api_key.secret) == (MASK, True)
    assert database_url.default == f"postgresql://activity:{MASK}@127.0.0.1:55432/activity"


def test_reference_gives_units_from_field_names() -> None:
    settings = {
        setting.env_var: setting
        for reference in collect_settings_reference()
        for setting in reference.settings
    }

    units = {
        name: settings[name].unit
        for name in ("ACTIVITY_CENTRIFUGO_TIMEOUT_S", "ACTIVITY_SINK_WEB_PORT")
    }

    assert units == {
        "ACTIVITY_CENTRIFUGO_TIMEOUT_S": "seconds",
        "ACTIVITY_SINK_WEB_PORT": "TCP port",
    }


def test_toml_settings_file_supplies_values_and_environment_wins(
    clean_environment: SetEnvironment, tmp_path: Path
) -> None:
    settings_file = tmp_path / "activity.toml"
    settings_file.write_text(
        'kafka_bootstrap_servers = "kafka-a:9092"\n'
        "relay_batch_size = 250\n"
        'centrifugo_api_url = "http://centrifugo:8000/api"\n',
        encoding="utf-8",
    )
    clean_environment({SETTINGS_FILE_ENV: str(settings_file), "ACTIVITY_RELAY_BATCH_SIZE": "750"})

    settings = RelaySettings()

    assert settings.kafka_bootstrap_servers == "kafka-a:9092"
    assert settings.relay_batch_size == 750


def test_dotenv_file_supplies_sink_secret(
    clean_environment: SetEnvironment, tmp_path: Path
) -> None:
    settings_file = tmp_path / "sinks.env"
    settings_file.write_text(
        "ACTIVITY_CENTRIFUGO_API_KEY=from-the-file\nACTIVITY_UNRELATED_SETTING=ignored\n",
        encoding="utf-8",
    )
    clean_environment({SETTINGS_FILE_ENV: str(settings_file)})

    settings = SinkSettings()

    assert settings.centrifugo_api_key.get_secret_value() == "from-the-file"
    assert "from-the-file" not in repr(settings)


def test_missing_settings_file_stops_with_its_path(
    clean_environment: SetEnvironment, tmp_path: Path
) -> None:
    missing = tmp_path / "absent.toml"
    clean_environment({SETTINGS_FILE_ENV: str(missing)})

    with pytest.raises(SettingsFileError, match=r"absent\.toml.*does not exist.*unset"):
        StreamsSettings()


def test_settings_command_prints_the_committed_reference() -> None:
    result = CliRunner().invoke(cli_app, ["settings"])

    assert result.exit_code == 0, result.output
    assert result.output == CONFIGURATION_DOC.read_text(encoding="utf-8")


def test_effective_settings_mask_secrets_from_environment_and_file(
    clean_environment: SetEnvironment, tmp_path: Path
) -> None:
    settings_file = tmp_path / "activity.env"
    settings_file.write_text("ACTIVITY_CENTRIFUGO_API_KEY=key-from-file-42\n", encoding="utf-8")
    clean_environment(
        {
            SETTINGS_FILE_ENV: str(settings_file),
            "ACTIVITY_DATABASE_URL": "postgresql://svc:pa55-from-env@db.internal:5432/activity",
        }
    )

    result = CliRunner().invoke(cli_app, ["settings", "--effective"])

    assert result.exit_code == 0, result.output
    assert "key-from-file-42" not in result.output
    assert "pa55-from-env" not in result.output
    assert f"postgresql://svc:{MASK}@db.internal:5432/activity" in result.output
    assert f"| `ACTIVITY_CENTRIFUGO_API_KEY` | `{MASK}` |" in result.output
