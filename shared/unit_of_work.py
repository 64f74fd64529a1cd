"""Commit once at the service boundary, then invalidate the cache entries the transaction changed.

Invalidating before the commit would let a concurrent reader cache the old rows again; invalidating
after it, with a short-lived tombstone (shared.cache.invalidate), closes that window.
"""
from __future__ import annotations

from sqlalchemy.orm import Session

from shared.cache import Cache, invalidate

_TOUCHED = "touched_cache_keys"


def touch(session: Session, *cache_keys: str) -> None:
    """Note cache entries that this transaction's writes make stale."""
    session.info.setdefault(_TOUCHED, set()).update(cache_keys)


def commit(session: Session, cache: Cache) -> None:
    session.commit()
    keys = session.info.pop(_TOUCHED, None)
    if keys:
        invalidate(cache, *keys)
