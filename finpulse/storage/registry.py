"""The model registry: which trained model versions exist and which one scores the stream.

At most one version is the ``champion`` (the scorers load it); newly trained versions
are ``challenger``s until promoted; a champion that is replaced becomes ``retired``.
``rollback`` re-instates the most recently superseded champion, and the version rolled
back from is marked so a second rollback steps further back instead of toggling.

At most one version other than the champion is flagged ``shadow``: the scorers run it beside
the champion on the live stream and store its scores apart (``scores.role = 'shadow'``), so a
promotion can be judged on live data first. Promoting the shadow version clears its flag.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from finpulse.errors import ConfigError
from finpulse.storage import Storage, utcnow
from finpulse.storage import tables as t

logger = logging.getLogger(__name__)

ModelStatus = Literal["champion", "challenger", "retired"]
STATUSES: tuple[ModelStatus, ...] = ("champion", "challenger", "retired")


@dataclass(frozen=True)
class ModelVersion:
    """One registered model version."""

    version: str
    created_at: datetime
    base: str
    method: str
    metrics: dict[str, Any] = field(hash=False)
    artifact_path: str
    status: ModelStatus
    trainable_params: int | None = None
    promoted_at: datetime | None = None
    retired_at: datetime | None = None
    retired_reason: str | None = None
    shadow: bool = False


def _record(row: Any) -> ModelVersion:
    return ModelVersion(
        version=row["version"],
        created_at=row["created_at"],
        base=row["base"],
        method=row["method"],
        metrics=dict(row["metrics"]),
        artifact_path=row["artifact_path"],
        status=row["status"],
        trainable_params=row["trainable_params"],
        promoted_at=row["promoted_at"],
        retired_at=row["retired_at"],
        retired_reason=row["retired_reason"],
        shadow=bool(row["shadow"]),
    )


class ModelRegistry:
    """Model versions in the ``model_versions`` table.

    Args:
        storage: the database (migrated).
    """

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def register(
        self,
        version: str,
        *,
        base: str,
        method: str,
        metrics: dict[str, Any],
        artifact_path: str,
        trainable_params: int | None = None,
        status: str = "challenger",
    ) -> None:
        """Record a trained version; registering the same version again changes nothing.

        Args:
            version: the unique version string the scorer stamps on every score.
            base: the base encoder (directory or hub id).
            method: how it was trained (``lora``, ``full``, ...).
            metrics: evaluation metrics (JSON-serialisable).
            artifact_path: where the trained artifact lives.
            trainable_params: parameters updated in training, when known.
            status: ``challenger`` (default) or ``champion`` (promotes it at once).

        Raises:
            ConfigError: an empty version or an unknown status.
            StorageError: the database refused.
        """
        if not version:
            raise ConfigError("version: must not be empty", field="version")
        if status not in ("champion", "challenger"):
            raise ConfigError(
                f"status: must be 'champion' or 'challenger', not {status!r}", field="status"
            )
        row = {
            "version": version,
            "created_at": utcnow(),
            "base": base,
            "method": method,
            "metrics": metrics,
            "artifact_path": artifact_path,
            "trainable_params": trainable_params,
            "status": "challenger",
        }
        with self.storage.begin() as conn:
            stmt = (
                self.storage.insert(t.model_versions)
                .values(row)
                .on_conflict_do_nothing()
                .returning(t.model_versions.c.version)
            )
            inserted = conn.execute(stmt).first() is not None
        if inserted:
            logger.info("registered model version %s (%s, %s)", version, base, method)
        if inserted and status == "champion":
            self.promote(version)

    def list(self) -> list[ModelVersion]:
        """All versions, oldest first."""
        mv = t.model_versions
        with self.storage.begin() as conn:
            rows = conn.execute(sa.select(mv).order_by(mv.c.created_at, mv.c.version)).mappings()
            return [_record(row) for row in rows]

    def get(self, version: str) -> ModelVersion:
        """One version.

        Raises:
            ConfigError: no such version.
        """
        with self.storage.begin() as conn:
            return _record(self._row(conn, version))

    def champion(self) -> ModelVersion | None:
        """The version the scorers should load, if any."""
        mv = t.model_versions
        with self.storage.begin() as conn:
            row = conn.execute(sa.select(mv).where(mv.c.status == "champion")).mappings().first()
            return _record(row) if row is not None else None

    def shadow(self) -> ModelVersion | None:
        """The version the scorers run in shadow beside the champion, if any."""
        mv = t.model_versions
        with self.storage.begin() as conn:
            row = conn.execute(sa.select(mv).where(mv.c.shadow.is_(True))).mappings().first()
            return _record(row) if row is not None else None

    def set_shadow(self, version: str | None) -> str | None:
        """Run ``version`` in shadow (replacing any other), or stop shadowing (None).

        Returns:
            The version that was in shadow before, if any.

        Raises:
            ConfigError: unknown version, or it is the champion (it already scores live).
            StorageError: the database refused.
        """
        mv = t.model_versions
        with self.storage.begin() as conn:
            if version is not None:
                row = self._row(conn, version)
                if row["status"] == "champion":
                    raise ConfigError(f"{version} is the champion: it already scores the "
                                      "stream live", field="version")
            previous = conn.execute(
                sa.select(mv.c.version).where(mv.c.shadow.is_(True)).with_for_update()
            ).scalar_one_or_none()
            conn.execute(sa.update(mv).where(mv.c.shadow.is_(True)).values(shadow=False))
            if version is not None:
                self._set(conn, version, shadow=True)
        logger.info("shadow model: %s -> %s", previous, version)
        return previous

    def _row(self, conn: sa.Connection, version: str) -> Any:
        mv = t.model_versions
        row = conn.execute(sa.select(mv).where(mv.c.version == version)).mappings().first()
        if row is None:
            raise ConfigError(f"unknown model version {version!r}", field="version")
        return row

    def _set(self, conn: sa.Connection, version: str, **values: Any) -> None:
        mv = t.model_versions
        conn.execute(sa.update(mv).where(mv.c.version == version).values(**values))

    def _demote_champion(self, conn: sa.Connection, reason: str, now: datetime) -> str | None:
        mv = t.model_versions
        current = conn.execute(
            sa.select(mv.c.version).where(mv.c.status == "champion").with_for_update()
        ).scalar_one_or_none()
        if current is not None:
            self._set(conn, current, status="retired", retired_at=now, retired_reason=reason)
        return current

    def promote(self, version: str) -> None:
        """Make ``version`` the champion; the previous champion is retired (superseded).

        Raises:
            ConfigError: unknown version.
            StorageError: the database refused.
        """
        now = utcnow()
        with self.storage.begin() as conn:
            row = self._row(conn, version)
            if row["status"] == "champion":
                return
            previous = self._demote_champion(conn, "superseded", now)
            self._set(
                conn,
                version,
                status="champion",
                promoted_at=now,
                retired_at=None,
                retired_reason=None,
                shadow=False,
            )
        logger.info("promoted model version %s (was champion: %s)", version, previous)

    def rollback(self) -> ModelVersion:
        """Re-instate the most recently superseded champion; the current champion is retired.

        Returns:
            The version that is champion now.

        Raises:
            ConfigError: no earlier champion to go back to.
            StorageError: the database refused.
        """
        mv = t.model_versions
        now = utcnow()
        with self.storage.begin() as conn:
            target = conn.execute(
                sa.select(mv.c.version)
                .where(
                    mv.c.status == "retired",
                    mv.c.retired_reason == "superseded",
                    mv.c.promoted_at.is_not(None),
                )
                .order_by(mv.c.retired_at.desc(), mv.c.promoted_at.desc())
                .limit(1)
            ).scalar_one_or_none()
            if target is None:
                raise ConfigError("no earlier champion to roll back to", field="version")
            previous = self._demote_champion(conn, "rolled_back", now)
            self._set(
                conn,
                target,
                status="champion",
                promoted_at=now,
                retired_at=None,
                retired_reason=None,
                shadow=False,
            )
            row = self._row(conn, target)
        logger.info("rolled back model champion %s -> %s", previous, target)
        return _record(row)
