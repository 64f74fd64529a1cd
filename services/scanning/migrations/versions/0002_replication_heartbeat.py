"""replication_heartbeat: the row shared.db.Database.watch_replica writes on the primary and reads on the
replica to measure the replica's lag (one row per service; an expand-only change).

Revision ID: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "replication_heartbeat",
        sa.Column("source", sa.String(64), primary_key=True),
        sa.Column("beat_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("replication_heartbeat")
