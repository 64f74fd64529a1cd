"""Expand/contract on a real migration: scanning's 0004 (bags.completed_at kept by a trigger, and the tally tables
the dashboard's counts come from), with the release before it and this checkout on one database.

During a rolling deploy the migration runs first and the previous release's replicas keep serving on the new
schema until the last one is replaced (docs/contracts.md, "Migrations: expand, then contract"). So the previous
release's code, taken from git history (the commit before 0004 landed) and run in a subprocess, writes rows on
its own schema; the database is upgraded; that code must still read and write on the new schema, every row it
writes must be kept as the new code expects (completed_at, the tallies), and the new code must read it all.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import NoReturn

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, pool, text

from services.scanning.app import create_app
from services.scanning.config import Settings
from shared.migrate import upgrade
from tests.support import IN_CI, drop_pg_databases, free_port, pg_database_url, require_postgres
from tests.tokens import SigningKey

REPO = Path(__file__).resolve().parents[2]
MIGRATION = "services/scanning/migrations/versions/0004_tallies.py"
BEFORE = "0003"  # its down_revision: the schema the previous release ran on
STEPS = Path(__file__).with_name("scanning_steps.py")
# Small parents, so a few child scans complete one (the previous release reads the same setting).
PARENT_FORMATS = '[{"pattern": "^P[0-9]{4}$", "capacity": 2}]'
KEY = SigningKey.generate("expand-contract")


def _history_missing(reason: str) -> NoReturn:
    message = f"the previous release's code is not in this checkout's history: {reason}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: CI must check out the full history, e.g. fetch-depth: 0)")
    pytest.skip(f"{message}; a full clone runs this test")


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True)


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory) -> Path:
    """The services and shared code of the commit before MIGRATION landed, unpacked outside the checkout (git
    archive: the checkout and its worktrees stay untouched)."""
    try:
        landed = _git("log", "--diff-filter=A", "--format=%H", "--", MIGRATION)
    except FileNotFoundError:
        _history_missing("git is not installed")
    commits = landed.stdout.decode().split()
    if landed.returncode != 0 or not commits:
        _history_missing(f"git log finds no commit adding {MIGRATION}")
    before = f"{commits[-1]}^"
    if _git("rev-parse", "--verify", "--quiet", f"{before}^{{commit}}").returncode != 0:
        _history_missing(f"{before} is not there (a shallow clone?)")
    archive = _git("archive", "--format=tar", before, "services", "shared", "tests/__init__.py", "tests/tokens.py")
    assert archive.returncode == 0, archive.stderr.decode()
    tree = tmp_path_factory.mktemp("previous-release")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(tree, filter="data")
    assert not (tree / MIGRATION).exists(), "the previous release must predate the migration"
    return tree


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{(tmp_path / 'scanning.db').as_posix()}"
    require_postgres()
    prefix = f"bt_expand_{os.getpid()}"
    drop_pg_databases(prefix)
    request.addfinalizer(lambda: drop_pg_databases(prefix))
    return pg_database_url(f"{prefix}_scanning")


def previous(tree: Path, database_url: str, tmp_path: Path, steps: list) -> list[dict]:
    """Run `steps` through the previous release's scanning app (tests/contracts/scanning_steps.py) and return
    its answers; every step must have succeeded."""
    answers_file = tmp_path / "answers.json"
    env = {**os.environ, "PYTHONPATH": str(tree), "SCANNING_PARENT_FORMATS": PARENT_FORMATS}
    run = subprocess.run([sys.executable, str(STEPS), database_url, json.dumps(steps), str(answers_file)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(answers_file.read_text())
    assert Path(result["code"]).is_relative_to(tree), f"imported {result['code']}, not the previous release"
    failed = [(step, answer) for step, answer in zip(steps, result["answers"]) if answer["status"] >= 300]
    assert not failed, failed
    return result["answers"]


def fill(parent: str, children: int, first: int) -> list:
    """Scan a parent and then `children` children C<first>, C<first + 1>...: two complete it."""
    return [["POST", "/scans/parent", {"qr_id": parent}]] + [
        ["POST", "/scans/child", {"parent_qr": parent, "child_qr": f"C{first + i:04d}"}] for i in range(children)]


def rows(database_url: str, sql: str) -> list:
    engine = create_engine(database_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql)))
    finally:
        engine.dispose()


def parents(database_url: str) -> dict[str, tuple[str, bool]]:
    """Each parent's status, and whether it has a completed_at."""
    return {qr: (status, completed_at is not None) for qr, status, completed_at
            in rows(database_url, "SELECT qr_id, status, completed_at FROM bags WHERE type = 'parent'")}


def truth(database_url: str) -> dict:
    """What the dashboard's figures must say, counted from the rows themselves."""
    statuses = dict(rows(database_url, "SELECT status, count(*) FROM bags WHERE type = 'parent' GROUP BY status"))
    [(children, linked)] = rows(database_url, "SELECT count(*), count(parent_id) FROM bags WHERE type = 'child'")
    [(scans,)] = rows(database_url, "SELECT count(*) FROM scans")
    return {"parents": {status: statuses.get(status, 0) for status in ("pending", "in_progress", "completed")},
            "children": children, "linked_children": linked, "scans": scans}


def test_the_previous_release_keeps_working_across_the_migration(previous_release, database_url, tmp_path):
    upgrade("scanning", database_url, BEFORE)

    # The previous release on its own schema: the rows there are when the migration runs.
    previous(previous_release, database_url, tmp_path, [
        *fill("P0001", 2, first=1),  # completed
        *fill("P0002", 1, first=3),  # in progress
        ["POST", "/scans/parent", {"qr_id": "P0003"}],  # pending
        ["PUT", "/internal/parents/P0001/bill", {"bill_id": "BILL_20261202_0001", "link": 1}],
    ])

    upgrade("scanning", database_url)  # this release's migration; the previous release's replicas keep running
    assert parents(database_url)["P0001"] == ("completed", True), "the backfill dates the completed parent"

    # The previous release on the new schema: its reads, and its writes of every kind (a parent's INSERT, the
    # UPDATE that completes one, the unlink that un-completes one), none of which knows completed_at.
    answers = previous(previous_release, database_url, tmp_path, [
        ["GET", "/bags/P0001", None],
        ["GET", "/bags?type=parent&status=completed", None],
        ["POST", "/internal/parents/counts", {"qr_ids": ["P0001", "P0002"]}],
        ["GET", "/internal/parents/marks", None],
        ["POST", "/scans/child", {"parent_qr": "P0002", "child_qr": "C0004"}],  # completes P0002
        *fill("P0004", 2, first=5),  # a new parent, completed
        ["DELETE", "/bags/P0001/children/C0001", None],  # P0001 is in progress again
    ])
    assert answers[0]["body"]["status"] == "completed"
    assert [bag["qr_id"] for bag in answers[1]["body"]["items"]] == ["P0001"]
    assert answers[2]["body"]["parents"]["P0002"]["child_count"] == 1
    assert [mark["qr_id"] for mark in answers[3]["body"]["items"]] == ["P0001"]

    # The trigger kept completed_at for the writer that has never heard of it.
    assert parents(database_url) == {"P0001": ("in_progress", False), "P0002": ("completed", True),
                                     "P0003": ("pending", False), "P0004": ("completed", True)}

    # This release reads what the previous one wrote: the figures come from the tallies the triggers kept.
    settings = Settings(environment="test", database_url=database_url, redis_url=None, access_log=False,
                        var_dir=tmp_path, parent_formats=PARENT_FORMATS, auth_url=f"http://127.0.0.1:{free_port()}")
    token = KEY.mint(sub="12", username="jaya", role="dispatcher", area="jaipur")
    with TestClient(create_app(settings)) as client:
        client.app.state.verifier.load_jwks({"keys": [KEY.jwk()]})
        totals = client.get("/internal/stats", params={"area": "jaipur"}).json()["totals"]
        expected = truth(database_url)
        assert totals["parents"] == {**expected["parents"], "total": 4}
        assert (totals["children"], totals["linked_children"]) == (expected["children"], expected["linked_children"])
        assert totals["scans_today"] == expected["scans"]
        assert totals["completed_today"] == 2  # P0002 and P0004; P0001 is no longer completed
        assert totals["billed_today"] == {"parents": 1, "weight_kg": 1}  # P0001's mark, its one child left
        lookup = client.get("/internal/bags/P0004/lookup").json()
        assert [scan["child_qr"] for scan in lookup["last_scans"]][:2] == ["C0006", "C0005"]
        # ... and writes what the previous release's replicas will read while the deploy goes on.
        assert client.post("/scans/parent", json={"qr_id": "P0005"},
                           headers={"Authorization": f"Bearer {token}"}).status_code == 200

    answers = previous(previous_release, database_url, tmp_path, [["GET", "/bags/P0005", None]])
    assert answers[0]["body"]["created_by"] == "jaya"
