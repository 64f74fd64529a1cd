"""tallies: the dashboard's counts of bills kept by the database (shared.tally), backfilled by its recount

Revision ID: 0003
"""
from alembic import op

from services.billing.config import Settings
from services.billing.models import TALLY
from shared import tally

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    tally.create_tables(op)
    TALLY.install(op.get_bind())
    TALLY.recount(op.get_bind(), Settings().zone)


def downgrade() -> None:
    TALLY.uninstall(op.get_bind())
    tally.drop_tables(op)
