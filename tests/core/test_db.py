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
