"""report_call_days: finished days' call tallies for the service-quality report (issue 16, report bench)

Written by the report (quality.kpi_sql.tally), deleted by any change of a call of that day (the ORM flush
hook core.calls.forget_call_days). Starts empty: the first report of a period computes and stores its days.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-02 02:30:00
"""

import sqlalchemy as sa
from alembic import op

from core.db import UTCDateTime

revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'report_call_days',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('hotline', sa.String(16), nullable=False),
        sa.Column('variant', sa.String(64), nullable=False),
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('lo', UTCDateTime(), nullable=False),
        sa.Column('hi', UTCDateTime(), nullable=False),
        sa.Column('groups', sa.JSON(), nullable=False),
    )
    op.create_index('uq_report_call_days_key', 'report_call_days', ['hotline', 'variant', 'lo', 'hi'], unique=True)
    op.create_index('ix_report_call_days_lo', 'report_call_days', ['lo'])


def downgrade() -> None:
    op.drop_table('report_call_days')
