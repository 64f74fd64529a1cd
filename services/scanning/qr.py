"""QR codes as scanners type them: normalised, then classified as a parent (with its capacity) or a child."""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from services.scanning.config import Settings

# Keyboard-wedge scanners add control characters (Enter, Tab, GS separators) and some labels carry
# zero-width characters; none of them is ever part of a code.
_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u00ad\u180e\u200b-\u200f\u2028-\u202f\u2060-\u206f\ufeff]")


def normalize_qr(raw: str) -> str:
    """Upper-case, with control, zero-width and surrounding space removed (NFKC folds full-width forms)."""
    return _INVISIBLE.sub("", unicodedata.normalize("NFKC", raw)).strip().upper()


@dataclass(frozen=True)
class QrKind:
    is_parent: bool
    capacity: int | None


def classify(qr: str, settings: Settings) -> QrKind | None:
    """Parent (with capacity), child, or None when the code matches no format. A parent format wins."""
    for pattern, capacity in settings.parent_rules:
        if pattern.match(qr):
            return QrKind(True, capacity)
    if settings.child_rule.match(qr):
        return QrKind(False, None)
    return None
