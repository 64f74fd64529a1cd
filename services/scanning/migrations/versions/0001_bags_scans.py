"""bags, scans, idempotent_requests

Revision ID: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    is_pg = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "bags",
        sa.Column("id", BigId, sa.Identity() if is_pg else None, primary_key=True),
        # Byte-order collation on PostgreSQL: QRs are upper-case ASCII, and with "C" one plain btree index
        # serves equality, `LIKE 'SB12%'` prefix search *and* ORDER BY qr_id (text_pattern_ops cannot sort).
        sa.Column("qr_id", sa.String(32, collation="C") if is_pg else sa.String(32), nullable=False),
        sa.Column("type", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("dispatch_area", sa.String(64), nullable=False),
        sa.Column("capacity", sa.SmallInteger, nullable=True),
        sa.Column("child_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("parent_id", BigId, sa.ForeignKey("bags.id", ondelete="RESTRICT"), nullable=True),
        sa.Column("linked_by", sa.Integer, nullable=True),
        sa.Column("linked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("type IN ('parent', 'child')", name="ck_bags_type"),
        sa.CheckConstraint("status IN ('pending', 'in_progress', 'completed')", name="ck_bags_status"),
        sa.CheckConstraint("type = 'child' OR parent_id IS NULL", name="ck_bags_only_children_have_parents"),
        sa.CheckConstraint("child_count >= 0 AND child_count <= COALESCE(capacity, 0)", name="ck_bags_capacity"),
    )
    op.create_index("uq_bags_qr_id", "bags", ["qr_id"], unique=True)
    op.create_index("ix_bags_parent_id", "bags", ["parent_id"])
    op.create_index("ix_bags_area_id", "bags", ["dispatch_area", "id"])
    op.create_index("ix_bags_type_status_id", "bags", ["type", "status", "id"])
    op.create_index("ix_bags_created_at", "bags", ["created_at"])

    op.create_table(
        "scans",
        sa.Column("id", BigId, sa.Identity() if is_pg else None, primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("parent_qr", sa.String(32), nullable=False),
        sa.Column("child_qr", sa.String(32), nullable=True),
        sa.Column("dispatch_area", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("username", sa.String(32), nullable=False),
        sa.Column("repeat", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("kind IN ('parent', 'child', 'unlink')", name="ck_scans_kind"),
    )
    op.create_index("ix_scans_area_id", "scans", ["dispatch_area", "id"])
    op.create_index("ix_scans_parent_qr_id", "scans", ["parent_qr", "id"])
    op.create_index("ix_scans_child_qr_id", "scans", ["child_qr", "id"])
    op.create_index("ix_scans_username_id", "scans", ["username", "id"])
    op.create_index("ix_scans_created_at", "scans", ["created_at"])

    op.create_table(
        "idempotent_requests",
        sa.Column("user_id", sa.Integer, primary_key=True),
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("status_code", sa.SmallInteger, nullable=False),
        sa.Column("response", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_idempotent_requests_created_at", "idempotent_requests", ["created_at"])


def downgrade() -> None:
    op.drop_table("idempotent_requests")
    op.drop_table("scans")
    op.drop_table("bags")
