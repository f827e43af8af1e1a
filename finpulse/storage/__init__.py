"""The database every stage shares: tables, migrations, the ``Storage`` class, the model registry.

``finpulse.storage.database`` holds ``Storage`` (idempotent writes and the queries rules,
the CLI and the API need); ``finpulse.storage.tables`` the SQLAlchemy tables the Alembic
migrations in ``migrations/`` follow; ``finpulse.storage.registry`` the model versions.
"""

from finpulse.storage.database import Storage, normalize_url, utcnow

__all__ = ["Storage", "normalize_url", "utcnow"]
