"""The reference of every setting the pipeline's processes read, built from the code itself.

It finds every pydantic-settings class that the pipeline's packages define,
lists each field with its environment variable, type, default, unit and
description, and renders the Markdown that `docs/configuration.md` holds.
Secret values are masked wherever this module renders a value.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from activity_schemas.settings import ENV_PREFIX, SETTINGS_FILE_ENV, TOML_SUFFIX
from pydantic import SecretBytes, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

__all__ = [
    "MASK",
    "PACKAGES",
    "PROCESS_SETTINGS",
    "SettingReference",
    "SettingsClassReference",
    "collect_settings_reference",
    "effective_values",
    "env_var_name",
    "find_settings_classes",
    "mask_value",
    "process_settings_classes",
    "render_effective_markdown",
    "render_markdown",
]

PACKAGES = (
    "activity_schemas",
    "activity_producer",
    "activity_streams",
    "activity_sinks",
    "activity_pipeline",
)
"""Packages searched for settings classes."""

PROCESS_SETTINGS: Mapping[str, tuple[str, ...]] = {
    "activity migrate": ("activity_producer.relay.settings:RelaySettings",),
    "activity relay": ("activity_producer.relay.settings:RelaySettings",),
    "activity worker enrichment": (
        "activity_streams.settings:StreamsSettings",
        "activity_streams.observability:WorkerWebSettings",
    ),
    "activity worker sinks": (
        "activity_sinks.settings:SinkSettings",
        "activity_streams.observability:WorkerWebSettings",
    ),
}
"""The settings classes each process reads, as `module:class`."""

MASK = "**********"
"""Text printed in place of a secret value."""

SECRET_NAME_PARTS = ("password", "secret", "api_key", "token", "private_key", "hmac")
"""A plain-string field whose name contains one of these is treated as a secret."""

UNIT_SUFFIXES = (
    ("_ms", "milliseconds"),
    ("_s", "seconds"),
    ("_bytes", "bytes"),
    ("_port", "TCP port"),
    ("_dir", "path"),
    ("_url", "URL"),
)
"""Units derived from a field name's suffix, unless the field declares `unit` itself."""

GENERATED_BY = "uv run activity settings > docs/configuration.md"
"""The command that regenerates the committed reference."""


@dataclass(frozen=True)
class SettingReference:
    """One field of a settings class, as an operator sets it."""

    field: str
    env_var: str
    type_name: str
    default: str
    unit: str
    description: str
    required: bool
    secret: bool


@dataclass(frozen=True)
class SettingsClassReference:
    """The fields a settings class declares itself, and the classes it inherits fields from."""

    qualified_name: str
    summary: str
    processes: tuple[str, ...]
    inherits: tuple[str, ...]
    settings: tuple[SettingReference, ...]


def env_var_name(settings_cls: type[BaseSettings], field: str) -> str:
    """Return the environment variable that sets `field` of `settings_cls`."""
    prefix = settings_cls.model_config.get("env_prefix") or ""
    return f"{prefix}{field}".upper()


def _qualified_name(settings_cls: type) -> str:
    return f"{settings_cls.__module__}:{settings_cls.__qualname__}"


def _defines_settings_class(path: Path) -> bool:
    """Return whether the module at `path` defines a class whose base is named `...Settings`."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return False
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        for base in node.bases:
            name = base.id if isinstance(base, ast.Name) else getattr(base, "attr", "")
            if name.endswith("Settings"):
                return True
    return False


def _candidate_modules(package: str) -> Iterator[str]:
    """Yield the modules of `package` that define settings classes, without importing others.

    Modules are found by reading their source, because importing every module would
    start side effects such as creating Faust apps.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return
    for location in spec.submodule_search_locations:
        root = Path(location)
        for path in sorted(root.rglob("*.py")):
            if not _defines_settings_class(path):
                continue
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join((package, *parts))


def find_settings_classes(packages: Iterable[str] = PACKAGES) -> list[type[BaseSettings]]:
    """Return every settings class with fields that `packages` define, sorted by name."""
    found: dict[str, type[BaseSettings]] = {}
    for package in packages:
        for module_name in _candidate_modules(package):
            module = importlib.import_module(module_name)
            for _, member in inspect.getmembers(module, inspect.isclass):
                if (
                    issubclass(member, BaseSettings)
                    and member.__module__ == module_name
                    and member.model_fields
                ):
                    found[_qualified_name(member)] = member
    return [found[name] for name in sorted(found)]


def process_settings_classes(process: str) -> list[type[BaseSettings]]:
    """Return the settings classes that `process` (a key of PROCESS_SETTINGS) reads."""
    classes = []
    for qualified in PROCESS_SETTINGS[process]:
        module_name, _, class_name = qualified.partition(":")
        classes.append(getattr(importlib.import_module(module_name), class_name))
    return classes


def _is_secret(field_name: str, field: FieldInfo) -> bool:
    annotation = field.annotation
    if inspect.isclass(annotation) and issubclass(annotation, SecretStr | SecretBytes):
        return True
    return any(part in field_name for part in SECRET_NAME_PARTS)


def mask_value(field_name: str, field: FieldInfo, value: Any) -> str:
    """Render `value` of a field for people, with secrets and URL passwords masked."""
    if value is None:
        return "(none)"
    if isinstance(value, SecretStr | SecretBytes) or _is_secret(field_name, field):
        return MASK
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list | set | frozenset):
        return ",".join(str(item) for item in value)
    text = str(value)
    if not text:
        return "(empty)"
    return _mask_url_password(text)


def _mask_url_password(text: str) -> str:
    """Replace the password of a URL such as a PostgreSQL DSN with the mask."""
    if "://" not in text or "@" not in text:
        return text
    try:
        parts = urlsplit(text)
        password = parts.password
    except ValueError:
        return text
    if not password:
        return text
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))


def _type_name(field: FieldInfo) -> str:
    annotation = field.annotation
    if inspect.isclass(annotation) and not getattr(annotation, "__args__", None):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _unit(field_name: str, field: FieldInfo) -> str:
    extra = field.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("unit"), str):
        return str(extra["unit"])
    for suffix, unit in UNIT_SUFFIXES:
        if field_name.endswith(suffix):
            return unit
    return ""


def _default(field_name: str, field: FieldInfo) -> tuple[str, bool]:
    """Return the rendered default and whether the field is required."""
    if field.default_factory is not None:
        return "(computed at start)", False
    if field.default is PydanticUndefined:
        return "(required)", True
    return mask_value(field_name, field, field.default), False


def _own_fields(settings_cls: type[BaseSettings]) -> list[str]:
    """Return the fields `settings_cls` declares or redeclares itself, in declaration order."""
    declared = inspect.get_annotations(settings_cls)
    return [name for name in settings_cls.model_fields if name in declared]


def _settings_parents(settings_cls: type[BaseSettings]) -> tuple[str, ...]:
    return tuple(
        _qualified_name(parent)
        for parent in settings_cls.__mro__[1:]
        if inspect.isclass(parent)
        and issubclass(parent, BaseSettings)
        and parent is not BaseSettings
        and _own_fields(parent)
    )


def _processes_of(settings_cls: type[BaseSettings]) -> tuple[str, ...]:
    qualified = _qualified_name(settings_cls)
    return tuple(process for process, names in PROCESS_SETTINGS.items() if qualified in names)


def collect_settings_reference(
    classes: Sequence[type[BaseSettings]] | None = None,
) -> list[SettingsClassReference]:
    """Return the reference of every settings class (all that the packages define by default)."""
    references = []
    for settings_cls in find_settings_classes() if classes is None else classes:
        settings = []
        for name in _own_fields(settings_cls):
            field = settings_cls.model_fields[name]
            default, required = _default(name, field)
            settings.append(
                SettingReference(
                    field=name,
                    env_var=env_var_name(settings_cls, name),
                    type_name=_type_name(field),
                    default=default,
                    unit=_unit(name, field),
                    description=" ".join((field.description or "").split()),
                    required=required,
                    secret=_is_secret(name, field),
                )
            )
        summary = (inspect.getdoc(settings_cls) or "").split("\n\n")[0].replace("\n", " ")
        references.append(
            SettingsClassReference(
                qualified_name=_qualified_name(settings_cls),
                summary=summary,
                processes=_processes_of(settings_cls),
                inherits=_settings_parents(settings_cls),
                settings=tuple(settings),
            )
        )
    return references


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


_PREAMBLE = f"""# Configuration reference

<!-- Generated by `{GENERATED_BY}`; do not edit by hand.
     A test fails when this file differs from what the code defines. -->

Every process of the pipeline reads its settings from environment variables
named `{ENV_PREFIX}<FIELD>`, then from an optional settings file, then from
the defaults below. Set `{SETTINGS_FILE_ENV}` to the path of that file:

- a file ending in `{TOML_SUFFIX}` holds the field names as keys, for example
  `kafka_bootstrap_servers = "kafka:29092"`;
- any other file holds dotenv lines with the variable names, for example
  `ACTIVITY_KAFKA_BOOTSTRAP_SERVERS=kafka:29092`.

Keys that a process does not read are ignored, so one file can serve the
relay and both workers. An environment variable always wins over the file.
A missing file named by `{SETTINGS_FILE_ENV}` stops the process with an
error. Keep secrets in that file (readable by the service account only) or
in the environment; never bake them into an image.

Secrets (API keys, signing keys, passwords in URLs) are shown masked as
`{MASK}`, here and in `activity settings --effective`, which prints the
values a process would use in the current environment.
"""


def render_markdown(references: Sequence[SettingsClassReference]) -> str:
    """Render the reference as the Markdown document `docs/configuration.md` holds."""
    lines = [_PREAMBLE]
    for reference in references:
        module, _, name = reference.qualified_name.partition(":")
        lines.append(f"## `{name}`\n")
        lines.append(f"{reference.summary} Defined in `{module}`.")
        if reference.processes:
            lines.append(f"Read by {', '.join(_code(p) for p in reference.processes)}.")
        if reference.inherits:
            parents = ", ".join(_code(parent.partition(":")[2]) for parent in reference.inherits)
            lines.append(f"Also reads every setting of {parents}.")
        lines.append("")
        lines.append("| variable | type | default | unit | description |")
        lines.append("| --- | --- | --- | --- | --- |")
        for setting in reference.settings:
            description = setting.description
            if setting.secret:
                description = f"{description} Secret: printed masked.".strip()
            row = (
                _code(setting.env_var),
                _code(setting.type_name),
                _code(setting.default),
                setting.unit,
                description,
            )
            lines.append("| " + " | ".join(_cell(cell) for cell in row) + " |")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def effective_values(settings_cls: type[BaseSettings]) -> list[tuple[str, str]]:
    """Return (variable, value) of every field as `settings_cls` reads them now, masked."""
    settings = settings_cls()
    return [
        (env_var_name(settings_cls, name), mask_value(name, field, getattr(settings, name)))
        for name, field in settings_cls.model_fields.items()
    ]


def render_effective_markdown(classes: Sequence[type[BaseSettings]]) -> str:
    """Render the values each class reads in the current environment, secrets masked."""
    lines = []
    for settings_cls in classes:
        lines.append(f"## `{settings_cls.__qualname__}`\n")
        lines.append("| variable | value |")
        lines.append("| --- | --- |")
        for variable, value in effective_values(settings_cls):
            lines.append(f"| {_code(variable)} | {_cell(_code(value))} |")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"
