"""bags.bill_id, bags.bill_link, bags.billed_at: billing marks a parent before it commits a bill row holding it, and a marked
parent is never deleted (services/scanning/marks.py). An expand-only change: both columns are NULL for every bag.

Revision ID: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Batch mode (SQLite, shared.migrate) recreates the table to add the CHECK; PostgreSQL alters it in place.
    with op.batch_alter_table("bags") as batch:
        batch.add_column(sa.Column("bill_id", sa.String(40), nullable=True))
        # The id of billing's row holding the parent: each clear names the link it undoes, so a late clear never
        # removes a later mark of the same parent (services/billing/marks.py).
        batch.add_column(sa.Column("bill_link", sa.BigInteger().with_variant(sa.Integer, "sqlite"), nullable=True))
        batch.add_column(sa.Column("billed_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_check_constraint("ck_bags_only_parents_are_billed", "type = 'parent' OR bill_id IS NULL")
    # Billing's reconciler lists the marks set within a time window; only marked parents are in this index.
    op.create_index("ix_bags_billed_at", "bags", ["billed_at"], postgresql_where=sa.text("bill_id IS NOT NULL"),
                    sqlite_where=sa.text("bill_id IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ix_bags_billed_at", table_name="bags")
    with op.batch_alter_table("bags") as batch:
        batch.drop_constraint("ck_bags_only_parents_are_billed", type_="check")
        batch.drop_column("billed_at")
        batch.drop_column("bill_link")
        batch.drop_column("bill_id")
