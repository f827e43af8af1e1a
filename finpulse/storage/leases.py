"""Named leases: one process at a time does an exclusive job, across hosts and restarts.

A lease is a row of ``leases`` (name, holder, until when). ``acquire_lease`` takes it when
it is free, lapsed or already this holder's; ``renew_lease`` moves its end while the job
works; ``release_lease`` frees it. Every change is one conditional statement, so two
processes racing for a lease cannot both win (PostgreSQL re-checks the condition on the
row it waited for; SQLite runs writes one at a time). A process that dies without
releasing frees the lease when it lapses. Times are the database clients' clocks: keep
them in sync (NTP) to well within a lease's term.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import timedelta

import sqlalchemy as sa

from finpulse.errors import LeaseHeld
from finpulse.storage import tables as t
from finpulse.storage.database import Storage, utcnow


def new_holder() -> str:
    """A holder name unique to this process and call: host, process id, random part."""
    return f"{socket.gethostname()[:150]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def acquire_lease(storage: Storage, name: str, holder: str, term: timedelta) -> None:
    """Take the lease ``name`` for ``term`` unless another holder has it.

    Args:
        storage: the database.
        name: the job (``retrain``).
        holder: this process (``new_holder()``).
        term: how long the lease holds unless renewed.

    Raises:
        LeaseHeld: another holder has it and it has not lapsed.
        StorageError: the database refused or is unreachable.
    """
    now = utcnow()
    lease = t.leases
    values = {"holder": holder, "acquired_at": now, "expires_at": now + term}
    with storage.begin() as conn:
        taken = conn.execute(
            sa.update(lease)
            .where(lease.c.name == name,
                   sa.or_(lease.c.expires_at <= now, lease.c.holder == holder))
            .values(**values)
        ).rowcount
        if taken:
            return
        inserted = conn.execute(
            storage.insert(lease).values(name=name, **values)
            .on_conflict_do_nothing().returning(lease.c.name)
        ).first()
        if inserted is not None:
            return
        current = conn.execute(
            sa.select(lease.c.holder, lease.c.expires_at).where(lease.c.name == name)
        ).one()
    raise LeaseHeld(f"{name}: held by {current.holder} until {current.expires_at:%Y-%m-%d %H:%M:%S} UTC",
                    name=name, holder=current.holder, expires_at=current.expires_at)


def renew_lease(storage: Storage, name: str, holder: str, term: timedelta) -> bool:
    """Extend this holder's lease to ``term`` from now.

    Returns:
        False when the holder no longer has it (it lapsed and another holder took it).

    Raises:
        StorageError: the database refused or is unreachable.
    """
    lease = t.leases
    with storage.begin() as conn:
        return bool(conn.execute(
            sa.update(lease).where(lease.c.name == name, lease.c.holder == holder)
            .values(expires_at=utcnow() + term)
        ).rowcount)


def release_lease(storage: Storage, name: str, holder: str) -> None:
    """Free this holder's lease (nothing happens when it holds none).

    Raises:
        StorageError: the database refused or is unreachable.
    """
    lease = t.leases
    with storage.begin() as conn:
        conn.execute(sa.delete(lease).where(lease.c.name == name, lease.c.holder == holder))
