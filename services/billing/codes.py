"""Bill codes: a client's own or a generated BILL_YYYYMMDD_NNNN, normalised like QRs (shared.codes) and always
holding shared.codes.BILL_CODE_MARK, which no bag QR and no route word under /bills may contain."""
from __future__ import annotations

import re
from datetime import date

from shared.codes import BILL_CODE_MARK, normalize_code
from shared.errors import ProblemError

_BILL_CODE = re.compile(r"^[A-Z0-9][A-Z0-9_-]{2,31}$")


class InvalidBillCode(ProblemError):
    status, slug = 422, "invalid-bill-code"


def bill_code(raw: str) -> str:
    """A bill code as stored and compared: normalised; a 422 saying the rule for anything else."""
    code = normalize_code(raw)
    if not _BILL_CODE.match(code) or BILL_CODE_MARK not in code:
        raise InvalidBillCode(f"{code or raw!r} is not a bill code: 3-32 characters of A-Z, 0-9, '-' and '_', "
                              f"starting with a letter or digit and holding at least one '{BILL_CODE_MARK}' "
                              "(which no bag QR has), e.g. BILL_20261128_0001", bill_id=code)
    return code


def generated_code(day: date, number: int) -> str:
    """BILL_20261128_0001; the number widens past 9999 (BILL_20261128_10000)."""
    return f"BILL_{day:%Y%m%d}_{number:04d}"
