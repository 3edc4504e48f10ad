"""漏接电话回拨: missed calls become callback tasks, one per number and local day

Issue 16 item 5: ``callback_requests.missed_day`` (the local date of the missed call, set for
``source = 'missed'`` only) with a unique index on (number, missed_day).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 13:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('callback_requests', sa.Column('missed_day', sa.String(length=10), nullable=True))
    op.create_index('uq_callback_requests_missed_day', 'callback_requests', ['number', 'missed_day'], unique=True)


def downgrade() -> None:
    op.drop_index('uq_callback_requests_missed_day', table_name='callback_requests')
    op.drop_column('callback_requests', 'missed_day')
