"""API keys: created once, shown once, stored as a SHA-256 hash of their secret part.

A key reads ``fp_<id>_<secret>``: the id finds the row, the secret (32 random bytes)
is compared in constant time with the stored hash. Keys are random, not passwords, so a
plain SHA-256 is enough (a slow hash would only slow down every request).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from finpulse.storage import tables as t
from finpulse.storage.database import Storage, utcnow
from finpulse.storage.pages import Page, after, decode_cursor, paginate

Role = Literal["reader", "analyst", "admin"]
ROLES: tuple[str, ...] = ("reader", "analyst", "admin")
ROLE_RANK = {role: rank for rank, role in enumerate(ROLES)}


@dataclass(frozen=True)
class ApiKey:
    """An authenticated key: its id, name and role."""

    id: str
    name: str
    role: str

    def allows(self, role: str) -> bool:
        """Whether this key's role includes ``role`` (admin > analyst > reader)."""
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def create_key(storage: Storage, role: str, name: str | None = None) -> tuple[ApiKey, str]:
    """Store a new key; returns it and the full key text (the only time it is known).

    Raises:
        ValueError: an unknown role.
        StorageError: the database refused or is unreachable.
    """
    if role not in ROLES:
        raise ValueError(f"role: must be one of {', '.join(ROLES)}")
    ident = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    key = ApiKey(id=ident, name=name or f"{role}-{ident}", role=role)
    with storage.begin() as conn:
        conn.execute(
            sa.insert(t.api_keys).values(
                id=ident, name=key.name, role=role, key_hash=_hash(secret), created_at=utcnow()
            )
        )
    return key, f"fp_{ident}_{secret}"


def authenticate(storage: Storage, text: str) -> ApiKey | None:
    """The key ``text`` is, or None when it is malformed, unknown, wrong or revoked."""
    parts = text.split("_", 2)
    if len(parts) != 3 or parts[0] != "fp" or not parts[1].isalnum() or len(parts[1]) > 32:
        return None
    with storage.begin() as conn:
        row = conn.execute(
            sa.select(t.api_keys).where(t.api_keys.c.id == parts[1])
        ).mappings().first()
    if row is None or row["revoked_at"] is not None:
        return None
    if not hmac.compare_digest(row["key_hash"], _hash(parts[2])):
        return None
    return ApiKey(id=row["id"], name=row["name"], role=row["role"])


def list_keys(
    storage: Storage, *, limit: int = 100, cursor: str | None = None
) -> Page[dict[str, Any]]:
    """Keys (without secrets), oldest first.

    Raises:
        ValueError: the cursor is not one this list produced.
    """
    k = t.api_keys
    query = sa.select(k.c.id, k.c.name, k.c.role, k.c.created_at, k.c.revoked_at)
    if cursor is not None:
        query = query.where(
            after([k.c.created_at, k.c.id], decode_cursor(cursor, [datetime, str]), False)
        )
    query = query.order_by(k.c.created_at, k.c.id).limit(limit + 1)
    with storage.begin() as conn:
        rows = conn.execute(query).mappings().all()
    kept, next_cursor = paginate(rows, limit, lambda r: (r["created_at"], r["id"]))
    return Page([dict(row) for row in kept], next_cursor)


def revoke_key(storage: Storage, ident: str) -> bool:
    """Revoke a key by id; returns whether an active key was revoked."""
    k = t.api_keys
    with storage.begin() as conn:
        result = conn.execute(
            sa.update(k).where(k.c.id == ident, k.c.revoked_at.is_(None)).values(revoked_at=utcnow())
        )
    return result.rowcount == 1
