"""The metadata store's schema: which migration it is at, and what opening a store does."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipyard.core.db import Database
from shipyard.core.errors import SchemaBehind


def test_the_head_read_from_the_version_files_is_alembics(tmp_path: Path) -> None:
    from alembic.script import ScriptDirectory

    db = Database(f"sqlite:///{tmp_path / 'a.db'}")
    alembic_head = ScriptDirectory.from_config(db._alembic_config()).get_current_head()
    assert db.head_revision() == alembic_head


def test_an_empty_store_is_refused_without_auto_migrate_and_upgraded_with_it(
    tmp_path: Path,
) -> None:
    db = Database(f"sqlite:///{tmp_path / 'b.db'}")
    assert db.current_revision() is None
    with pytest.raises(SchemaBehind) as err:
        db.ensure_schema(auto_migrate=False)
    assert "shipyard db upgrade" in err.value.message
    assert err.value.details == {"current": None, "head": db.head_revision()}
    db.ensure_schema(auto_migrate=True)
    assert db.current_revision() == db.head_revision()
    db.ensure_schema(auto_migrate=False)  # up to date: nothing to do, nothing refused


def test_a_migrated_store_reports_the_head(db_url: str) -> None:
    db = Database(db_url)
    db.ensure_schema(auto_migrate=True)
    assert db.current_revision() == db.head_revision()
    db.dispose()


def test_a_pooled_connection_the_server_ended_is_replaced(pg_url: str) -> None:
    """Pooled PostgreSQL connections are checked without a round trip: one that the server
    closed (a restart, pg_terminate_backend) is replaced at checkout, not handed out broken."""
    import psycopg

    db = Database(pg_url)
    try:
        with db.write(one_statement=True) as conn:
            conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS pool_probe (n integer)")
        with db.read() as conn:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))  # waits for it
        for attempt in range(3):  # the pool holds that one connection: every checkout meets it
            with db.write() as conn:
                conn.exec_driver_sql(f"INSERT INTO pool_probe VALUES ({attempt})")
        with db.read() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM pool_probe").scalar() == 3
            assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar() != pid
    finally:
        db.dispose()


def test_one_statement_writes_are_durable_and_roll_back_on_error(db_url: str) -> None:
    db = Database(db_url)
    try:
        with db.write(one_statement=True) as conn:
            conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS one_probe (n integer PRIMARY KEY)")
        with db.write(one_statement=True) as conn:
            conn.exec_driver_sql("INSERT INTO one_probe VALUES (1)")
        with pytest.raises(RuntimeError), db.write(one_statement=True) as conn:
            raise RuntimeError("the caller failed before writing")
        with db.read() as conn:
            assert conn.exec_driver_sql("SELECT n FROM one_probe").scalars().all() == [1]
    finally:
        db.dispose()


def test_writes_inside_together_commit_once_and_a_failed_one_undoes_only_itself(
    db_url: str,
) -> None:
    from sqlalchemy.exc import IntegrityError

    db = Database(db_url)
    ran: list[str] = []

    def rows() -> list[int]:
        with db.read() as conn:
            return conn.exec_driver_sql("SELECT n FROM together_probe ORDER BY n").scalars().all()

    try:
        with db.write() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS together_probe")
            conn.exec_driver_sql("CREATE TABLE together_probe (n integer PRIMARY KEY)")
        with db.together():
            with db.write() as conn:
                conn.exec_driver_sql("INSERT INTO together_probe VALUES (1)")
            db.after_commit(lambda: ran.append(f"after commit, seen: {rows()}"))
            # Not committed yet: another connection does not see it, nor has the hook run.
            assert rows() == [] and ran == []
            # A write that fails (a duplicate key) undoes its own part only, as it would have
            # undone its own transaction; the block goes on.
            with pytest.raises(IntegrityError), db.write(one_statement=True) as conn:
                conn.exec_driver_sql("INSERT INTO together_probe VALUES (2)")
                conn.exec_driver_sql("INSERT INTO together_probe VALUES (1)")
            with db.write() as conn, db.together():  # nested: the outermost block commits
                conn.exec_driver_sql("INSERT INTO together_probe VALUES (3)")
            assert rows() == []
        assert rows() == [1, 3]
        assert ran == ["after commit, seen: [1, 3]"]

        # A block that raises writes nothing, and what waited for its commit never runs.
        with pytest.raises(RuntimeError), db.together():
            with db.write() as conn:
                conn.exec_driver_sql("INSERT INTO together_probe VALUES (4)")
            db.after_commit(lambda: ran.append("never"))
            raise RuntimeError("the caller failed")
        assert rows() == [1, 3] and ran == ["after commit, seen: [1, 3]"]
        # Outside a block, a hook runs at once.
        db.after_commit(lambda: ran.append("now"))
        assert ran[-1] == "now"
    finally:
        db.dispose()


def test_a_migration_apart_runs_in_a_child_and_says_why_it_failed(
    tmp_path: Path, pg_url: str
) -> None:
    """What a server does with a new store: migrated by a child process, so that the server
    never loads Alembic; a failure is one clear error naming the cause."""
    import subprocess
    import sys

    from shipyard.core.errors import Unavailable

    probe = (
        "import sys; from shipyard.core.db import Database; "
        "db = Database(sys.argv[1]); db.ensure_schema(True, apart=True); "
        "print(db.current_revision() == db.head_revision(), 'alembic' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, f"sqlite:///{tmp_path / 'apart.db'}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.stdout.split() == ["True", "False"], out.stderr[-2000:]

    bad = Database("postgresql://postgres@127.0.0.1:5432/shipyard_no_such_database")
    with pytest.raises(Unavailable) as err:
        bad.upgrade(apart=True)
    assert err.value.message.startswith("migrating the metadata database failed: ")
    assert 'database "shipyard_no_such_database" does not exist' in err.value.message
    bad.dispose()
