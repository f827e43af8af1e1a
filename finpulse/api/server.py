"""Running the API under uvicorn: in the foreground (``finpulse api``) or in a thread (demo)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn

from finpulse.errors import ConfigError


class _Server(uvicorn.Server):
    """uvicorn's server, shutting down gracefully on SIGTERM/SIGINT and then exiting 0.

    uvicorn re-raises the captured signal after its graceful shutdown (so the process
    dies of it); finpulse services exit 0 after a requested stop (DESIGN.md), so the
    signal is only recorded here.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        signals = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


class ApiServer:
    """A uvicorn server for an ASGI app.

    Args:
        app: the application.
        host: the address to bind.
        port: the port; 0 picks a free one (see ``port`` once started).
        log_level: uvicorn's log level.
    """

    def __init__(self, app: Any, host: str, port: int, log_level: str = "warning") -> None:
        config = uvicorn.Config(app, host=host, port=port, log_level=log_level.lower(),
                                access_log=False, lifespan="off")
        self.server = _Server(config)
        self.host = host
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on (after start)."""
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def run(self) -> None:
        """Serve in this thread until SIGTERM/SIGINT (uvicorn's handlers); returns on exit.

        Raises:
            ConfigError: the address cannot be bound.
        """
        self.server.run()
        if not self.server.started:
            raise ConfigError(f"cannot serve the API on {self.host}:{self.server.config.port}",
                              field="api.port")

    def start(self, timeout_s: float = 30.0) -> None:
        """Serve from a daemon thread; returns once it accepts connections.

        Raises:
            ConfigError: it did not start (e.g. the port is taken).
        """
        self._thread = threading.Thread(target=self.server.run, name="api", daemon=True)
        self._thread.start()
        ready = threading.Event()
        for _ in range(int(timeout_s / 0.02)):
            if self.server.started or not self._thread.is_alive():
                break
            ready.wait(0.02)
        if not self.server.started:
            raise ConfigError(f"cannot serve the API on {self.host}:{self.server.config.port}",
                              field="api.port")

    def stop(self) -> None:
        """Ask the server to exit and wait for it."""
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
