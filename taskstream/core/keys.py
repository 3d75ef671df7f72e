"""Managing API keys from the command line: ``python -m taskstream.core.keys create|list|revoke``.

    python -m taskstream.core.keys create --tenant acme --name ci        # prints the key once
    python -m taskstream.core.keys create --tenant ops --admin           # an admin key
    python -m taskstream.core.keys list [--tenant acme]
    python -m taskstream.core.keys revoke KEY_ID

Uses ``DATABASE_URL`` like the service. Keys are stored hashed; a lost key cannot be shown
again, only revoked and replaced.
"""

import argparse
import asyncio
import sys

from taskstream.core import auth, store_read
from taskstream.core.db import create_engine
from taskstream.core.settings import Settings


async def _main(args: argparse.Namespace) -> int:
    engine = create_engine(Settings().database_url, pool_size=1)
    try:
        if args.cmd == "create":
            key_id, token, digest = auth.new_key()
            await store_read.create_api_key(
                engine, key_id, args.tenant, args.name,
                auth.KeyRole.ADMIN if args.admin else auth.KeyRole.USER, digest)
            print(token)
            print(f"key {key_id} for tenant {args.tenant!r} created; store it now, it is "
                  "not shown again", file=sys.stderr)
        elif args.cmd == "list":
            for k in await store_read.list_api_keys(engine, args.tenant):
                state = f"revoked {k.revoked_at:%Y-%m-%d}" if k.revoked_at else "active"
                print(f"{k.key_id}\t{k.tenant}\t{k.role}\t{state}\t{k.name}")
        elif args.cmd == "revoke":
            if not await store_read.revoke_api_key(engine, args.key_id):
                print(f"no active key {args.key_id!r}", file=sys.stderr)
                return 1
            print(f"revoked {args.key_id}")
    finally:
        await engine.dispose()
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m taskstream.core.keys", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    create = sub.add_parser("create", help="create a key and print it once")
    create.add_argument("--tenant", required=True)
    create.add_argument("--name", default="")
    create.add_argument("--admin", action="store_true", help="may act across tenants")
    lst = sub.add_parser("list", help="list keys (never their secrets)")
    lst.add_argument("--tenant")
    rev = sub.add_parser("revoke", help="revoke a key by its id")
    rev.add_argument("key_id")
    sys.exit(asyncio.run(_main(parser.parse_args(argv))))


if __name__ == "__main__":
    main()
