"""The history API (``finpulse api``): FastAPI over the shared storage.

``create_app(storage, settings, metrics)`` builds the application; ``server.ApiServer``
runs it under uvicorn (in the foreground for ``finpulse api``, in a thread for the demo).
``create_app`` is imported on first use, so that the commands that only share the API's
parameter parsing (``finpulse scorer``, ``finpulse query``, ...) start without FastAPI.
"""

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from finpulse.api.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
