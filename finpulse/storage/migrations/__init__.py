"""Alembic migrations for finpulse's database; run them with ``Storage.migrate()``."""
