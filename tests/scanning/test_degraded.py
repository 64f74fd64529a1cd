"""With Redis configured but dead, scanning keeps serving: the cache is bypassed, never an error."""
from fastapi.testclient import TestClient

from services.scanning.app import create_app
from services.scanning.config import Settings
from shared import migrate
from tests.scanning.conftest import ADMIN, JAIPUR, KEY, ScanApi
from tests.support import free_port


def test_scans_and_lookups_work_while_redis_is_down(tmp_path):
    settings = Settings(environment="test", database_url=f"sqlite:///{tmp_path}/s.db", var_dir=tmp_path,
                        redis_url=f"redis://127.0.0.1:{free_port()}/0", access_log=False,
                        auth_url=f"http://127.0.0.1:{free_port()}")
    migrate.upgrade("scanning", settings.database_url)
    with TestClient(create_app(settings)) as client:
        client.app.state.verifier.load_jwks({"keys": [KEY.jwk()]})
        api = ScanApi(client)
        assert api.parent("SB00001").status_code == 200
        assert api.child("SB00001", "CH-0001").status_code == 200
        for _ in range(3):
            assert api.bag("SB00001").json()["children"] == ["CH-0001"]
        assert client.get("/ready").status_code == 200
        assert client.delete("/bags/SB00001", headers=api.headers(ADMIN)).status_code == 409  # holds a child
        assert api.unlink("SB00001", "CH-0001", who=JAIPUR).status_code == 200
        assert client.delete("/bags/SB00001", headers=api.headers(ADMIN)).status_code == 204
        assert api.bag("SB00001").status_code == 404  # the delete's invalidation holds with the cache down
