"""The SQLModel engine's URL: the same database the asyncpg pool uses, through asyncpg."""

import pytest

from core.db import async_url
from core.settings import Settings


def test_async_url_keeps_the_database_and_picks_asyncpg() -> None:
    url = async_url(Settings(database_url="postgres://u:p%40ss@db.example:6543/app").database_url)
    assert url.drivername == "postgresql+asyncpg"
    assert (url.username, url.password, url.host, url.port, url.database) == \
        ("u", "p@ss", "db.example", 6543, "app")


def test_sslmode_becomes_asyncpg_ssl() -> None:
    url = async_url("postgresql://u@h/app?sslmode=require&prepared_statement_cache_size=100")
    assert dict(url.query) == {"ssl": "require", "prepared_statement_cache_size": "100"}


def test_other_schemes_are_refused() -> None:
    with pytest.raises(ValueError, match="not a PostgreSQL URL"):
        async_url("mysql://u@h/app")
