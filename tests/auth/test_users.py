import pytest

from services.auth import service
from services.auth.models import User
from services.auth.schemas import UserUpdate
from shared.errors import Conflict
from shared.security import Principal
from tests.auth.conftest import ADMIN, PASSWORD
from tests.support import db_session


def test_admin_creates_a_dispatcher_and_a_biller_who_each_see_themselves(api):
    api.create_user("disp1", role="dispatcher", area="Lucknow")
    api.create_user("bill1", role="biller")
    for username, role, area in [("disp1", "dispatcher", "lucknow"), ("bill1", "biller", None)]:
        me = api.client.get("/auth/me", headers=api.as_(api.token(username))).json()
        assert (me["username"], me["role"], me["dispatch_area"], me["is_active"]) == (username, role, area, True)
        assert set(me) >= {"id", "username", "email", "role", "dispatch_area", "is_active", "created_at"}
        assert "password_hash" not in me


@pytest.mark.parametrize("role", ["dispatcher", "biller"])
def test_non_admins_cannot_create_or_list_users(api, role):
    api.create_user("someone", role=role, area="jaipur" if role == "dispatcher" else None)
    headers = api.as_(api.token("someone"))
    body = {"username": "x12", "email": "x12@example.com", "password": PASSWORD, "role": "biller"}
    assert api.client.post("/users", json=body, headers=headers).status_code == 403
    assert api.client.get("/users", headers=headers).status_code == 403


@pytest.mark.parametrize("body,fragment", [
    ({"role": "dispatcher"}, "dispatch_area"),
    ({"role": "dispatcher", "dispatch_area": "atlantis"}, "unknown dispatch_area"),
    ({"role": "biller", "dispatch_area": "jaipur"}, "only to dispatchers"),
    ({"role": "biller", "password": "short"}, "password needs"),
    ({"role": "biller", "password": "alllowercase1!"}, "upper-case"),
    ({"role": "janitor"}, "role"),
    ({"role": "biller", "username": "a"}, "username"),
    ({"role": "biller", "username": "bad name!"}, "username"),
    ({"role": "biller", "email": "not-an-email"}, "email"),
])
def test_invalid_new_users_are_422_with_a_clear_message(api, body, fragment):
    full = {"username": "newbie", "email": "newbie@example.com", "password": PASSWORD, **body}
    response = api.client.post("/users", json=full, headers=api.admin())
    assert response.status_code == 422, response.text
    assert fragment in response.json()["detail"]


def test_usernames_are_unique_case_insensitively_and_emails_unique(api):
    api.create_user("bill1")
    dup_name = {"username": "BILL1", "email": "other@example.com", "password": PASSWORD, "role": "biller"}
    dup_mail = {"username": "bill2", "email": "BILL1@example.com", "password": PASSWORD, "role": "biller"}
    assert api.client.post("/users", json=dup_name, headers=api.admin()).status_code == 409
    assert api.client.post("/users", json=dup_mail, headers=api.admin()).status_code == 409


def test_dispatchers_per_area_are_capped(api):  # the cap is 2 in the test settings
    api.create_user("dsp1", role="dispatcher", area="hisar")
    second = api.create_user("dsp2", role="dispatcher", area="hisar")
    body = {"username": "dsp3", "email": "dsp3@example.com", "password": PASSWORD, "role": "dispatcher", "dispatch_area": "hisar"}
    assert api.client.post("/users", json=body, headers=api.admin()).status_code == 409
    api.client.patch(f"/users/{second['id']}", json={"is_active": False}, headers=api.admin())
    assert api.client.post("/users", json=body, headers=api.admin()).status_code == 201


def test_moving_a_dispatcher_into_a_full_area_is_409(api):
    api.create_user("dsp1", role="dispatcher", area="hisar")
    api.create_user("dsp2", role="dispatcher", area="hisar")
    other = api.create_user("dsp3", role="dispatcher", area="akola")
    response = api.client.patch(f"/users/{other['id']}", json={"dispatch_area": "hisar"}, headers=api.admin())
    assert response.status_code == 409


def test_nobody_changes_their_own_role(api):
    me = api.client.get("/auth/me", headers=api.admin()).json()
    response = api.client.patch(f"/users/{me['id']}", json={"role": "biller"}, headers=api.admin())
    assert response.status_code == 403


def test_the_last_active_admin_cannot_be_demoted_deactivated_or_deleted(api):
    admin_id = api.client.get("/auth/me", headers=api.admin()).json()["id"]
    ghost = Principal(user_id=10_000, username="ghost", role="admin", dispatch_area=None)
    ctx, call = api.app.state.auth, api.client.portal.call
    for changes in (UserUpdate(role="biller"), UserUpdate(is_active=False)):
        with pytest.raises(Conflict, match="last active admin"):
            call(lambda: service.update_user(ctx=ctx, actor=ghost, user_id=admin_id, changes=changes))
    with pytest.raises(Conflict, match="last active admin"):
        call(lambda: service.delete_user(ctx=ctx, actor=ghost, user_id=admin_id))


def test_a_second_admin_can_be_demoted(api):
    other = api.create_user("admin2", role="admin")
    response = api.client.patch(f"/users/{other['id']}", json={"role": "biller"}, headers=api.admin())
    assert response.status_code == 200 and response.json()["role"] == "biller"


def test_admin_cannot_delete_themselves(api):
    me = api.client.get("/auth/me", headers=api.admin()).json()
    assert api.client.delete(f"/users/{me['id']}", headers=api.admin()).status_code == 409


def test_delete_user_then_it_is_gone(api):
    user = api.create_user("bill1")
    assert api.client.delete(f"/users/{user['id']}", headers=api.admin()).status_code == 204
    assert api.client.get(f"/users/{user['id']}", headers=api.admin()).status_code == 404
    assert api.login("bill1").status_code == 401


def test_users_read_themselves_but_not_others(api):
    a = api.create_user("bill1")
    b = api.create_user("bill2")
    headers = api.as_(api.token("bill1"))
    assert api.client.get(f"/users/{a['id']}", headers=headers).status_code == 200
    assert api.client.get(f"/users/{b['id']}", headers=headers).status_code == 403


def test_patch_validates_input(api):
    user = api.create_user("bill1")
    for body in ({"nickname": "x"}, {"role": "king"}, {"is_active": "perhaps"}, {"email": "nope"}):
        assert api.client.patch(f"/users/{user['id']}", json=body, headers=api.admin()).status_code == 422
    assert api.client.patch("/users/99999999999", json={}, headers=api.admin()).status_code == 422
    assert api.client.patch("/users/abc", json={}, headers=api.admin()).status_code == 422
    assert api.client.patch("/users/424242", json={}, headers=api.admin()).status_code == 404


def test_patch_email_conflict_is_409(api):
    api.create_user("bill1")
    b = api.create_user("bill2")
    response = api.client.patch(f"/users/{b['id']}", json={"email": "bill1@example.com"}, headers=api.admin())
    assert response.status_code == 409


def test_deactivating_a_user_revokes_their_refresh_tokens(api):
    user = api.create_user("bill1")
    pair = api.login("bill1").json()
    api.client.patch(f"/users/{user['id']}", json={"is_active": False}, headers=api.admin())
    assert api.client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}).status_code == 401


def test_list_users_pages_with_a_cursor_and_filters(api):
    for i in range(5):
        api.create_user(f"bill{i}")
    api.create_user("disp1", role="dispatcher", area="raipur")
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.client.get("/users", params=params, headers=api.admin()).json()
        seen += [u["username"] for u in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [ADMIN[0], "bill0", "bill1", "bill2", "bill3", "bill4", "disp1"]
    dispatchers = api.client.get("/users", params={"role": "dispatcher"}, headers=api.admin()).json()["items"]
    assert [u["username"] for u in dispatchers] == ["disp1"]
    found = api.client.get("/users", params={"q": "ILL3"}, headers=api.admin()).json()["items"]
    assert [u["username"] for u in found] == ["bill3"]


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 201}, {"cursor": "%%%"}, {"role": "king"}])
def test_list_users_rejects_bad_parameters(api, params):
    assert api.client.get("/users", params=params, headers=api.admin()).status_code in (400, 422)


def test_change_password_checks_the_current_one_and_the_policy(api):
    api.create_user("bill1")
    pair = api.login("bill1").json()
    headers = api.as_(pair["access_token"])
    wrong = api.client.post("/users/me/password", headers=headers, json={"current_password": "Nope!1234", "new_password": "N3w!passw"})
    weak = api.client.post("/users/me/password", headers=headers, json={"current_password": PASSWORD, "new_password": "weak"})
    assert wrong.status_code == 403 and weak.status_code == 422
    ok = api.client.post("/users/me/password", headers=headers, json={"current_password": PASSWORD, "new_password": "N3w!passw"})
    assert ok.status_code == 204
    assert api.client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}).status_code == 401
    assert api.login("bill1", "N3w!passw").status_code == 200


def _change_password(api, headers, current: str, new: str = "N3w!passw"):
    return api.client.post("/users/me/password", headers=headers, json={"current_password": current, "new_password": new})


def test_wrong_current_passwords_are_throttled_per_user_and_never_lock(api):
    api.create_user("bill1")
    api.create_user("bill2")
    headers, other = api.as_(api.token("bill1")), api.as_(api.token("bill2"))
    for _ in range(5):
        assert _change_password(api, headers, "Nope!1234").status_code == 403
    throttled = _change_password(api, headers, PASSWORD)  # the right one too, until the window ends
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) >= 1
    assert _change_password(api, other, "Nope!1234").status_code == 403  # another user is not affected
    with db_session(api.app) as session:
        user = session.query(User).filter_by(username_key="bill1").one()
        assert user.failed_logins == 0 and user.locked_until is None
    assert api.login("bill1").status_code == 200  # and login is untouched
