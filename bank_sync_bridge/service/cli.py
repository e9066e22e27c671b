"""Command line of the bridge service: serve, and the operator's administration.

::

    python -m bank_sync_bridge.service                      # serve on 127.0.0.1:8750, SQLite
    python -m bank_sync_bridge.service tenant add "Acme Odoo"
    python -m bank_sync_bridge.service tenant list | revoke CLIENT_ID | rotate-secret CLIENT_ID
    python -m bank_sync_bridge.service aggregator set --kind bridgeapi --base-url URL \\
        --credential client_id=... --credential client_secret=... --webhook-secret S
    python -m bank_sync_bridge.service aggregator show
    python -m bank_sync_bridge.service generate-key | rotate-keys | migrate

Options come from the environment too: ``BANK_SYNC_SERVICE_HOST``, ``_PORT``,
``_DATABASE_URL``, ``_KEYS`` (comma-separated, newest first), ``_KEYS_FILE``, ``_PUBLIC_URL``,
``_RATE``, ``_BURST``, ``_GLOBAL_RATE``, ``_MAX_CONNECTIONS``, ``_TRUSTED_PROXIES``, ``_LOG_LEVEL``,
``_TEST_MODE``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from ..crypto import SecretBox, SecretKeyError, generate_key
from . import admin
from .app import ServiceApp
from .keys import KEYS_ENV, load_keys
from .logs import LOGGER_NAME, configure_logging
from .server import ServiceServer
from .settings import ServiceSettings
from .store import DEFAULT_DATABASE_URL, Store

ENV_PREFIX = "BANK_SYNC_SERVICE_"
DEFAULT_PORT = 8750


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """The argument parser (defaults read from ``environ``)."""

    def env(name: str, default: str) -> str:
        return environ.get(ENV_PREFIX + name, default)

    parser = argparse.ArgumentParser(
        prog="python -m bank_sync_bridge.service",
        description="Multi-tenant bridge between Odoo databases and one bank aggregator.",
    )
    parser.add_argument("--database-url", default=env("DATABASE_URL", DEFAULT_DATABASE_URL))
    parser.add_argument(
        "--keys-file",
        default=environ.get(ENV_PREFIX + "KEYS_FILE"),
        help=f"file of encryption keys, newest first (else ${KEYS_ENV})",
    )
    parser.add_argument("--log-level", default=env("LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="run the service (the default)")
    # After the word ``serve`` too; their defaults come from the main parser only (argparse
    # would otherwise let the subcommand's defaults overwrite options given before it).
    _serve_options(serve, env, argparse.SUPPRESS)

    tenant = sub.add_parser("tenant", help="register, list, revoke tenants")
    tenant_sub = tenant.add_subparsers(dest="action", required=True)
    add = tenant_sub.add_parser("add", help="register a tenant; prints its secret once")
    add.add_argument("name")
    tenant_sub.add_parser("list")
    for action in ("revoke", "rotate-secret"):
        tenant_sub.add_parser(action).add_argument("client_id")

    agg = sub.add_parser("aggregator", help="the operator's aggregator contract")
    agg_sub = agg.add_subparsers(dest="action", required=True)
    agg_set = agg_sub.add_parser("set")
    agg_set.add_argument("--kind", required=True, choices=admin.AGGREGATOR_KINDS)
    agg_set.add_argument("--base-url")
    agg_set.add_argument("--credential", action="append", default=[], metavar="NAME=VALUE")
    agg_set.add_argument(
        "--credentials-stdin",
        action="store_true",
        help="read credentials as a JSON object on stdin (keeps them out of `ps`)",
    )
    agg_set.add_argument("--option", action="append", default=[], metavar="NAME=VALUE")
    agg_set.add_argument("--webhook-secret", action="append", default=[])
    agg_sub.add_parser("show")

    sub.add_parser("migrate", help="create or upgrade the schema, then exit")
    sub.add_parser("generate-key", help="print a new encryption key")
    sub.add_parser("rotate-keys", help="re-encrypt stored secrets with the newest key")
    # ``serve`` is the default command: its options are accepted without the word too.
    _serve_options(parser, env)
    return parser


def _serve_options(
    parser: argparse.ArgumentParser, env: Callable[[str, str], str], default: Any = None
) -> None:
    def pick(value: Any) -> Any:
        return value if default is None else default

    parser.add_argument("--host", default=pick(env("HOST", "127.0.0.1")))
    parser.add_argument("--port", type=int, default=pick(int(env("PORT", str(DEFAULT_PORT)))))
    parser.add_argument(
        "--public-url",
        default=pick(env("PUBLIC_URL", "") or None),
        help="URL browsers and aggregators reach the service at (behind a proxy)",
    )
    parser.add_argument(
        "--rate", type=float, default=pick(float(env("RATE", "10"))), help="calls/s per tenant"
    )
    parser.add_argument(
        "--burst", type=float, default=pick(float(env("BURST", "60"))), help="burst per tenant"
    )
    parser.add_argument(
        "--global-rate",
        type=float,
        default=pick(float(env("GLOBAL_RATE", "0")) or None),
        help="calls/s for all tenants together (e.g. 6 for Bridge's 2000 per 5 min)",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=pick(int(env("MAX_CONNECTIONS", "64"))),
        help="connections served at once (one thread each); more get 503",
    )
    parser.add_argument(
        "--trusted-proxies",
        type=int,
        default=pick(int(env("TRUSTED_PROXIES", "0"))),
        help="reverse proxies in front that append to X-Forwarded-For (0: ignore that header)",
    )
    parser.add_argument(
        "--test-mode",
        action="store_true",
        default=pick(env("TEST_MODE", "").lower() in ("1", "true", "yes")),
        help="tests and benchmarks only: tenants' callbacks may use http://127.0.0.1",
    )


def main(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> int:
    """Run the command line; returns the exit status."""
    environ = os.environ if environ is None else environ
    out = stdout or sys.stdout
    args = build_parser(environ).parse_args(argv)
    if args.command == "generate-key":
        out.write(generate_key() + "\n")
        return 0
    listener = configure_logging(args.log_level)
    try:
        return _main(args, environ, out, stdin)
    finally:
        listener.stop()


def _main(
    args: argparse.Namespace, environ: Mapping[str, str], out: TextIO, stdin: TextIO | None
) -> int:
    log = logging.getLogger(LOGGER_NAME)
    try:
        store = Store(args.database_url)
        keys = load_keys(
            keys_file=args.keys_file,
            environ=environ,
            sqlite_path=store.sqlite_path if store.dialect == "sqlite" else None,
        )
        box = SecretBox(keys)
    except (SecretKeyError, ValueError, RuntimeError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    applied = store.migrate()
    if applied:
        log.info("schema migrated", extra={"fields": {"versions": applied}})
    try:
        return _run(args, store, box, out, stdin or sys.stdin)
    except (LookupError, ValueError, SecretKeyError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    finally:
        store.close()


def _run(args: argparse.Namespace, store: Store, box: SecretBox, out: TextIO, stdin: TextIO) -> int:
    if args.command == "migrate":
        out.write(f"schema version {store.schema_version()}\n")
        return 0
    if args.command == "rotate-keys":
        out.write(f"{admin.rotate_keys(store, box)} secrets re-encrypted\n")
        return 0
    if args.command == "tenant":
        return _tenant(args, store, box, out)
    if args.command == "aggregator":
        return _aggregator(args, store, box, out, stdin)
    settings = ServiceSettings(
        rate_per_second=args.rate,
        burst=args.burst,
        global_rate_per_second=args.global_rate,
        public_url=args.public_url,
        max_connections=args.max_connections,
        trusted_proxies=args.trusted_proxies,
        test_mode=args.test_mode,
    )
    server = ServiceServer(ServiceApp(store, box, settings), args.host, args.port)
    logging.getLogger(LOGGER_NAME).info(
        "serving",
        extra={
            "fields": {
                "url": server.url,
                "database": store.dialect,
                "aggregator": server.app.aggregator().kind,
            }
        },
    )
    if settings.test_mode:
        logging.getLogger(LOGGER_NAME).warning(
            "test mode: tenants' callbacks may lead to this machine over plain http; "
            "never run a production service this way"
        )
    # SIGTERM (a service manager stopping us) ends the loop like Ctrl-C does.
    signal.signal(signal.SIGTERM, _terminate)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
    return 0


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _tenant(args: argparse.Namespace, store: Store, box: SecretBox, out: TextIO) -> int:
    if args.action == "add":
        creds = admin.register_tenant(store, box, args.name)
        out.write(
            f"client_id:     {creds.client_id}\n"
            f"client_secret: {creds.client_secret}\n"
            "The secret is shown only now: give both to the Odoo administrator.\n"
        )
    elif args.action == "rotate-secret":
        creds = admin.rotate_tenant_secret(store, box, args.client_id)
        out.write(f"client_id:     {creds.client_id}\nclient_secret: {creds.client_secret}\n")
    elif args.action == "revoke":
        admin.revoke_tenant(store, args.client_id)
        out.write(f"{args.client_id} revoked\n")
    else:
        for tenant in admin.list_tenants(store):
            state = "revoked" if tenant.revoked_at else "active"
            out.write(f"{tenant.client_id}\t{state}\t{tenant.name}\n")
    return 0


def _aggregator(
    args: argparse.Namespace, store: Store, box: SecretBox, out: TextIO, stdin: TextIO
) -> int:
    if args.action == "show":
        config = admin.get_aggregator(store, box)
        shown = {
            "kind": config.kind,
            "base_url": config.base_url,
            "options": dict(config.options),
            "credentials": sorted(config.credentials),  # names only, never values
            "webhook_secrets": len(config.webhook_secrets),
        }
        out.write(json.dumps(shown, indent=2) + "\n")
        return 0
    credentials = admin.parse_pairs(args.credential)
    if args.credentials_stdin:
        data = json.loads(stdin.read() or "{}")
        if not isinstance(data, dict):
            raise ValueError("Credentials on stdin must be a JSON object")
        credentials.update({str(k): str(v) for k, v in data.items()})
    admin.set_aggregator(
        store,
        box,
        admin.AggregatorConfig(
            kind=args.kind,
            base_url=args.base_url,
            credentials=credentials,
            options=admin.parse_pairs(args.option),
            webhook_secrets=tuple(args.webhook_secret),
        ),
    )
    out.write(f"aggregator set: {args.kind}\n")
    return 0
