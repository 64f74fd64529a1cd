"""What scanning asks billing: is this parent on a bill? (GET /bills/parents/{parent_qr} on billing.)

Contract: 200 `{"parent_qr": ..., "bill_id": "<id>" | null}`. Anything else — an error status, a timeout,
an open breaker, a 404 from a billing that predates the route — means billing cannot answer, and the
caller refuses with 503 rather than guess.
"""
from __future__ import annotations

from urllib.parse import quote

from shared.errors import DependencyUnavailable, ProblemError
from shared.http import ResilientClient


class BillingUnavailable(DependencyUnavailable):
    slug = "billing-unavailable"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, dependency="billing")


async def parent_bill(client: ResilientClient, parent_qr: str, headers: dict[str, str]) -> str | None:
    """The id of the bill holding `parent_qr`, or None; ServiceUnavailable when billing cannot say."""
    try:
        response = await client.request("GET", f"/bills/parents/{quote(parent_qr, safe='')}", headers=headers)
    except ProblemError as exc:
        raise BillingUnavailable(f"billing cannot say whether {parent_qr} is on a bill ({exc.detail}); "
                                 "not deleting") from exc
    if response.status != 200:
        raise BillingUnavailable(f"billing answered {response.status} when asked about {parent_qr}; not deleting")
    try:
        bill_id = response.json().get("bill_id")
    except (ValueError, AttributeError) as exc:
        raise BillingUnavailable("billing answered nonsense; not deleting") from exc
    return str(bill_id) if bill_id else None
