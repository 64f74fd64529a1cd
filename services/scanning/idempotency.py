"""Idempotent writes: a retry carrying the same scan_id / Idempotency-Key replays the first answer.

The key is recorded in the same transaction as the write it guards, so either both land or neither.
Only successes are recorded: a failed request wrote nothing, so retrying it simply runs it again.
"""
from __future__ import annotations

import hashlib
import json
from typing import Callable

from fastapi import Response
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.scanning import repository as repo
from services.scanning.models import IdempotentRequest
from shared.cache import Cache
from shared.db import Database
from shared.errors import InvalidInput, ProblemError
from shared.security import Principal
from shared.timeutil import utcnow
from shared.unit_of_work import commit


class KeyReused(ProblemError):
    status, slug = 422, "idempotency-key-reused"


def pick_key(body_key: str | None, header_key: str | None) -> str | None:
    if body_key and header_key and body_key != header_key:
        raise InvalidInput("scan_id and Idempotency-Key differ; send one of them")
    return body_key or header_key


REPLAYED_HEADER = "Idempotent-Replayed"


def run_write(*, db: Database, cache: Cache, principal: Principal, key: str | None, operation: str,
              request: dict, action: Callable[[Session], BaseModel], response: Response) -> dict:
    """Run `action` in one transaction and commit, or replay the answer recorded for `key`.

    Sets `Idempotent-Replayed: true|false` on `response`.
    """
    answer, replayed = _run(db=db, cache=cache, principal=principal, key=key, operation=operation,
                            request=request, action=action)
    response.headers[REPLAYED_HEADER] = "true" if replayed else "false"
    return answer


def _run(*, db: Database, cache: Cache, principal: Principal, key: str | None, operation: str,
         request: dict, action: Callable[[Session], BaseModel]) -> tuple[dict, bool]:
    fingerprint = hashlib.sha256(json.dumps([operation, request], sort_keys=True).encode()).hexdigest()
    with db.session() as session:
        if key:
            replay = _replay(session, principal, key, fingerprint)
            if replay is not None:
                return replay, True
        answer = action(session).model_dump(mode="json")
        if key:
            try:
                repo.save_idempotent(session, IdempotentRequest(
                    user_id=principal.user_id, key=key, fingerprint=fingerprint, status_code=200,
                    response=json.dumps(answer), created_at=utcnow()))
            except IntegrityError:
                # The same request, sent twice at once: the other copy committed first; answer as it did.
                session.rollback()
                replay = _replay(session, principal, key, fingerprint)
                if replay is None:
                    raise
                return replay, True
        commit(session, cache)
        return answer, False


def _replay(session: Session, principal: Principal, key: str, fingerprint: str) -> dict | None:
    record = repo.get_idempotent(session, principal.user_id, key)
    if record is None:
        return None
    if record.fingerprint != fingerprint:
        raise KeyReused(f"scan_id / Idempotency-Key {key!r} was already used for a different request")
    return json.loads(record.response)
