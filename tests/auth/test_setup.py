"""First admin, CLI, settings and password policy."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from pydantic import ValidationError

from services.auth import service
from services.auth.config import Settings
from services.auth.passwords import password_problems
from shared import migrate
from tests.auth.conftest import ADMIN

ROOT = Path(__file__).resolve().parents[2]


def test_first_admin_comes_from_settings_once(api):
    again = api.client.portal.call(lambda: service.ensure_first_admin(
        ctx=api.app.state.auth, username="other", password="0ther!pass", email=None))
    assert again is None
    assert api.login(*ADMIN).status_code == 200
    assert api.login("other", "0ther!pass").status_code == 401


def test_cli_creates_an_admin(tmp_path):
    url = f"sqlite:///{tmp_path}/auth.db"
    migrate.upgrade("auth", url)
    env = {**os.environ, "AUTH_DATABASE_URL": url, "BAGTRACK_VAR_DIR": str(tmp_path), "BAGTRACK_ADMIN_PASSWORD": "Cl1!admin"}
    run = subprocess.run([sys.executable, "-m", "services.auth.cli", "create-admin", "--username", "boss"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "created admin 'boss'" in run.stdout
    weak = subprocess.run([sys.executable, "-m", "services.auth.cli", "create-admin", "--username", "boss2"],
                          cwd=ROOT, env={**env, "BAGTRACK_ADMIN_PASSWORD": "weak"}, capture_output=True, text=True, timeout=60)
    assert weak.returncode == 1 and "password needs" in weak.stderr


@pytest.mark.parametrize("overrides", [
    {"jwt_private_key": None},
    {"jwt_private_key": "changeme"},
    {"jwt_private_key": "real-looking-key", "admin_password": "changeme"},
])
def test_production_refuses_missing_or_placeholder_secrets(overrides):
    with pytest.raises(ValidationError):
        Settings(environment="production", **overrides)


def test_production_accepts_a_key_file(tmp_path):
    key = tmp_path / "key.pem"
    key.write_text("x")
    assert Settings(environment="production", jwt_private_key_file=key).environment == "production"


def test_service_databases_are_derived_from_one_server_url():
    settings = Settings(shared_database_url="postgresql://u:p@db:5432/bagtrack")
    assert settings.database_url == "postgresql+psycopg2://u:p@db:5432/bagtrack_auth"
    assert Settings(database_url="postgresql://u@h/x").database_url == "postgresql+psycopg2://u@h/x"


@pytest.mark.parametrize("password,ok", [
    ("Str0ng!pass", True), ("short1!A", True), ("sh0rt!A", False), ("NOLOWER1!", False),
    ("noupper1!", False), ("NoDigits!!", False), ("NoSymbol11", False), ("A1!a" * 40, False),
])
def test_password_policy(password, ok):
    assert (password_problems(password) == []) is ok


def test_production_hash_parameters_are_owasp_argon2id():
    settings = Settings()
    assert (settings.argon2_memory_kib, settings.argon2_time_cost, settings.argon2_parallelism) == (19_456, 2, 1)
    hasher = PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1)
    assert hasher.hash("x").startswith("$argon2id$v=19$m=19456,t=2,p=1$")
