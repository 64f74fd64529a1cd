"""The one normalisation of a scanned code (bag QRs, and the codes other services key by them).

Keyboard-wedge scanners add control characters (Enter, Tab, GS separators) and some labels carry zero-width
characters; none of them is ever part of a code. NFKC folds full-width forms from a misconfigured scanner.
"""
from __future__ import annotations

import re
import unicodedata

_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u00ad\u180e\u200b-\u200f\u2028-\u202f\u2060-\u206f\ufeff]")


def normalize_code(raw: str) -> str:
    """Upper-case, with control, zero-width and surrounding space removed."""
    return _INVISIBLE.sub("", unicodedata.normalize("NFKC", raw)).strip().upper()


# Bill codes and bag QRs never collide: every bill code contains this character, and no bag QR may (scanning refuses
# a QR holding it whatever formats are configured; billing refuses a bill code without it). Route words under
# /bills (`summary`, `export.csv`, `parents`) cannot hold it either, so a bill code is never a route.
BILL_CODE_MARK = "_"


def is_bill_code(code: str) -> bool:
    """Whether a normalised code is a bill's (it carries BILL_CODE_MARK) rather than a bag's."""
    return BILL_CODE_MARK in code
