"""tallies: the dashboard's counts kept by the database (shared.tally), and bags.completed_at

bags.completed_at is when a parent last became completed (NULL while it is not), kept by a trigger so every
writer — the scan statements, COPY, a hand-written UPDATE — keeps it: on PostgreSQL a BEFORE trigger sets it
in the row being written; SQLite cannot change the row in flight, so an AFTER trigger updates it (the tally's
own trigger sees that update like any other). Existing completed parents take their updated_at: the last
write to a completed parent is the child that completed it.

The backfill is shared.tally's recount: one GROUP BY per counted term over bags and scans.

Revision ID: 0004
"""
import sqlalchemy as sa
from alembic import op

from services.scanning.config import Settings
from services.scanning.models import TALLY
from shared import tally

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# The row's own values on INSERT (a bulk load says when it was completed through updated_at); the transaction's
# time on UPDATE (each scan statement sets updated_at = now() too).
PG_COMPLETED_AT = """
CREATE OR REPLACE FUNCTION bags_completed_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.completed_at := COALESCE(NEW.completed_at, NEW.updated_at, now());
    ELSE
        NEW.completed_at := CASE WHEN NEW.status = 'completed' THEN now() END;
    END IF;
    RETURN NEW;
END
$$"""
PG_TRIGGERS = (
    "CREATE TRIGGER bags_completed_at_insert BEFORE INSERT ON bags FOR EACH ROW "
    "WHEN (NEW.type = 'parent' AND NEW.status = 'completed' AND NEW.completed_at IS NULL) "
    "EXECUTE FUNCTION bags_completed_at()",
    "CREATE TRIGGER bags_completed_at_update BEFORE UPDATE OF status ON bags FOR EACH ROW "
    "WHEN (NEW.type = 'parent' AND NEW.status IS DISTINCT FROM OLD.status) EXECUTE FUNCTION bags_completed_at()",
)
# SQLAlchemy's own text format for a UTC moment on SQLite ("2026-03-01 12:00:00.123000").
SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%S', 'now') || substr(strftime('%f', 'now'), 3) || '000'"
SQLITE_TRIGGERS = (
    "CREATE TRIGGER bags_completed_at_insert AFTER INSERT ON bags FOR EACH ROW "
    "WHEN NEW.type = 'parent' AND NEW.status = 'completed' AND NEW.completed_at IS NULL BEGIN "
    f"UPDATE bags SET completed_at = COALESCE(NEW.updated_at, {SQLITE_NOW}) WHERE id = NEW.id; END",
    "CREATE TRIGGER bags_completed_at_update AFTER UPDATE OF status ON bags FOR EACH ROW "
    "WHEN NEW.type = 'parent' AND NEW.status IS NOT OLD.status BEGIN "
    f"UPDATE bags SET completed_at = CASE WHEN NEW.status = 'completed' THEN {SQLITE_NOW} END WHERE id = NEW.id; END",
)


def upgrade() -> None:
    bind = op.get_bind()
    pg = bind.dialect.name == "postgresql"
    op.add_column("bags", sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE bags SET completed_at = updated_at WHERE type = 'parent' AND status = 'completed'")
    if pg:
        bind.exec_driver_sql(PG_COMPLETED_AT)
    for statement in PG_TRIGGERS if pg else SQLITE_TRIGGERS:
        bind.exec_driver_sql(statement)
    tally.create_tables(op)
    TALLY.install(bind)
    TALLY.recount(bind, Settings().zone)


def downgrade() -> None:
    bind = op.get_bind()
    pg = bind.dialect.name == "postgresql"
    TALLY.uninstall(bind)
    tally.drop_tables(op)
    for name in ("bags_completed_at_insert", "bags_completed_at_update"):
        bind.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}" + (" ON bags" if pg else ""))
    if pg:
        bind.exec_driver_sql("DROP FUNCTION IF EXISTS bags_completed_at()")
    with op.batch_alter_table("bags") as batch:
        batch.drop_column("completed_at")
