"""Alembic environment: runs on the connection ``finpulse.storage.Storage.migrate`` passes in.

There is no alembic.ini: migrations are driven programmatically, so the URL, the
engine settings and the lock around the upgrade all come from ``Storage``.
"""

from __future__ import annotations

from alembic import context

from finpulse.storage.tables import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things in place; batch mode copies the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
