"""Tables of the model registry. Only ``models.service`` queries them.

A version's files are listed with their sha256 (``model_version_files``): the bytes live in the
content-addressed artifact store, so a version can be materialized without its source run, and
the tracking purge keeps any blob a version still lists. Lineage beyond the source run (the
run's dataset inputs) is read through ``TrackingService``, never from its tables.
Times are integer milliseconds since the epoch, UTC.
"""

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from shipyard.core.db import metadata

registered_models = Table(
    "registered_models",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("project_id", String(16), ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(256), nullable=False),
    Column("description", Text, nullable=False, default=""),
    # The last version number handed out: numbers are never reused, even after a delete.
    Column("last_version", Integer, nullable=False, default=0),
    Column("created_by", String(64), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    UniqueConstraint("project_id", "name"),
)

model_versions = Table(
    "model_versions",
    metadata,
    Column("id", String(16), primary_key=True),
    Column(
        "model_id",
        String(16),
        ForeignKey("registered_models.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("version", Integer, nullable=False),
    Column("source_uri", Text, nullable=False),
    Column("source_run_id", String(16), nullable=True),
    Column("source_path", String(1024), nullable=True),
    # sha256 of the model folder's manifest, which lists every file's sha256.
    Column("digest", String(64), nullable=False),
    Column("size", BigInteger, nullable=False, default=0),
    Column("flavor", String(32), nullable=False),
    Column("signature", Text, nullable=False, default=""),  # JSON
    Column("approval_status", String(16), nullable=False, default="pending"),
    Column("description", Text, nullable=False, default=""),
    Column("created_by", String(64), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    UniqueConstraint("model_id", "version"),
)
Index("ix_model_versions_run", model_versions.c.source_run_id)

model_version_files = Table(
    "model_version_files",
    metadata,
    Column(
        "version_id",
        String(16),
        ForeignKey("model_versions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("path", String(1024), primary_key=True),
    Column("digest", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
)
Index("ix_model_version_files_digest", model_version_files.c.digest)

model_tags = Table(
    "model_tags",
    metadata,
    Column(
        "model_id",
        String(16),
        ForeignKey("registered_models.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("key", String(250), primary_key=True),
    Column("value", Text, nullable=False),
)

model_version_tags = Table(
    "model_version_tags",
    metadata,
    Column(
        "version_id",
        String(16),
        ForeignKey("model_versions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("key", String(250), primary_key=True),
    Column("value", Text, nullable=False),
)

model_aliases = Table(
    "model_aliases",
    metadata,
    Column(
        "model_id",
        String(16),
        ForeignKey("registered_models.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("alias", String(64), primary_key=True),
    Column(
        "version_id",
        String(16),
        ForeignKey("model_versions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("updated_by", String(64), nullable=True),
    Column("updated_at", BigInteger, nullable=False),
)
Index("ix_model_aliases_version", model_aliases.c.version_id)

# Every approval status a version has had, with who set it and when (the first is "pending").
model_approvals = Table(
    "model_approvals",
    metadata,
    Column("id", String(16), primary_key=True),
    Column(
        "version_id",
        String(16),
        ForeignKey("model_versions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("status", String(16), nullable=False),
    Column("actor", String(64), nullable=True),
    Column("comment", Text, nullable=False, default=""),
    Column("created_at", BigInteger, nullable=False),
)
Index("ix_model_approvals_version", model_approvals.c.version_id, model_approvals.c.created_at)
