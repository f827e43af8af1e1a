"""Wiring: the only place where ingest, models and monitor meet."""
