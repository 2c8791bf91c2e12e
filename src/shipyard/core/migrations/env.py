"""Alembic environment: one migration tree for SQLite and PostgreSQL."""

from alembic import context

import shipyard.inference.tables  # noqa: F401
import shipyard.jobs.tables  # noqa: F401
import shipyard.models.tables  # noqa: F401
import shipyard.projects.tables  # noqa: F401  (registers tables on the shared metadata)
import shipyard.serving.tables  # noqa: F401
import shipyard.tracking.tables  # noqa: F401
import shipyard.tuning.tables  # noqa: F401
from shipyard.core.db import metadata

config = context.config
engine = config.attributes.get("engine")
if engine is None:
    from sqlalchemy import create_engine

    from shipyard.core.db import normalize_url

    engine = create_engine(normalize_url(config.get_main_option("sqlalchemy.url") or ""))

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
