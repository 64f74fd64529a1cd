"""Query plans at scale: every read billing runs stays on an index as bills, their parents and their history grow.

PostgreSQL only. A fresh billing database gets 50,000 bills (the shape scripts/seed_bills.py gives: mostly
completed, five creators, 90 days, a few destinations and vehicles), 60,000 parent rows and 150,000 history rows
by SQL, is analysed, and each query is built by services/billing/repository.py as the service builds it, then
EXPLAIN ANALYZEd (helpers shared with tests/scanning/test_scale.py): no sequential scan of a big table, and the rows
a page touches are bounded.
"""
from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest

from services.billing import repository as repo
from tests.scanning.test_scale import explain, plan_nodes, rows_touched
from tests.support import seeded_pg_database

BILLS, PAGE = 50_000, 51
BIG_TABLES = {"bills", "bill_parents", "bill_events"}
MAX_ROWS_TOUCHED = 2_000
# A text search that matches a tenth of all bills (a vehicle prefix) may read its matches off the trigram index and
# sort them; it must still never read the table.
MAX_SEARCH_ROWS = 10_000
NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)

SEED = f"""
INSERT INTO bills (id, bill_id, bill_key, description, destination, vehicle_number, capacity, status, linked_count,
                   expected_weight_kg, actual_weight_kg, created_by, created_at, updated_at)
SELECT n, code, code,
       CASE WHEN n % 7 = 0 THEN 'fragile load ' || n ELSE NULL END,
       (ARRAY['Delhi hub', 'Jaipur', 'Lucknow depot', 'Indore', 'Raipur'])[1 + n % 5],
       'RJ' || lpad((n % 40)::text, 2, '0') || ' ' || lpad((n % 9973)::text, 4, '0'),
       2, status, CASE WHEN status = 'new' THEN 0 ELSE 1 END, 30, 30, 'biller_' || (1 + n % 5), at, at
FROM (SELECT n, 'BILL_' || to_char(at, 'YYYYMMDD') || '_' || lpad(n::text, 6, '0') AS code, at,
             CASE WHEN n % 50 = 0 THEN 'new' WHEN n % 20 = 0 THEN 'processing' ELSE 'completed' END AS status
      FROM (SELECT n, TIMESTAMPTZ '{NOW.isoformat()}' - interval '90 days' * (1 - n::float / {BILLS}) AS at
            FROM generate_series(1, {BILLS}) AS n) AS t) AS b;
INSERT INTO bill_parents (id, bill_pk, parent_qr, state, capacity, child_count, added_by, added_at)
SELECT n, 1 + n % {BILLS}, 'SB' || lpad(n::text, 6, '0'), 'active', 30, 30, 'biller_1', now()
FROM generate_series(1, 60000) AS n;
INSERT INTO bill_events (id, bill_pk, bill_id, kind, username, created_at)
SELECT n, 1 + n % {BILLS}, 'X_' || n, (ARRAY['create', 'add', 'complete'])[1 + n % 3], 'biller_1', now()
FROM generate_series(1, 150000) AS n;
"""


@pytest.fixture(scope="module")
def billing_db():
    yield from seeded_pg_database(f"bt_test_billscale_{os.getpid()}", "billing", SEED)


def queries():
    day = NOW - timedelta(days=30)
    return [
        ("a bill by code (get_bill)", repo.bill_query("BILL_20261029_025000"), MAX_ROWS_TOUCHED),
        ("a bill's parents", repo.parents_query(25_000), MAX_ROWS_TOUCHED),
        ("the bill holding a parent", repo.holder_query("SB030000"), MAX_ROWS_TOUCHED),
        ("a bill's history", repo.history_query(25_000, limit=PAGE), MAX_ROWS_TOUCHED),
        ("the first page of bills", repo.bills_query(limit=PAGE), MAX_ROWS_TOUCHED),
        ("a later page of bills", repo.bills_query(before_id=20_000, limit=PAGE), MAX_ROWS_TOUCHED),
        ("new bills (rare status)", repo.bills_query(status="new", limit=PAGE), MAX_ROWS_TOUCHED),
        ("bills in progress", repo.bills_query(status="processing", limit=PAGE), MAX_ROWS_TOUCHED),
        ("one creator's bills", repo.bills_query(created_by="biller_3", limit=PAGE), MAX_ROWS_TOUCHED),
        ("one day's bills", repo.bills_query(created_from=day, created_to=day + timedelta(days=1), limit=PAGE),
         MAX_ROWS_TOUCHED),
        ("search a code fragment (q=)", repo.bills_query(q="_025000", limit=PAGE), MAX_ROWS_TOUCHED),
        ("search a vehicle (q=)", repo.bills_query(q="rj07", limit=PAGE), MAX_SEARCH_ROWS),
        ("search a description word (q=)", repo.bills_query(q="fragile", limit=PAGE), MAX_SEARCH_ROWS),
        ("search a destination, in progress (q= + status)", repo.bills_query(q="lucknow", status="processing",
                                                                             limit=PAGE), MAX_SEARCH_ROWS),
        ("one day's summary", repo.summary_query(day, day + timedelta(days=1)), MAX_ROWS_TOUCHED),
    ]


@pytest.mark.parametrize("name", [name for name, _, _ in queries()])
def test_every_billing_read_stays_on_an_index(billing_db, name):
    statement, bound = next((s, b) for n, s, b in queries() if n == name)
    plan = explain(billing_db, statement)
    nodes = list(plan_nodes(plan))
    seq = [n for n in nodes if n["Node Type"] == "Seq Scan" and n.get("Relation Name") in BIG_TABLES]
    assert not seq, f"{name}: sequential scan of {[n['Relation Name'] for n in seq]}"
    touched = rows_touched(nodes)
    assert touched <= bound, f"{name}: touched {touched} rows"
