"""Tables of the endpoints domain. Only ``serving.service`` (and its base class in
``serving.supervisor``) queries them.

``endpoints`` holds what a user asked for (``spec``: the variants by model URI, shadow, capture,
batching, scaling, as JSON), what it resolved to (``config``: the runtime's config file, with
each URI pinned to a version and a local folder), and what runs now (port, pid, the supervisor
that holds it). Every create, update and rollback appends a row to ``endpoint_deployments``, so
a rollback can go back to any earlier deployment. ``endpoint_events`` records what happened to
the process (started, exited, restarted, failed), newest last.

An endpoint's process is watched by one supervisor at a time: ``owner`` names it and
``lease_expires_at`` says until when; a supervisor whose lease ran out (its process ended) is
replaced by the next one that looks, which adopts the process if it still answers.
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

endpoints = Table(
    "endpoints",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("project_id", String(16), ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(64), nullable=False),
    # Creating | InService | Updating | Failed | Deleting | Stopped
    Column("status", String(16), nullable=False),
    Column("spec", Text, nullable=False),
    Column("config", Text, nullable=True),
    # The deployment number now served (endpoint_deployments.number).
    Column("deployment", Integer, nullable=False, default=0),
    Column("host", String(255), nullable=False, default="127.0.0.1"),
    Column("port", Integer, nullable=True),
    Column("pid", Integer, nullable=True),
    Column("node", String(255), nullable=True),  # the machine the process runs on
    Column("owner", String(64), nullable=True),
    Column("lease_expires_at", BigInteger, nullable=True),
    Column("restarts", Integer, nullable=False, default=0),
    Column("last_error", Text, nullable=True),
    Column("created_by", String(64), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    UniqueConstraint("project_id", "name"),
)

endpoint_deployments = Table(
    "endpoint_deployments",
    metadata,
    Column("id", String(16), primary_key=True),
    Column(
        "endpoint_id", String(16), ForeignKey("endpoints.id", ondelete="CASCADE"), nullable=False
    ),
    Column("number", Integer, nullable=False),
    # create | update | rollback
    Column("reason", String(16), nullable=False),
    Column("spec", Text, nullable=False),
    Column("config", Text, nullable=False),
    Column("created_by", String(64), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    UniqueConstraint("endpoint_id", "number"),
)

endpoint_events = Table(
    "endpoint_events",
    metadata,
    Column("id", String(16), primary_key=True),
    Column(
        "endpoint_id", String(16), ForeignKey("endpoints.id", ondelete="CASCADE"), nullable=False
    ),
    # started | ready | exited | restarted | failed | stopped | reloaded | adopted
    Column("kind", String(16), nullable=False),
    Column("message", Text, nullable=False, default=""),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)
Index("ix_endpoint_events_endpoint", endpoint_events.c.endpoint_id, endpoint_events.c.created_at)
