"""report_ticket_days, report_call_waits: finished days' ticket rows and answered calls' waits for the
service-quality report (issue 16, report bench); a stamp per stored day, by which a process keeps the days
it has read

Written by the report (quality.kpi_sql), deleted by any change of a ticket registered that day, a 移交 step
or a 回访 task made or removed (the ORM flush hook tickets.models.forget_ticket_days), and by any change of an
old call (core.calls.forget_call_days). Start empty: the first report of a period computes and stores its days.

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
    for table in ('report_ticket_days', 'report_call_waits'):
        op.create_table(
            table,
            sa.Column('id', sa.Integer(), primary_key=True),
            sa.Column('hotline', sa.String(16), nullable=False),
            sa.Column('variant', sa.String(64), nullable=False),
            sa.Column('day', sa.Date(), nullable=False),
            sa.Column('lo', UTCDateTime(), nullable=False),
            sa.Column('hi', UTCDateTime(), nullable=False),
            sa.Column('groups', sa.JSON(), nullable=False),
            sa.Column('stamp', sa.String(32), nullable=False),
        )
        op.create_index(f'uq_{table}_key', table, ['hotline', 'variant', 'lo', 'hi'], unique=True)
        op.create_index(f'ix_{table}_lo', table, ['lo'])
        op.create_index(f'ix_{table}_stamp', table, ['stamp'], unique=True)
    # The stored call days are a cache the next report makes again: emptied rather than given made-up stamps.
    op.execute("DELETE FROM report_call_days")
    op.add_column('report_call_days', sa.Column('stamp', sa.String(32), nullable=False, server_default=''))
    op.create_index('ix_report_call_days_stamp', 'report_call_days', ['stamp'], unique=True)


def downgrade() -> None:
    op.drop_index('ix_report_call_days_stamp', 'report_call_days')
    with op.batch_alter_table('report_call_days') as batch:
        batch.drop_column('stamp')
    op.drop_table('report_call_waits')
    op.drop_table('report_ticket_days')
