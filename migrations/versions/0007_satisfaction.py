"""一次一评: the post-call satisfaction grade on call records and tickets

Issue 16 item 3: ``call_records.satisfaction`` (core.satisfaction grades, ``unrated`` = 未评价),
``satisfaction_at``, ``survey_started_at`` (the agent hung up first; talk time ends there) and
``tickets.call_satisfaction`` (the grade of the call the ticket came from).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 13:00:00
"""

import sqlalchemy as sa
from alembic import op

from core.db import UTCDateTime

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Added in place (no batch rebuild): call_records and tickets are referenced by live foreign keys.
    op.add_column('call_records', sa.Column('satisfaction', sa.String(length=16), nullable=True))
    op.add_column('call_records', sa.Column('satisfaction_at', UTCDateTime(), nullable=True))
    op.add_column('call_records', sa.Column('survey_started_at', UTCDateTime(), nullable=True))
    op.add_column('tickets', sa.Column('call_satisfaction', sa.String(length=16), nullable=True))


def downgrade() -> None:
    # SQLite 3.35+ drops a column in place: no table rebuild under the foreign keys.
    op.drop_column('tickets', 'call_satisfaction')
    for column in ('survey_started_at', 'satisfaction_at', 'satisfaction'):
        op.drop_column('call_records', column)
