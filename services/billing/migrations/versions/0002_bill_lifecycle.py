"""bill lifecycle: counts and weights on bills, pending/active parents, history, day counters, mark outbox,
idempotency keys, and (PostgreSQL) a trigram index for text search

Revision ID: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# What GET /bills?q= searches (services/billing/repository.py builds the same expression).
SEARCH_EXPRESSION = ("lower(bill_key || ' ' || coalesce(description, '') || ' ' || coalesce(destination, '') || ' ' "
                     "|| coalesce(vehicle_number, ''))")


def upgrade() -> None:
    with op.batch_alter_table("bills") as bills:
        bills.add_column(sa.Column("linked_count", sa.Integer, nullable=False, server_default="0"))
        bills.add_column(sa.Column("expected_weight_kg", sa.Integer, nullable=False, server_default="0"))
        bills.add_column(sa.Column("actual_weight_kg", sa.Integer, nullable=False, server_default="0"))
        bills.add_column(sa.Column("counted_at", sa.DateTime(timezone=True), nullable=True))
        bills.add_column(sa.Column("created_by_id", sa.Integer, nullable=True))
        bills.add_column(sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True))
        bills.create_check_constraint("ck_bills_linked", "linked_count BETWEEN 0 AND capacity")
    op.create_index("ix_bills_status_id", "bills", ["status", "id"])
    op.create_index("ix_bills_created_by_id", "bills", ["created_by", "id"])
    # A row's id is the link scanning's mark carries, so it must never be handed out twice: SQLite reuses the
    # highest rowid once it is deleted unless the table is AUTOINCREMENT (PostgreSQL's sequence never does).
    with op.batch_alter_table("bill_parents", table_kwargs={"sqlite_autoincrement": True}) as parents:
        parents.add_column(sa.Column("state", sa.String(8), nullable=False, server_default="active"))
        parents.create_check_constraint("ck_bill_parents_state", "state IN ('pending', 'active')")
    op.create_index("ix_bill_parents_state_added_at", "bill_parents", ["state", "added_at"])
    op.create_table(
        "bill_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("bill_pk", sa.Integer, nullable=False),
        sa.Column("bill_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(12), nullable=False),
        sa.Column("parent_qr", sa.String(32), nullable=True),
        sa.Column("detail", sa.Text, nullable=True),
        sa.Column("user_id", sa.Integer, nullable=True),
        sa.Column("username", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("kind IN ('create', 'add', 'remove', 'complete', 'reopen', 'edit', 'delete')",
                           name="ck_bill_events_kind"),
    )
    op.create_index("ix_bill_events_bill_pk_id", "bill_events", ["bill_pk", "id"])
    op.create_index("ix_bill_events_created_at", "bill_events", ["created_at"])
    op.create_table(
        "bill_day_counters",
        sa.Column("day", sa.String(8), primary_key=True),
        sa.Column("last", sa.Integer, nullable=False),
    )
    op.create_table(
        "mark_outbox",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("parent_qr", sa.String(32), nullable=False),
        sa.Column("bill_id", sa.String(32), nullable=False),
        sa.Column("link", sa.Integer, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("last_error", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_mark_outbox_next_attempt_at", "mark_outbox", ["next_attempt_at"])
    op.create_table(
        "idempotent_requests",
        sa.Column("user_id", sa.Integer, primary_key=True),
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("status_code", sa.SmallInteger, nullable=False),
        sa.Column("response", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_idempotent_requests_created_at", "idempotent_requests", ["created_at"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute(f"CREATE INDEX ix_bills_search ON bills USING gin (({SEARCH_EXPRESSION}) gin_trgm_ops)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_bills_search")
    for table in ("idempotent_requests", "mark_outbox", "bill_day_counters", "bill_events"):
        op.drop_table(table)
    op.drop_index("ix_bill_parents_state_added_at", "bill_parents")
    with op.batch_alter_table("bill_parents") as parents:
        parents.drop_constraint("ck_bill_parents_state", type_="check")
        parents.drop_column("state")
    op.drop_index("ix_bills_created_by_id", "bills")
    op.drop_index("ix_bills_status_id", "bills")
    with op.batch_alter_table("bills") as bills:
        bills.drop_constraint("ck_bills_linked", type_="check")
        for column in ("completed_at", "created_by_id", "counted_at", "actual_weight_kg", "expected_weight_kg",
                       "linked_count"):
            bills.drop_column(column)
