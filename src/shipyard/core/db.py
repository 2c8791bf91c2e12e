"""The metadata database: one engine per ``Database``, one transaction scope, one migration tree.

SQLite (the embedded default) runs in WAL mode with a long busy timeout, and every write
transaction starts with ``BEGIN IMMEDIATE``: a deferred transaction that later needs the write
lock cannot wait for it (SQLite answers "database is locked" at once to avoid a deadlock), while
an immediate one queues behind the current writer for up to the busy timeout. That is what lets
two processes log to one file at the same moment without either seeing "database is locked".
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, MetaData, Table, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError

from shipyard.core.errors import SchemaBehind, Unavailable
from shipyard.core.sockets import readable_now

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_REVISION_LINE = re.compile(r'^(revision|down_revision)\s*=\s*(?:"([^"]*)"|None)', re.MULTILINE)
_SQLITE_BUSY_TIMEOUT_S = 60.0


def normalize_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` and pick the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def dialect_insert(conn: Connection, table: Table) -> Any:
    """An INSERT that speaks the connection's ON CONFLICT (SQLite and PostgreSQL both have it)."""
    from sqlalchemy.dialects import postgresql, sqlite

    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(table)


def _set_wal(cur: Any) -> None:
    """``PRAGMA journal_mode=WAL``, waiting out another process that holds the file while it
    creates the store: SQLite answers that pragma "database is locked" at once, without its
    busy handler, when a new store is being set up by someone else."""
    import sqlite3

    deadline = time.monotonic() + _SQLITE_BUSY_TIMEOUT_S
    delay = 0.01
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.25)


def _is_transient(exc: DBAPIError) -> bool:
    text = str(exc.orig).lower() if exc.orig is not None else str(exc).lower()
    return any(
        s in text
        for s in (
            "database is locked",
            "could not serialize",
            "deadlock detected",
            "connection refused",
            "server closed the connection",
            "terminating connection",
        )
    )


class Database:
    """An engine plus the transaction scopes every service uses. Build one per process."""

    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        self._analyzed_at = float("-inf")
        self.engine = self._make_engine()
        # This thread's transaction that its writes join (``together``), and what waits for it.
        self._joined = threading.local()

    def _make_engine(self) -> Engine:
        if self.is_sqlite:
            path = self.url.split("sqlite:///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(
                self.url,
                connect_args={"timeout": _SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
                pool_size=8,
                max_overflow=16,
            )

            @event.listens_for(engine, "connect")
            def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
                # Take over transaction control from the driver so BEGIN IMMEDIATE is ours.
                dbapi_conn.isolation_level = None
                cur = dbapi_conn.cursor()
                _set_wal(cur)
                # FULL: an acknowledged commit survives power loss, not only a crash.
                cur.execute("PRAGMA synchronous=FULL")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute(f"PRAGMA busy_timeout={int(_SQLITE_BUSY_TIMEOUT_S * 1000)}")
                cur.close()

            @event.listens_for(engine, "begin")
            def _on_begin(conn: Connection) -> None:
                write = conn.get_execution_options().get("shipyard_write", False)
                conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

            return engine
        engine = create_engine(self.url, pool_size=10, max_overflow=20)

        @event.listens_for(engine, "checkout")
        def _check_alive(dbapi_conn, _record, _proxy) -> None:  # type: ignore[no-untyped-def]
            # What pool_pre_ping is for (a pooled connection that PostgreSQL closed: a restart,
            # an idle timeout, pg_terminate_backend), without its round trip on every checkout:
            # an idle connection has nothing to read unless the server closed it (or sent it an
            # unasked-for notice), so a readable socket is replaced and a quiet one is used.
            if dbapi_conn.closed or readable_now(dbapi_conn.fileno()):
                raise DisconnectionError("the server closed this pooled connection")

        return engine

    @contextmanager
    def write(self, retries: int = 5, *, one_statement: bool = False) -> Iterator[Connection]:
        """A write transaction: commits on success, rolls back on error.

        A transient failure (locked, serialization, connection dropped) at BEGIN is retried; one
        after that surfaces as ``Unavailable`` (retryable by the caller), never as a driver error.

        ``one_statement``: the caller writes with a single statement (reads may follow it). On
        PostgreSQL that statement then commits by itself, durable when it returns: one round trip
        instead of three (BEGIN, the statement, COMMIT). SQLite runs the usual transaction.
        """
        outer: Connection | None = getattr(self._joined, "conn", None)
        if outer is not None:
            # Inside ``together``: a savepoint of its transaction, so that a failure here
            # undoes this block alone, as it would have undone this block's own transaction.
            savepoint = outer.begin_nested()
            try:
                yield outer
                savepoint.commit()
            except BaseException:
                if savepoint.is_active:
                    savepoint.rollback()
                raise
            return
        delay = 0.05
        for attempt in range(retries + 1):
            conn = None
            try:
                conn = self.engine.connect().execution_options(shipyard_write=True)
                if one_statement and not self.is_sqlite:
                    conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                conn.begin()
            except (OperationalError, DBAPIError) as exc:
                if conn is not None:
                    conn.close()  # back to the pool: a failed BEGIN must not leak it
                if attempt < retries and _is_transient(exc):
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                raise Unavailable(f"metadata store unavailable: {exc.orig or exc}") from exc
            break
        assert conn is not None
        try:
            yield conn
            conn.commit()
        except (OperationalError, DBAPIError) as exc:
            conn.rollback()
            if _is_transient(exc):
                raise Unavailable(f"metadata store unavailable: {exc.orig or exc}") from exc
            raise
        except BaseException:
            conn.rollback()
            raise
        finally:
            conn.close()

    @contextmanager
    def together(self) -> Iterator[None]:
        """Join the write transactions this thread opens inside the block (each ``write``, in
        whichever service) into one, committed at its end: one durable commit instead of one
        each, and all of them or none. A ``write`` that fails inside undoes only its own part
        (a savepoint). Reads inside do not see what the block wrote until it commits; what
        must wait for the commit (telling others a job ended, say) goes to ``after_commit``.
        Nested: the outermost block commits."""
        if getattr(self._joined, "conn", None) is not None:
            yield
            return
        hooks: list[Callable[[], object]] = []
        with self.write() as conn:
            self._joined.conn, self._joined.hooks = conn, hooks
            try:
                yield
            finally:
                self._joined.conn = self._joined.hooks = None
        for fn in hooks:
            fn()

    def after_commit(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` once this thread's ``together`` block has committed (dropped if it rolls
        back); at once outside one."""
        hooks = getattr(self._joined, "hooks", None)
        if hooks is None:
            fn()
        else:
            hooks.append(fn)

    def refresh_statistics(self, every_s: float = 600.0) -> None:
        """Keep SQLite's planner statistics fresh, cheaply, at most every ``every_s`` seconds.

        Without statistics SQLite picks poor join orders for searches scoped to one experiment
        (about 200 ms instead of 25 ms at 100,000 runs). ``analysis_limit`` bounds the rows
        ANALYZE reads per index, so this costs milliseconds. PostgreSQL's autovacuum does this.
        """
        if not self.is_sqlite:
            return
        now = time.monotonic()
        if now - self._analyzed_at < every_s:
            return
        self._analyzed_at = now
        with self.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA analysis_limit=1000")
            conn.exec_driver_sql("ANALYZE")

    @contextmanager
    def read(self) -> Iterator[Connection]:
        try:
            conn = self.engine.connect()
        except (OperationalError, DBAPIError) as exc:
            raise Unavailable(f"metadata store unavailable: {exc.orig or exc}") from exc
        try:
            with conn.begin():
                yield conn
        finally:
            conn.close()

    # -- migrations ---------------------------------------------------------------------------

    def _alembic_config(self):  # type: ignore[no-untyped-def]
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        # A write transaction (BEGIN IMMEDIATE on SQLite): two processes opening a fresh store at
        # once then take turns, and the second finds the schema made, instead of failing with
        # "database is locked" when its deferred transaction tries to write.
        cfg.attributes["engine"] = self.engine.execution_options(shipyard_write=True)
        return cfg

    def head_revision(self) -> str | None:
        """The newest migration. Read from the version files' ``revision = ...`` lines: every
        process that opens the store asks, and importing Alembic costs most of a second."""
        revisions: set[str] = set()
        parents: set[str] = set()
        for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
            found = {m[1]: m[2] for m in _REVISION_LINE.finditer(path.read_text("utf-8"))}
            if found.get("revision"):
                revisions.add(found["revision"])
            if found.get("down_revision"):
                parents.add(found["down_revision"])
        heads = revisions - parents
        if len(heads) == 1:
            return heads.pop()
        from alembic.script import ScriptDirectory  # branches, or a shape the lines can't tell

        return ScriptDirectory.from_config(self._alembic_config()).get_current_head()

    def current_revision(self) -> str | None:
        """The store's migration (None for an empty store), read straight from Alembic's table."""
        with self.engine.connect() as conn:
            try:
                rows = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
            except DBAPIError:  # no such table: nothing was ever migrated here
                return None
        if len(rows) > 1:
            from alembic.runtime.migration import MigrationContext

            with self.engine.connect() as conn:
                return MigrationContext.configure(conn).get_current_revision()
        return str(rows[0][0]) if rows else None

    def upgrade(self, *, apart: bool = False) -> None:
        """Migrate the store to the head revision. ``apart``: in a child process, so that this
        one (a long-lived server) does not keep Alembic and the migration scripts in its
        memory for the rest of its life (about 11 MiB)."""
        if not apart:
            from alembic import command

            command.upgrade(self._alembic_config(), "head")
            return
        import subprocess
        import sys

        # The URL (which may hold a password) goes by the environment, not the command line.
        env = {**os.environ, _UPGRADE_URL_ENV: self.url}
        proc = subprocess.run(
            [sys.executable, "-m", "shipyard.core.db"], env=env, capture_output=True, text=True
        )
        if proc.returncode != 0:
            # The exception's own line (a driver's error ends with a line of links).
            lines = [ln for ln in proc.stderr.splitlines() if re.match(r"[\w.]+: ", ln)]
            raise Unavailable(
                "migrating the metadata database failed: "
                + (lines[-1] if lines else f"exit status {proc.returncode}"),
                {"stderr": proc.stderr[-4000:]},
            )

    def ensure_schema(self, auto_migrate: bool, *, apart: bool = False) -> None:
        """Upgrade when allowed (``apart``: see ``upgrade``); otherwise refuse a schema that is
        behind with a clear message."""
        current, head = self.current_revision(), self.head_revision()
        if current == head:
            return
        if auto_migrate:
            self.upgrade(apart=apart)
            return
        raise SchemaBehind(
            f"the metadata database is at revision {current or 'empty'}, the code needs {head}: "
            "run `shipyard db upgrade`",
            {"current": current, "head": head},
        )

    def dispose(self) -> None:
        self.engine.dispose()


_UPGRADE_URL_ENV = "SHIPYARD_UPGRADE_DATABASE_URL"

if __name__ == "__main__":  # ``Database.upgrade(apart=True)``'s child
    Database(os.environ[_UPGRADE_URL_ENV]).upgrade()
