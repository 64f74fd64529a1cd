"""QR codes as scanners type them: normalised (shared.codes), then classified as a parent (with its capacity)
or a child; a code no rule accepts is a 422 that says what the code should look like."""
from __future__ import annotations

import re
from dataclasses import dataclass

from services.scanning.config import Settings
from shared.codes import is_bill_code, normalize_code
from shared.errors import ProblemError


class InvalidQr(ProblemError):
    status, slug = 422, "invalid-qr"


@dataclass(frozen=True)
class QrKind:
    is_parent: bool
    capacity: int | None


def classify(qr: str, settings: Settings) -> QrKind | None:
    """Parent (with capacity), child, or None when the code matches no format. A parent format wins. A code
    holding the bill mark is a bill's, never a bag's, whatever formats are configured."""
    if is_bill_code(qr):
        return None
    for pattern, capacity in settings.parent_rules:
        if pattern.match(qr):
            return QrKind(True, capacity)
    if settings.child_rule.match(qr):
        return QrKind(False, None)
    return None


def parent_code(settings: Settings, raw: str) -> tuple[str, int]:
    """A parent's normalised QR and capacity; 422 for anything else."""
    qr = normalize_code(raw)
    kind = classify(qr, settings)
    if kind is None or not kind.is_parent:
        what = "a child QR" if kind else "a bill code" if is_bill_code(qr) else "not a known QR format"
        raise InvalidQr(f"{qr or raw!r} is {what}; a parent QR looks like SB12345 or M444-12345", qr_id=qr)
    return qr, kind.capacity


def child_code(settings: Settings, raw: str) -> str:
    qr = normalize_code(raw)
    kind = classify(qr, settings)
    if kind is None:
        raise InvalidQr(f"{qr or raw!r} is not a child QR: 4-20 characters of A-Z, 0-9 and '-'", qr_id=qr)
    if kind.is_parent:
        raise InvalidQr(f"{qr} is a parent QR; it cannot be packed into another parent", qr_id=qr)
    return qr


def any_code(settings: Settings, raw: str) -> str:
    """A parent's or a child's normalised QR; 422 when it is neither."""
    qr = normalize_code(raw)
    if classify(qr, settings) is None:
        what = "a bill code, not" if is_bill_code(qr) else "not"
        raise InvalidQr(f"{qr or raw!r} is {what} a bag QR", qr_id=qr)
    return qr


_FILTER_QR = re.compile(r"^[A-Z0-9-]{1,32}$")


def filter_code(raw: str | None) -> str | None:
    """A QR (or QR prefix) used as a list filter: normalised, and only the characters codes are made of."""
    if not raw:
        return None
    qr = normalize_code(raw)
    if not _FILTER_QR.match(qr):
        raise InvalidQr(f"{raw!r} cannot be part of a bag QR (A-Z, 0-9 and '-' only)")
    return qr
