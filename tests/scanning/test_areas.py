"""Issue 8, the area rules on every route: to a dispatcher, another area's bag is answered exactly as a bag that
does not exist, and no answer names another area or a parent the caller may not see."""
from services.scanning.models import Bag, Scan
from services.scanning.writes import cache_key
from tests.scanning.conftest import ADMIN, AKOLA, BILLER, JAIPUR


def _problem(response) -> tuple[int, dict]:
    """A problem answer without what differs between any two requests (its request id)."""
    body = response.json()
    body.pop("request_id")
    return response.status_code, body


def _as_if_missing(other_areas, missing, qr: str, missing_qr: str) -> None:
    """`other_areas` (about `qr`) is the answer `missing` (about `missing_qr`, which does not exist) gets."""
    status, body = _problem(other_areas)
    assert status == 404, other_areas.text
    assert (status, {**body, "detail": body["detail"].replace(qr, missing_qr)}) == _problem(missing)


def _names_nothing_of_jaipur(response, *qrs: str) -> None:
    assert "jaipur" not in response.text.lower(), response.text
    for qr in qrs:
        assert qr not in response.text, response.text


def test_another_areas_bag_reads_as_missing_on_a_cache_miss_and_a_hit(api):
    api.parent("SB00001", who=JAIPUR)
    api.client.portal.call(api.app.state.cache.clear)
    miss = api.bag("SB00001", who=AKOLA)
    _as_if_missing(miss, api.bag("SB09999", who=AKOLA), "SB00001", "SB09999")
    assert api.bag("SB00001", who=JAIPUR).status_code == 200
    assert api.client.portal.call(api.app.state.cache.get, cache_key("SB00001")) is not None  # a hit now
    hit = api.bag("SB00001", who=AKOLA)
    assert _problem(hit) == _problem(miss) and hit.json()["detail"] == "no bag SB00001"
    _names_nothing_of_jaipur(hit)
    assert api.bag("SB00001", who=BILLER).status_code == api.bag("SB00001", who=ADMIN).status_code == 200


def test_another_areas_child_reads_as_missing_and_does_not_name_its_parent(api):
    api.fill("SB00001", 1)
    response = api.bag("CH00001000", who=AKOLA)
    _as_if_missing(response, api.bag("CH-NOPE", who=AKOLA), "CH00001000", "CH-NOPE")
    _names_nothing_of_jaipur(response, "SB00001")


def test_scanning_another_areas_parent_is_404_no_bag_and_writes_nothing(api):
    api.parent("SB00001", who=JAIPUR)
    response = api.parent("SB00001", who=AKOLA)
    assert _problem(response)[0] == 404 and response.json()["detail"] == "no bag SB00001"
    _names_nothing_of_jaipur(response)
    assert len(api.db_rows(Scan, kind="parent")) == 1
    assert api.parent("SB00001", who=ADMIN).json()["repeat"] is True  # admins still select any area's parent


def test_a_child_scan_onto_another_areas_parent_reads_as_an_unscanned_parent(api):
    api.parent("SB00001", who=JAIPUR)
    response = api.child("SB00001", "CH-0001", who=AKOLA)
    _as_if_missing(response, api.child("SB09999", "CH-0001", who=AKOLA), "SB00001", "SB09999")
    _names_nothing_of_jaipur(response)
    assert api.db_rows(Bag, qr_id="CH-0001") == [] and api.db_rows(Scan, kind="child") == []


def test_a_dispatcher_cannot_link_another_areas_unlinked_child(api):
    api.fill("SB00001", 1, who=JAIPUR)
    api.unlink("SB00001", "CH00001000", who=JAIPUR)  # unlinked, still in jaipur
    api.parent("SB00002", who=AKOLA)
    response = api.child("SB00002", "CH00001000", who=AKOLA)
    assert response.status_code == 409, response.text
    assert response.json()["type"] == "urn:bagtrack:problem:child-not-yours"
    _names_nothing_of_jaipur(response, "SB00001")
    [child] = api.db_rows(Bag, qr_id="CH00001000")
    assert (child.parent_id, child.dispatch_area) == (None, "jaipur")
    assert api.bag("SB00002", who=AKOLA).json()["child_count"] == 0
    assert api.db_rows(Scan, kind="child", parent_qr="SB00002") == []


def test_admins_still_link_any_areas_unlinked_child_moving_it(api):
    api.fill("SB00001", 1, who=JAIPUR)
    api.unlink("SB00001", "CH00001000", who=JAIPUR)
    api.parent("SB00002", who=AKOLA)
    response = api.child("SB00002", "CH00001000", who=ADMIN)
    assert response.status_code == 200, response.text
    assert response.json()["child"]["dispatch_area"] == "akola"
    assert api.bag("CH00001000", who=AKOLA).json()["parent_qr"] == "SB00002"  # and it is akola's now


def test_a_child_on_a_parent_the_caller_cannot_see_is_409_without_naming_that_parent(api):
    api.fill("SB00001", 1, who=JAIPUR)
    api.parent("SB00002", who=AKOLA)
    response = api.child("SB00002", "CH00001000", who=AKOLA)
    assert response.status_code == 409, response.text
    assert "parent_qr" not in response.json()
    _names_nothing_of_jaipur(response, "SB00001")
    assert api.bag("SB00001", who=JAIPUR).json()["child_count"] == 1
    # Where the caller may see the parent holding it, the answer still names it.
    admin = api.child("SB00002", "CH00001000", who=ADMIN)
    assert admin.status_code == 409 and admin.json()["parent_qr"] == "SB00001"


def test_unlinking_from_another_areas_parent_reads_as_missing(api):
    api.fill("SB00001", 1, who=JAIPUR)
    response = api.unlink("SB00001", "CH00001000", who=AKOLA)
    _as_if_missing(response, api.unlink("SB09999", "CH00001000", who=AKOLA), "SB00001", "SB09999")
    _names_nothing_of_jaipur(response)
    assert api.bag("SB00001", who=JAIPUR).json()["child_count"] == 1


def test_unlinking_another_areas_child_from_ones_own_parent_reads_as_missing(api):
    api.fill("SB00001", 1, who=JAIPUR)
    api.parent("SB00002", who=AKOLA)
    response = api.unlink("SB00002", "CH00001000", who=AKOLA)  # today: 409 "is not on parent", so it exists
    _as_if_missing(response, api.unlink("SB00002", "CH-NOPE", who=AKOLA), "CH00001000", "CH-NOPE")
    _names_nothing_of_jaipur(response, "SB00001")


def test_a_dispatchers_delete_of_another_areas_bag_is_answered_as_for_a_missing_one(api):
    """Dispatchers may delete nothing: the role's 403 comes first, before any bag is looked at."""
    api.parent("SB00001", who=JAIPUR)
    other = api.client.delete("/bags/SB00001", headers=api.headers(AKOLA))
    missing = api.client.delete("/bags/SB09999", headers=api.headers(AKOLA))
    assert other.status_code == 403 and _problem(other) == _problem(missing)
    _names_nothing_of_jaipur(other, "SB00001")
    assert api.bag("SB00001", who=JAIPUR).status_code == 200


def test_history_of_another_areas_bag_is_empty_as_for_a_missing_one(api):
    api.fill("SB00001", 1, who=JAIPUR)
    for qr in ("SB00001", "CH00001000", "SB09999"):
        page = api.client.get("/scans", params={"qr": qr}, headers=api.headers(AKOLA))
        assert (page.status_code, page.json()) == (200, {"items": [], "next_cursor": None})


def test_listing_another_area_is_403_naming_only_the_callers_own(api):
    api.fill("SB00001", 1, who=JAIPUR)
    for path in ("/bags", "/scans"):
        response = api.client.get(path, params={"dispatch_area": "Jaipur"}, headers=api.headers(AKOLA))
        assert response.status_code == 403 and "akola" in response.json()["detail"]
        _names_nothing_of_jaipur(response, "SB00001", "CH00001000")
