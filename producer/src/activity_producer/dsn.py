"""Conversion of one PostgreSQL URL into the forms each driver expects."""

from __future__ import annotations

from sqlalchemy.engine import make_url

__all__ = ["for_asyncpg", "for_libpq", "for_sqlalchemy_async", "for_sqlalchemy_sync"]


def _with_driver(url: str, driver: str) -> str:
    return make_url(url).set(drivername=driver).render_as_string(hide_password=False)


def for_sqlalchemy_async(url: str) -> str:
    """Return `url` for SQLAlchemy's asyncpg dialect."""
    return _with_driver(url, "postgresql+asyncpg")


def for_sqlalchemy_sync(url: str) -> str:
    """Return `url` for SQLAlchemy's psycopg dialect."""
    return _with_driver(url, "postgresql+psycopg")


def for_libpq(url: str) -> str:
    """Return `url` as a plain libpq URL, as psycopg and asyncpg take it."""
    return _with_driver(url, "postgresql")


for_asyncpg = for_libpq
