"""The history API (``finpulse api``): FastAPI over the shared storage.

``create_app(storage, settings, metrics)`` builds the application; ``server.ApiServer``
runs it under uvicorn (in the foreground for ``finpulse api``, in a thread for the demo).
"""

from finpulse.api.app import create_app

__all__ = ["create_app"]
