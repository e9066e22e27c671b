"""The service's own database: SQLite on one machine, PostgreSQL behind a load balancer.

One small :class:`Store` speaks both through DB-API. SQL is written once with ``?``
placeholders and translated for psycopg2. The schema is created and upgraded by the service
itself: ``schema_version`` holds the number of the last applied migration and :data:`MIGRATIONS`
are applied in order, each in its own transaction, so a crash between two leaves a consistent
database that the next start finishes upgrading.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

#: Default store: a SQLite file in the working directory.
DEFAULT_DATABASE_URL = "sqlite:///bank_sync_service.sqlite3"

#: Files SQLite keeps next to the database, holding recent rows in clear just the same.
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


class Cursor(Protocol):
    """The part of a DB-API cursor the store uses."""

    rowcount: int

    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any:
        """Run one statement."""

    def fetchone(self) -> Any:
        """Next row or None."""

    def fetchall(self) -> list[Any]:
        """Remaining rows."""


@dataclass(frozen=True)
class Migration:
    """One schema step; ``statements`` are run in order, per dialect where they differ."""

    version: int
    description: str
    statements: tuple[str, ...]


# ``{serial}`` becomes an auto-incrementing integer primary key in each dialect; ``{real}`` a
# double-precision number (epoch seconds are stored that way: comparable, time-zone free).
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "tenants, aggregator settings, ownership, events, replay protection, tokens",
        (
            """CREATE TABLE tenants (
                id {serial},
                client_id TEXT NOT NULL UNIQUE,
                name TEXT NOT NULL,
                secret_enc TEXT NOT NULL,
                callback_url TEXT,
                created_at {real} NOT NULL,
                revoked_at {real}
            )""",
            """CREATE TABLE settings (
                key TEXT PRIMARY KEY,
                value TEXT NOT NULL,
                updated_at {real} NOT NULL
            )""",
            # One aggregator user per tenant company; ``user_ref`` is what the provider gets.
            """CREATE TABLE aggregator_users (
                user_ref TEXT PRIMARY KEY,
                tenant_id INTEGER NOT NULL REFERENCES tenants(id),
                company TEXT NOT NULL,
                created_at {real} NOT NULL,
                UNIQUE (tenant_id, company)
            )""",
            # Which tenant company owns which remote connection / account: the isolation check.
            """CREATE TABLE connections (
                kind TEXT NOT NULL,
                connection_id TEXT NOT NULL,
                user_ref TEXT NOT NULL REFERENCES aggregator_users(user_ref),
                created_at {real} NOT NULL,
                deleted_at {real},
                PRIMARY KEY (kind, connection_id)
            )""",
            """CREATE TABLE accounts (
                kind TEXT NOT NULL,
                account_id TEXT NOT NULL,
                connection_id TEXT NOT NULL,
                user_ref TEXT NOT NULL REFERENCES aggregator_users(user_ref),
                created_at {real} NOT NULL,
                PRIMARY KEY (kind, account_id)
            )""",
            """CREATE TABLE events (
                id {serial},
                kind TEXT NOT NULL,
                event_id TEXT NOT NULL,
                type TEXT NOT NULL,
                tenant_id INTEGER REFERENCES tenants(id),
                user_ref TEXT,
                connection_id TEXT,
                payload TEXT NOT NULL,
                received_at {real} NOT NULL,
                delivery_state TEXT NOT NULL DEFAULT 'none',
                attempts INTEGER NOT NULL DEFAULT 0,
                next_attempt_at {real},
                last_error TEXT,
                UNIQUE (kind, event_id)
            )""",
            "CREATE INDEX events_tenant_idx ON events (tenant_id, id)",
            "CREATE INDEX events_delivery_idx ON events (delivery_state, next_attempt_at)",
            # Nonces seen inside the replay window; rows older than the window are purged.
            """CREATE TABLE seen_nonces (
                client_id TEXT NOT NULL,
                nonce TEXT NOT NULL,
                expires_at {real} NOT NULL,
                PRIMARY KEY (client_id, nonce)
            )""",
            "CREATE INDEX seen_nonces_expiry_idx ON seen_nonces (expires_at)",
            # Aggregator user tokens (encrypted), shared by every service process.
            """CREATE TABLE provider_tokens (
                key TEXT PRIMARY KEY,
                value_enc TEXT NOT NULL,
                updated_at {real} NOT NULL
            )""",
        ),
    ),
)


class Store:
    """Thread-safe access to the service database named by ``database_url``.

    ``sqlite:///relative.db``, ``sqlite:////absolute/path.db``, a plain file path, or
    ``postgresql://user@host:port/dbname``. SQLite gets one connection per thread (WAL mode so
    readers never wait for the writer); PostgreSQL a small pool.

    The SQLite database and its ``-wal``/``-shm`` files are readable by the service's user only
    (0600), whatever the umask: the database is created that way, and files left readable by
    an older version are restricted when the store opens them.
    """

    def __init__(self, database_url: str = DEFAULT_DATABASE_URL, *, pool_size: int = 16):
        self.database_url = database_url
        scheme = urlsplit(database_url).scheme.lower()
        if scheme in ("postgres", "postgresql"):
            self.dialect = "postgresql"
            try:
                from psycopg2.pool import ThreadedConnectionPool  # noqa: PLC0415
            except ImportError as exc:  # pragma: no cover - depends on the environment
                raise RuntimeError(
                    "PostgreSQL needs psycopg2: pip install 'bank-sync-bridge[service]'"
                ) from exc
            self._pool = ThreadedConnectionPool(1, pool_size, dsn=database_url)
        elif scheme in ("sqlite", ""):
            self.dialect = "sqlite"
            self.sqlite_path = _sqlite_path(database_url)
            _make_private(self.sqlite_path)
            self._companions_checked = False
            self._pool_size = pool_size
            self._idle: list[sqlite3.Connection] = []
            self._lock = threading.Lock()
            # One writer at a time inside this process: SQLite would otherwise make the
            # others wait in its busy handler, which sleeps in steps of milliseconds.
            self._write_lock = threading.Lock()
        else:
            raise ValueError(f"Unsupported database URL scheme: {scheme!r}")
        self._local = threading.local()

    # -- connections ------------------------------------------------------------------------
    def _sqlite_checkout(self) -> sqlite3.Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        conn = sqlite3.connect(
            self.sqlite_path, timeout=30, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit survives a process crash; only an OS crash may lose the last
        # transactions (the documented trade-off of the single-machine store).
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        # No checkpoint inside a request's commit (it writes and syncs the database file and
        # would stall every writer behind it): :meth:`checkpoint` runs in the background.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        if not self._companions_checked:
            # The -wal and -shm files exist from the first connection in WAL mode on. SQLite
            # gives them the database's mode; an older one's files may still be readable.
            _make_private(self.sqlite_path)
            self._companions_checked = True
        return conn

    def _sqlite_checkin(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:  # a failed COMMIT: never hand out a half-open transaction
            conn.rollback()
        with self._lock:
            if len(self._idle) < self._pool_size:
                self._idle.append(conn)
                return
        conn.close()

    @contextlib.contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Transaction]:
        """One database transaction: committed when the block ends, rolled back on error.

        ``write=False`` promises only reads (they never wait for writers on SQLite). A
        transaction opened inside another one in the same thread joins it.
        """
        current: Transaction | None = getattr(self._local, "current", None)
        if current is not None:
            yield current
            return
        if self.dialect == "sqlite":
            yield from self._sqlite_transaction(write)
            return
        pg = self._pool.getconn()
        try:
            with pg.cursor() as cursor:
                self._local.current = Transaction(cursor, self.dialect)
                yield self._local.current
            pg.commit()
        except BaseException:
            pg.rollback()
            raise
        finally:
            self._local.current = None
            self._pool.putconn(pg)

    def _sqlite_transaction(self, write: bool) -> Iterator[Transaction]:
        conn = self._sqlite_checkout()
        lock = self._write_lock if write else contextlib.nullcontext()
        try:
            with lock:
                # IMMEDIATE takes SQLite's write lock up front (other processes, such as the
                # command line, may write too): no deadlock between two upgrading readers.
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                self._local.current = Transaction(conn.cursor(), self.dialect)
                try:
                    yield self._local.current
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                finally:
                    self._local.current = None
                conn.execute("COMMIT")
        finally:
            self._sqlite_checkin(conn)

    def checkpoint(self) -> None:
        """Copy the SQLite write-ahead log into the database file (without blocking writers);
        the service calls it about once a second from its background thread."""
        if self.dialect != "sqlite":
            return
        conn = self._sqlite_checkout()
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            self._sqlite_checkin(conn)

    def close(self) -> None:
        """Close every idle connection this store holds."""
        if self.dialect == "sqlite":
            with self._lock:
                for conn in self._idle:
                    conn.close()
                self._idle.clear()
        else:
            self._pool.closeall()

    # -- schema -----------------------------------------------------------------------------
    def schema_version(self) -> int:
        """The number of the last migration applied (0 on an empty database)."""
        with self.transaction() as tx:
            if not tx.table_exists("schema_version"):
                return 0
            row = tx.one("SELECT version FROM schema_version")
            return int(row[0]) if row else 0

    def migrate(self) -> list[int]:
        """Create or upgrade the schema; returns the versions applied now (empty if none)."""
        applied: list[int] = []
        with self.transaction() as tx:
            if not tx.table_exists("schema_version"):
                tx.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
                tx.execute("INSERT INTO schema_version (version) VALUES (0)")
        for migration in MIGRATIONS:
            with self.transaction() as tx:
                if self.dialect == "postgresql":
                    # Two service processes starting together must not both migrate.
                    tx.execute("LOCK TABLE schema_version IN EXCLUSIVE MODE")
                current = int(tx.one("SELECT version FROM schema_version")[0])
                if current >= migration.version:
                    continue
                for statement in migration.statements:
                    tx.execute(self._ddl(statement))
                tx.execute("UPDATE schema_version SET version = ?", (migration.version,))
                applied.append(migration.version)
        return applied

    def _ddl(self, statement: str) -> str:
        if self.dialect == "sqlite":
            return statement.format(serial="INTEGER PRIMARY KEY AUTOINCREMENT", real="REAL")
        return statement.format(serial="BIGSERIAL PRIMARY KEY", real="DOUBLE PRECISION")


class Transaction:
    """A cursor inside one transaction, with ``?`` placeholders in both dialects."""

    def __init__(self, cursor: Any, dialect: str) -> None:
        self.cursor = cursor
        self.dialect = dialect

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; returns the number of rows it changed."""
        if self.dialect == "postgresql":
            sql = sql.replace("?", "%s")
        self.cursor.execute(sql, tuple(params))
        return int(self.cursor.rowcount)

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        """First row of a query, or None."""
        self.execute(sql, params)
        row = self.cursor.fetchone()
        return tuple(row) if row is not None else None

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Every row of a query."""
        self.execute(sql, params)
        return [tuple(row) for row in self.cursor.fetchall()]

    def table_exists(self, name: str) -> bool:
        """Whether ``name`` is a table of this database."""
        if self.dialect == "sqlite":
            row = self.one("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,))
        else:
            row = self.one("SELECT to_regclass(?) IS NOT NULL", (name,))
            return bool(row and row[0])
        return row is not None

    def lock_events(self) -> None:
        """Serialise event inserts so that event ids become visible in increasing order.

        Pollers read ``id > after``; in PostgreSQL two concurrent inserts could commit out of
        id order and a poller would skip the lower one for ever. SQLite has one writer anyway.
        """
        if self.dialect == "postgresql":
            self.execute("SELECT pg_advisory_xact_lock(7707)")


def _sqlite_path(database_url: str) -> str:
    if database_url.startswith("sqlite:///"):
        path = database_url[len("sqlite:///") :]
    elif database_url.startswith("sqlite://"):
        path = database_url[len("sqlite://") :]
    else:
        path = database_url
    if not path:
        raise ValueError("The SQLite URL names no file")
    if path != ":memory:":
        Path(path).expanduser().parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _make_private(path: str) -> None:
    """Create the SQLite database file if missing, readable and writable by its owner only,
    and take every access but the owner's away from it and the files SQLite keeps beside it.

    ``os.open`` with mode 0600 needs no change of the process's umask (which would race with
    other threads creating files): a umask can only remove permissions from that mode.
    """
    if path == ":memory:" or path.startswith("file:"):
        return
    name = path
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        for name in (path, *(path + suffix for suffix in SQLITE_COMPANIONS)):
            try:
                mode = os.stat(name).st_mode
            except FileNotFoundError:
                continue
            if mode & 0o077:
                os.chmod(name, 0o600)
    except PermissionError as exc:
        raise RuntimeError(
            f"Cannot open {name} readable by its owner only (mode 0600): {exc.strerror}"
        ) from None
