"""Heroku-style configuration: URL quirks and explicit construction."""

import pytest

from taskstream.core.queue import redis_settings
from taskstream.core.settings import Settings, normalize_database_url


def test_heroku_urls_are_accepted() -> None:
    assert normalize_database_url("postgres://u:p@h:5432/d") == "postgresql://u:p@h:5432/d"
    assert normalize_database_url("postgresql+asyncpg://h/d") == "postgresql://h/d"
    s = Settings(DATABASE_URL="postgres://u:p@db.example:5432/app",
                 REDIS_URL="rediss://:secret@cache.example:6380/0")
    assert s.database_url.startswith("postgresql://")
    rs = redis_settings(s)
    assert rs.ssl and rs.ssl_cert_reqs == "none" and rs.port == 6380


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://x/y")
    monkeypatch.setenv("PORT", "5001")
    monkeypatch.setenv("TASKSTREAM_AUTH", "false")
    s = Settings()
    assert s.port == 5001 and s.database_url == "postgresql://x/y" and s.auth is False
