"""Ordered SQL migrations with a version table; idempotent, safe to run from several processes.

Run by the Procfile's ``release`` line and by the run command:
``python -m taskstream.core.migrate``.
"""

import asyncio
import logging
import sys
from importlib import resources

import asyncpg

from taskstream.core.settings import Settings

log = logging.getLogger(__name__)

#: Any constant works; it only has to be the same in every process that migrates.
_LOCK_KEY = 0x7A5C_5713


def migration_files() -> list[tuple[int, str, str]]:
    files = []
    for entry in resources.files("taskstream.core.migrations").iterdir():
        name = entry.name
        if name.endswith(".sql"):
            files.append((int(name.split("_", 1)[0]), name, entry.read_text()))
    return sorted(files)


async def migrate(dsn: str, statement_cache_size: int = 100) -> list[str]:
    """Apply pending migrations; returns the names applied.

    Each migration is one transaction that first takes a transaction-scoped advisory lock
    (released by its commit), so concurrent migrators take turns and nothing outlives a
    transaction: this also works through PgBouncer in transaction mode."""
    conn = await asyncpg.connect(dsn, statement_cache_size=statement_cache_size)
    applied: list[str] = []
    try:
        for version, name, sql in migration_files():
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version integer PRIMARY KEY, name text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
                if await conn.fetchval("SELECT 1 FROM schema_migrations WHERE version = $1",
                                       version):
                    continue
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
            applied.append(name)
            log.info("applied migration %s", name)
    finally:
        await conn.close()
    return applied


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = Settings()
    try:
        applied = asyncio.run(migrate(settings.database_url, settings.db_statement_cache_size))
    except asyncpg.PostgresError as exc:  # say why (and what to do), not a traceback
        hint = getattr(exc, "hint", None)
        print(f"migration failed: {exc}" + (f"\nhint: {hint}" if hint else ""), file=sys.stderr)
        raise SystemExit(1) from None
    print(f"migrations applied: {', '.join(applied) or 'none (up to date)'}")


if __name__ == "__main__":
    main()
