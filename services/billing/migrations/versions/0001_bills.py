"""bills and bill_parents

Revision ID: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bills",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("bill_id", sa.String(32), nullable=False),
        sa.Column("bill_key", sa.String(32), nullable=False, unique=True),
        sa.Column("description", sa.String(500), nullable=True),
        sa.Column("destination", sa.String(200), nullable=True),
        sa.Column("vehicle_number", sa.String(32), nullable=True),
        sa.Column("capacity", sa.SmallInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_by", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("capacity BETWEEN 1 AND 500", name="ck_bills_capacity"),
        sa.CheckConstraint("status IN ('new', 'processing', 'completed')", name="ck_bills_status"),
    )
    op.create_index("ix_bills_created_at", "bills", ["created_at"])
    op.create_table(
        "bill_parents",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("bill_pk", sa.Integer, sa.ForeignKey("bills.id", ondelete="CASCADE"), nullable=False),
        # One bill per parent, enforced here rather than only in code.
        sa.Column("parent_qr", sa.String(32), nullable=False, unique=True),
        sa.Column("capacity", sa.SmallInteger, nullable=False),
        sa.Column("child_count", sa.Integer, nullable=False),
        sa.Column("added_by", sa.String(32), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_bill_parents_bill_pk", "bill_parents", ["bill_pk"])


def downgrade() -> None:
    op.drop_table("bill_parents")
    op.drop_table("bills")
