"""The ``tollgate`` command."""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import ExitStack
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import psycopg
from pydantic import ValidationError

DEFAULT_DATA_DIR = Path(".tollgate")


def _cmd_dev(args: argparse.Namespace) -> int:
    from api import devstack

    devstack.run(host=args.host, port=args.port, data_dir=args.data_dir)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.config import Settings

    try:
        Settings()  # type: ignore[call-arg]  # fail here, with a readable message
    except ValidationError as exc:
        print(f"tollgate serve: configuration is incomplete:\n{exc}", file=sys.stderr)
        print(
            "Set DATABASE_URL, STRIPE_API_KEY and STRIPE_WEBHOOK_SECRET "
            "(and ENVIRONMENT=development for test keys), or use `tollgate dev`.",
            file=sys.stderr,
        )
        return 2
    uvicorn.run(
        "api.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
    )
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    from api.devstack import database_url
    from db.migrate import migrate

    with ExitStack() as stack:
        applied = migrate(database_url(stack, args.data_dir))
    print("applied: " + (", ".join(applied) if applied else "nothing new"))
    return 0


def _connect(stack: ExitStack, data_dir: Path) -> psycopg.Connection[tuple[object, ...]]:
    from api.devstack import database_url

    return stack.enter_context(psycopg.connect(database_url(stack, data_dir), autocommit=True))


def _cmd_keys_create(args: argparse.Namespace) -> int:
    from db import keys
    from db.errors import DomainError

    with ExitStack() as stack:
        conn = _connect(stack, args.data_dir)
        try:
            new = keys.create(conn, account=args.account, is_admin=args.admin, label=args.label)
        except DomainError as exc:
            print(f"tollgate keys create: {exc.message}", file=sys.stderr)
            return 2
    kind = "admin key" if args.admin else "key"
    print(
        f"{kind} {new.key_id} for account {args.account}; it is shown only once:", file=sys.stderr
    )
    print(new.key)
    return 0


def _cmd_keys_list(args: argparse.Namespace) -> int:
    from db import queries

    with ExitStack() as stack:
        rows = queries.list_api_keys(_connect(stack, args.data_dir), account=args.account)
    for r in rows:
        state = f"revoked {r.revoked_at:%Y-%m-%d}" if r.revoked_at else "active"
        role = "admin" if r.is_admin else "account"
        print(f"{r.key_id}  {r.key_prefix}...  {r.account_id}  {role}  {state}  {r.label or ''}")
    return 0


def _cmd_keys_revoke(args: argparse.Namespace) -> int:
    from db import queries

    with ExitStack() as stack:
        revoked = queries.revoke_api_key(_connect(stack, args.data_dir), key_id=args.key_id)
    print("revoked" if revoked else "no active key with that id")
    return 0 if revoked else 1


def _cmd_actions_set(args: argparse.Namespace) -> int:
    from db import queries
    from db.errors import DomainError

    with ExitStack() as stack:
        try:
            done = queries.operator_set_action_price(
                _connect(stack, args.data_dir),
                action=args.action,
                price=args.price,
                currency=args.currency.upper(),
                description=args.description,
            )
        except DomainError as exc:
            print(f"tollgate actions set: {exc.message}", file=sys.stderr)
            return 2
    print(f"{done.action}: {done.price} {done.currency}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tollgate", description="Payments backend for AI agents.")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("TOLLGATE_DATA_DIR", DEFAULT_DATA_DIR)),
        help="folder of the embedded database and dev files (default .tollgate)",
    )
    sub = p.add_subparsers(dest="command", required=True)

    dev = sub.add_parser(
        "dev", help="run everything locally: embedded PostgreSQL, Stripe emulator, API"
    )
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8000)
    dev.set_defaults(func=_cmd_dev)

    serve = sub.add_parser("serve", help="run the API with settings from the environment")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(func=_cmd_serve)

    mig = sub.add_parser(
        "migrate", help="apply migrations to DATABASE_URL (or the embedded database)"
    )
    mig.set_defaults(func=_cmd_migrate)

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="keys", required=True)
    create = keys.add_parser("create", help="create a key and print it once")
    create.add_argument("--account", required=True, help="account external id, created if new")
    create.add_argument("--admin", action="store_true", help="the key may act for every account")
    create.add_argument("--label")
    create.set_defaults(func=_cmd_keys_create)
    listing = keys.add_parser("list", help="list keys (never the keys themselves)")
    listing.add_argument("--account")
    listing.set_defaults(func=_cmd_keys_list)
    revoke = keys.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id", type=UUID)
    revoke.set_defaults(func=_cmd_keys_revoke)

    actions = sub.add_parser("actions", help="prices of paid actions").add_subparsers(
        dest="actions", required=True
    )
    price = actions.add_parser("set", help="set what one run of an action costs")
    price.add_argument("action", help="e.g. report.generate")
    price.add_argument("price", type=Decimal, help="a decimal, e.g. 0.50")
    price.add_argument("currency", help="ISO 4217, e.g. USD")
    price.add_argument("--description")
    price.set_defaults(func=_cmd_actions_set)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
