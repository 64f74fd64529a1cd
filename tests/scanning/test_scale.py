"""Query plans at scale: every list and lookup the scanning service runs stays on an index as the tables grow.

PostgreSQL only (SQLite's planner is not the one production runs). A fresh database is seeded with ~40k bags
by the real seeder, analysed, and each query is built by services/scanning/repository.py exactly as the
service builds it, then EXPLAINed: no sequential scan of bags or scans, and keyset pages read a bounded
number of rows. docs/scale.md has the same queries EXPLAIN ANALYZEd against 1.8 M bags.

Estimates can look bounded while the executor reads most of an index (the planner assumes a filter's matches
are spread evenly; QR labels are used in order, so a prefix's matches are not), so each query runs under
EXPLAIN ANALYZE and the rows it actually touched are bounded too.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import pytest
from sqlalchemy import Engine, Select, create_engine, pool, select, text
from sqlalchemy.dialects import postgresql

from services.scanning import repository as repo
from services.scanning import scan_sql
from services.scanning.models import Bag
from scripts.seed import SeedRefused, seed
from shared.migrate import upgrade
from tests.support import drop_pg_databases, pg_database_url, require_postgres

BAGS = 40_000
PAGE = 51  # what list_bags / list_scans ask for: the default limit of 50, plus one to know there is more
BIG_TABLES = {"bags", "scans"}
# A keyset page may sort what an index hands it (one parent's children, one bag's scans, a QR prefix's
# matches), but never a whole area or table: this bounds every node's row estimate below the Limit.
MAX_SORTED_ROWS = 2_000
# Rows a page may read (returned + filtered out, index entries included) to answer: a constant, not a share
# of the table. The filtered pages read ~1/selectivity rows per row returned (10 areas, ~4% parents).
MAX_ROWS_TOUCHED = 2_000
SCAN_NODES = ("Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Index Scan", "Bitmap Heap Scan")


@dataclass(frozen=True)
class Sample:
    """Real values from the seeded data, so each query has something to find."""

    area: str
    username: str
    parent_qr: str
    parent_id: int
    child_qr: str
    middle_id: int
    qr_prefix: str
    old_child_prefix: str


def sample_values(engine: Engine) -> Sample:
    with engine.connect() as conn:
        area = conn.execute(text("SELECT dispatch_area FROM bags WHERE type = 'parent' ORDER BY id LIMIT 1")).scalar()
        parent_id, parent_qr = conn.execute(text(
            "SELECT id, qr_id FROM bags WHERE dispatch_area = :a AND type = 'parent' AND status = 'completed' "
            "ORDER BY id LIMIT 1 OFFSET 10"), {"a": area}).one()
        child_qr = conn.execute(text("SELECT qr_id FROM bags WHERE parent_id = :p ORDER BY id LIMIT 1"),
                                {"p": parent_id}).scalar()
        middle_id = conn.execute(text("SELECT (max(id) + min(id)) / 2 FROM bags WHERE dispatch_area = :a"),
                                 {"a": area}).scalar()
        oldest_child = conn.execute(text("SELECT qr_id FROM bags WHERE type = 'child' ORDER BY id LIMIT 1")).scalar()
    # SB000 (or M444-000): the QR less its last two digits, the 100 labels of one printed sheet.
    return Sample(area=area, username=f"disp_{area}", parent_qr=parent_qr, parent_id=parent_id, child_qr=child_qr,
                  middle_id=int(middle_id), qr_prefix=parent_qr[:-2], old_child_prefix=oldest_child[:6])


def service_queries(s: Sample) -> list[tuple[str, Select, int | None]]:
    """(name, statement, page size for keyset pages) of what the service runs, built by its repository."""
    return [
        ("lookup by QR (get_bag)", select(Bag).where(Bag.qr_id == s.child_qr), None),
        ("a parent's children QRs (lookup view)", select(Bag.qr_id).where(Bag.parent_id == s.parent_id)
         .order_by(Bag.id), None),
        ("lookup miss: a parent with its children (relatives_query)", repo.relatives_query(s.parent_qr), None),
        ("lookup miss: a child with its parent (relatives_query)", repo.relatives_query(s.child_qr), None),
        ("dispatcher's default bag page (area)", repo.bags_query(area=s.area, limit=PAGE), PAGE),
        ("dispatcher's next page (area, after_id)", repo.bags_query(area=s.area, after_id=s.middle_id, limit=PAGE),
         PAGE),
        ("parents in progress (type + status)", repo.bags_query(type_="parent", status="in_progress", limit=PAGE),
         PAGE),
        ("area's parents in progress (area + type + status)",
         repo.bags_query(area=s.area, type_="parent", status="in_progress", limit=PAGE), PAGE),
        ("area's empty parents (area + type + status)",
         repo.bags_query(area=s.area, type_="parent", status="pending", limit=PAGE), PAGE),
        ("QR prefix search (q=)", repo.bags_query(qr_prefix=s.qr_prefix, limit=PAGE), PAGE),
        ("QR prefix search in an area (q= + area)", repo.bags_query(area=s.area, qr_prefix=s.qr_prefix, limit=PAGE),
         PAGE),
        # What an admin or a dispatcher types first: one or two characters match nearly every bag.
        ("QR prefix search, broad (q=CB)", repo.bags_query(qr_prefix="CB", limit=PAGE), PAGE),
        ("QR prefix search, broad, in an area (q=CB + area)", repo.bags_query(area=s.area, qr_prefix="CB", limit=PAGE),
         PAGE),
        ("QR prefix search, next page (q=CB + after_qr)",
         repo.bags_query(area=s.area, qr_prefix="CB", after_qr=s.child_qr, limit=PAGE), PAGE),
        # The first labels printed were the first used: CB0000 matches the oldest ~0.5% of the bags.
        ("QR prefix search, oldest labels (q=CB0000)", repo.bags_query(qr_prefix=s.old_child_prefix, limit=PAGE), PAGE),
        ("children of a parent (parent_qr=)", repo.bags_query(area=s.area, parent_qr=s.parent_qr, limit=PAGE), PAGE),
        ("area's scan history", repo.scans_query(area=s.area, limit=PAGE), PAGE),
        ("scans of one bag (qr=)", repo.scans_query(area=s.area, qr=s.child_qr, limit=PAGE), PAGE),
        ("scans of one user (username=)", repo.scans_query(username=s.username, limit=PAGE), PAGE),
    ]


# Names of the queries, for test ids (building statements needs no database).
QUERY_NAMES = [name for name, _, _ in service_queries(Sample("lucknow", "disp_lucknow", "SB00001", 1, "CB00000001", 1,
                                                             "SB000", "CB0000"))]


def compile_sql(statement: Select) -> str:
    """The SQL PostgreSQL receives: psycopg2 interpolates parameters client-side, so literals are what it plans.

    A named paramstyle keeps `%` as it is (psycopg2's pyformat would double it for a later interpolation).
    """
    return str(statement.compile(dialect=postgresql.dialect(paramstyle="named"),
                                 compile_kwargs={"literal_binds": True}))


def plan_nodes(node: dict):
    yield node
    for child in node.get("Plans", ()):
        yield from plan_nodes(child)


def run_sql(engine: Engine, sql: str) -> list[tuple]:
    """Straight to the driver with no parameters, so nothing in the SQL is read as a placeholder."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute(sql)
        return cursor.fetchall()
    finally:
        raw.close()


def explain(engine: Engine, statement: Select) -> dict:
    """The analysed plan: the planner's estimates and what the executor really did."""
    return run_sql(engine, "EXPLAIN (ANALYZE, FORMAT JSON) " + compile_sql(statement))[0][0][0]["Plan"]


def rows_touched(nodes: list[dict]) -> int:
    """Rows (and index entries) the scans of an analysed plan produced or threw away, over all their loops."""
    return sum((n.get("Actual Rows", 0) + n.get("Rows Removed by Filter", 0) + n.get("Rows Removed by Index Recheck", 0))
               * n.get("Actual Loops", 1) for n in nodes if n["Node Type"] in SCAN_NODES)


@pytest.fixture(scope="module")
def scale_db():
    require_postgres()
    prefix = f"bt_test_scale_{os.getpid()}"
    drop_pg_databases(prefix)
    url = pg_database_url(f"{prefix}_scanning")
    upgrade("scanning", url)
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        report = seed(engine, bags=BAGS, days=90)  # seeding ends with VACUUM (ANALYZE)
        yield engine, report, sample_values(engine)
    finally:
        engine.dispose()
        drop_pg_databases(prefix)


def test_seeded_shape_is_realistic_and_consistent(scale_db):
    engine, report, _ = scale_db
    assert report.bags == report.scans == BAGS
    with engine.connect() as conn:
        counts = dict(conn.execute(text("SELECT type, count(*) FROM bags GROUP BY type")).all())
        wrong_counts = conn.execute(text(
            "SELECT count(*) FROM bags p WHERE p.type = 'parent' AND p.child_count <> "
            "(SELECT count(*) FROM bags c WHERE c.parent_id = p.id)")).scalar()
        full = conn.execute(text("SELECT count(*) FROM bags WHERE type = 'parent' AND child_count = capacity")).scalar()
        areas = conn.execute(text("SELECT count(DISTINCT dispatch_area) FROM bags")).scalar()
        scans = dict(conn.execute(text("SELECT kind, count(*) FROM scans GROUP BY kind")).all())
        next_ids = conn.execute(text("SELECT nextval(pg_get_serial_sequence('bags', 'id')), "
                                     "nextval(pg_get_serial_sequence('scans', 'id'))")).one()
    assert counts["parent"] + counts["child"] == BAGS
    assert abs(counts["parent"] - BAGS / 23.5) < BAGS / 23.5 * 0.05
    assert wrong_counts == 0
    assert 0.85 < full / counts["parent"] < 0.92
    assert areas == 10
    assert scans == {"parent": counts["parent"], "child": counts["child"]}
    assert next_ids == (BAGS + 1, BAGS + 1)  # the identity sequences were moved past the explicit ids


def test_seeding_a_non_empty_database_is_refused(scale_db):
    engine, _, _ = scale_db
    with pytest.raises(SeedRefused, match="not empty"):
        seed(engine, bags=10)


def test_seeding_sqlite_then_appending_keeps_every_count_true(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'scanning.db'}", poolclass=pool.NullPool)
    upgrade("scanning", str(engine.url))
    first = seed(engine, bags=600, areas=["jaipur", "akola"], days=3)
    more = seed(engine, bags=400, append=True, random_seed=7)
    with engine.connect() as conn:
        total, distinct_qrs = conn.execute(text("SELECT count(*), count(DISTINCT qr_id) FROM bags")).one()
        wrong_counts = conn.execute(text(
            "SELECT count(*) FROM bags p WHERE p.type = 'parent' AND p.child_count <> "
            "(SELECT count(*) FROM bags c WHERE c.parent_id = p.id)")).scalar()
        scans = conn.execute(text("SELECT count(*) FROM scans")).scalar()
    engine.dispose()
    assert (first.bags, more.bags) == (600, 400)
    assert total == distinct_qrs == scans == 1000
    assert wrong_counts == 0


@pytest.mark.parametrize("name", QUERY_NAMES)
def test_service_query_stays_on_an_index_and_reads_a_bounded_number_of_rows(scale_db, name):
    engine, _, sample = scale_db
    _, statement, page = next(q for q in service_queries(sample) if q[0] == name)
    plan = explain(engine, statement)
    nodes = list(plan_nodes(plan))
    shown = f"{name}\n{compile_sql(statement)}\n{json.dumps(plan, indent=1)}"
    seq = [n["Relation Name"] for n in nodes if n["Node Type"] == "Seq Scan" and n.get("Relation Name") in BIG_TABLES]
    assert not seq, f"sequential scan of {seq}: {shown}"
    if page:
        assert plan["Node Type"] == "Limit" and plan["Plan Rows"] <= page, f"not a bounded page: {shown}"
        # Anything that must consume its whole input before the Limit can answer (a sort, a hash, an
        # aggregate) is estimated to see a bounded number of rows, so the cost does not follow the table's size.
        blocking = [(n["Node Type"], n["Plans"][0]["Plan Rows"]) for n in nodes
                    if n["Node Type"] in ("Sort", "Incremental Sort", "Hash", "Aggregate") and n.get("Plans")]
        assert all(rows <= MAX_SORTED_ROWS for _, rows in blocking), f"unbounded {blocking}: {shown}"
    touched = rows_touched(nodes)
    assert touched <= MAX_ROWS_TOUCHED, f"read {touched:,} rows to answer: {shown}"


def write_statements(engine: Engine) -> dict[str, tuple]:
    """The scan writes (one statement each on PostgreSQL) with values that make each really write."""
    with engine.connect() as conn:
        parent, area = conn.execute(text("SELECT qr_id, dispatch_area FROM bags WHERE type = 'parent' "
                                         "AND status = 'in_progress' ORDER BY id LIMIT 1")).one()
        child = conn.execute(text("SELECT c.qr_id FROM bags c JOIN bags p ON p.id = c.parent_id "
                                  "WHERE p.qr_id = :p LIMIT 1"), {"p": parent}).scalar()
    who = dict(user_id=1, username="plan-check", idem_user=1, idem_key="plan-check", idem_fingerprint="f" * 64)
    return {
        "parent scan (known parent)": (scan_sql.PARENT_SCAN, dict(qr=parent, capacity=30, new_area=area, area=area, **who)),
        "child scan (new child)": (scan_sql.CHILD_SCAN, dict(parent_qr=parent, child_qr="PLANCHECK01", area=area, **who)),
        "unlink": (scan_sql.UNLINK, dict(parent_qr=parent, child_qr=child, area=None, own_only=False, window=3600.0,
                                         **who)),
    }


@pytest.mark.parametrize("name", ["parent scan (known parent)", "child scan (new child)", "unlink"])
def test_scan_write_statement_stays_on_indexes(scale_db, name):
    """Each write's statement, analysed for real inside a transaction that is then rolled back."""
    engine, _, _ = scale_db
    statement, values = write_statements(engine)[name]
    compiled = statement.compile(dialect=postgresql.psycopg2.dialect())
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + str(compiled), compiled.construct_params(values))
        plan = cursor.fetchall()[0][0][0]["Plan"]
    finally:
        raw.rollback()
        raw.close()
    nodes = list(plan_nodes(plan))
    shown = f"{name}\n{json.dumps(plan, indent=1)}"
    seq = [n["Relation Name"] for n in nodes if n["Node Type"] == "Seq Scan" and n.get("Relation Name") in BIG_TABLES]
    assert not seq, f"sequential scan of {seq}: {shown}"
    assert any(n["Node Type"] == "ModifyTable" for n in nodes), f"wrote nothing: {shown}"
    assert rows_touched(nodes) <= 200, f"read {rows_touched(nodes):,} rows to write one scan: {shown}"


def test_the_reconcilers_recent_marks_are_read_off_the_partial_index(scale_db):
    """Every parent billed, over the seeded 90 days (in a transaction rolled back after): a day's window of marks,
    as billing's reconciler asks for it, reads only that day's marks off ix_bags_billed_at."""
    engine, _, _ = scale_db
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("UPDATE bags SET bill_id = 'BILL_' || (id % 500), billed_at = created_at WHERE type = 'parent'")
        cursor.execute("ANALYZE bags")
        cursor.execute("SELECT max(billed_at) - interval '1 day' FROM bags")
        statement = repo.marks_query(limit=501, billed_after=cursor.fetchone()[0])
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + compile_sql(statement))
        plan = cursor.fetchall()[0][0][0]["Plan"]
    finally:
        raw.rollback()
        raw.close()
    nodes = list(plan_nodes(plan))
    shown = f"{compile_sql(statement)}\n{json.dumps(plan, indent=1)}"
    assert any(n.get("Index Name") == "ix_bags_billed_at" for n in nodes), f"not on the partial index: {shown}"
    assert not [n for n in nodes if n["Node Type"] == "Seq Scan"], f"sequential scan: {shown}"
    assert 0 < plan["Actual Rows"] and rows_touched(nodes) <= 200, f"read {rows_touched(nodes):,} rows: {shown}"
