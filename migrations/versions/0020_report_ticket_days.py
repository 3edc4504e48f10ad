"""report_ticket_days: finished days' ticket rows for the service-quality report (issue 16, report bench)

Written by the report (quality.kpi_sql.ticket_groups), deleted by any change of a ticket registered that day,
a 移交 step or a 回访 task made or removed (the ORM flush hook tickets.models.forget_ticket_days). Starts
empty: the first report of a period computes and stores its days.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-02 05:10:00
"""

import sqlalchemy as sa
from alembic import op

from core.db import UTCDateTime

revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'report_ticket_days',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('hotline', sa.String(16), nullable=False),
        sa.Column('variant', sa.String(64), nullable=False),
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('lo', UTCDateTime(), nullable=False),
        sa.Column('hi', UTCDateTime(), nullable=False),
        sa.Column('groups', sa.JSON(), nullable=False),
    )
    op.create_index('uq_report_ticket_days_key', 'report_ticket_days', ['hotline', 'variant', 'lo', 'hi'], unique=True)
    op.create_index('ix_report_ticket_days_lo', 'report_ticket_days', ['lo'])


def downgrade() -> None:
    op.drop_table('report_ticket_days')
