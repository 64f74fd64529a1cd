"""What a caller is shown of bags and scans: the public shapes built from rows, and the area rule every read
and write applies."""
from __future__ import annotations

from typing import Any, Mapping

from services.scanning.schemas import BagOut, ScanResult
from shared.errors import NotFound
from shared.security import Principal


CHILD_WEIGHT_KG = 1


def weight_kg(bag_type: str, child_count: int) -> int:
    """1 kg a child: a parent weighs what it holds."""
    return child_count * CHILD_WEIGHT_KG if bag_type == "parent" else CHILD_WEIGHT_KG


def bag_out(bag: Mapping[str, Any], parent_qr: str | None = None, children: list[str] | None = None) -> BagOut:
    """A bag as the API shows it, from a row (or a write's facts) with the bags table's column names."""
    bag_type = bag["type"]
    child_count = bag.get("child_count") or 0
    return BagOut(qr_id=bag["qr_id"], type=bag_type, status=bag["status"], dispatch_area=bag["dispatch_area"],
                  child_count=child_count, capacity=bag.get("capacity"), weight_kg=weight_kg(bag_type, child_count),
                  parent_qr=parent_qr, children=children, created_by=bag["created_by"], created_at=bag["created_at"])


def area_scope(principal: Principal) -> str | None:
    """The one area a caller's reads, writes and lists are confined to (None: every area)."""
    return principal.dispatch_area if principal.role == "dispatcher" else None


def may_see(principal: Principal, area: str) -> bool:
    """Dispatchers work in their own area; billers and admins see every area. A bag the caller may not see is
    answered exactly as a bag that does not exist (`no_bag`), so no answer tells one area about another's bags."""
    return area_scope(principal) in (None, area)


def no_bag(qr: str) -> NotFound:
    """The answer for a bag that does not exist, or that the caller may not see: the two are not told apart."""
    return NotFound(f"no bag {qr}")


# --- the scan writes' answers, from the facts their statement reported (the same facts a replay returns) -------

def parent_scan_result(facts: dict) -> ScanResult:
    created = facts["created"] is not None
    parent = facts["created"] or facts["found"]
    return ScanResult(parent=bag_out(parent, children=facts["children"]), repeat=not created, created=created)


def child_scan_result(facts: dict) -> ScanResult:
    parent, children = facts["parent"], facts["children"]
    if facts["claimed"] is None:  # a repeat: the child is already on this parent, nothing changed
        return ScanResult(parent=bag_out(parent, children=children),
                          child=bag_out(facts["child"], parent_qr=parent["qr_id"]), repeat=True)
    linked = facts["linked"]
    return ScanResult(parent=bag_out({**parent, **facts["claimed"]}, children=[*children, linked["qr_id"]]),
                      child=bag_out(linked, parent_qr=parent["qr_id"]), repeat=False, created=facts["created"])


def unlink_result(facts: dict) -> ScanResult:
    parent, child = facts["parent"], facts["unlinked"]
    children = [qr for qr in facts["children"] if qr != child["qr_id"]]
    return ScanResult(parent=bag_out({**parent, **facts["released"]}, children=children),
                      child=bag_out(child), repeat=False)
