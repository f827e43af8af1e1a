"""The exceptions finpulse raises on purpose.

Every error a user can cause or fix is a ``FinpulseError``; the CLI prints it as
``Type: message`` and exits 1. Anything else is a bug and keeps its traceback.

    FinpulseError
    ├── ConfigError              bad settings, arguments or hyperparameters
    ├── IngestError              reading from or writing to the broker
    │   └── MalformedMessage     one message that cannot become a Post (also a ValueError)
    ├── ModelError               a model that cannot be trained, loaded or evaluated
    │   └── DataError            a training/evaluation file that is missing or malformed
    ├── StorageError             the database refused or is unreachable
    ├── LeaseError               an exclusive job's lease (e.g. a retraining run's) was lost
    │   └── LeaseHeld            another process holds it
    └── AlertDeliveryError       a notifier could not deliver an alert
"""

from __future__ import annotations

from datetime import datetime


class FinpulseError(Exception):
    """Base class of every error finpulse raises on purpose."""


class ConfigError(FinpulseError):
    """Settings, CLI arguments or hyperparameters are invalid.

    Attributes:
        field: the name of the offending setting, when there is one.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class IngestError(FinpulseError):
    """The broker could not be reached, or a publish/commit failed.

    Attributes:
        transient: True when retrying may succeed (broker unreachable, a timeout); False
            when it cannot (e.g. an offset commit refused because a rebalance moved the
            partitions to another consumer).
    """

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


class MalformedMessage(IngestError, ValueError):
    """A raw message that cannot be decoded or validated into a ``Post``.

    Attributes:
        reason: a short machine-readable reason (``not_utf8``, ``not_json``,
            ``invalid``, ``empty_text``, ``oversized``, ``bad_timestamp``, ...; the list
            is in docs/metrics.md), ``internal`` for an unexpected exception.
        detail: a human-readable explanation.
        topic, partition, offset: where the message came from, when known.
    """

    def __init__(
        self,
        reason: str,
        detail: str,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        super().__init__(f"{reason}: {detail}", transient=False)
        self.reason = reason
        self.detail = detail
        self.topic = topic
        self.partition = partition
        self.offset = offset

    @classmethod
    def internal(cls, exc: BaseException) -> MalformedMessage:
        """The DLQ entry for an unexpected exception while handling one message."""
        text = str(exc).strip()
        detail = f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
        return cls("internal", detail[:500])


class ModelError(FinpulseError):
    """A model artifact is missing, corrupt or mismatched, or training failed."""


class DataError(ModelError):
    """A training or evaluation data file is missing or malformed."""


class StorageError(FinpulseError):
    """The database refused an operation or cannot be reached.

    Attributes:
        transient: True when the database could not be reached or timed out (retry
            later); False when it refused the statement or its data (retrying the same
            rows will fail again).
    """

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


class LeaseError(FinpulseError):
    """An exclusive job's lease (``finpulse.storage.leases``) could not be kept.

    Attributes:
        name: the lease (``retrain``).
    """

    def __init__(self, message: str, *, name: str) -> None:
        super().__init__(message)
        self.name = name


class LeaseHeld(LeaseError):
    """Another process holds the lease, so the job must not start here now.

    Attributes:
        holder: who holds it (host, process id and a random part).
        expires_at: when it lapses unless renewed (timezone-aware).
    """

    def __init__(self, message: str, *, name: str, holder: str, expires_at: datetime) -> None:
        super().__init__(message, name=name)
        self.holder = holder
        self.expires_at = expires_at


class AlertDeliveryError(FinpulseError):
    """A notifier could not deliver an alert.

    Attributes:
        retry_after: seconds to wait before retrying, when the target said so.
        permanent: the target refused the delivery itself (e.g. HTTP 400, 404, 410):
            retrying the same delivery cannot succeed.
    """

    def __init__(
        self, message: str, *, retry_after: float | None = None, permanent: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.permanent = permanent
