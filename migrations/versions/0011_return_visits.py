"""回访: the return visit's result and satisfaction on the ticket (issue 16 item 4)

GB/T 33358-2016 asks for 回访结果 in the 工单. The visit tasks themselves are rows of
``callback_requests`` with ``source = 'visit'`` and the ticket's number (the once-only outbound-call
machinery of the callbacks), so the ticket gains columns and the tasks an index on their ticket.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 16:20:00
"""

import sqlalchemy as sa
from alembic import op

import core.db

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tickets') as batch:
        batch.add_column(sa.Column('visit_result', sa.Text(), nullable=True))
        batch.add_column(sa.Column('visit_satisfaction', sa.String(length=16), nullable=True))
        batch.add_column(sa.Column('visited_at', core.db.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('visited_by_name', sa.String(length=64), nullable=True))
    op.create_index('ix_callback_requests_ticket_number', 'callback_requests', ['ticket_number'])


def downgrade() -> None:
    op.drop_index('ix_callback_requests_ticket_number', table_name='callback_requests')
    # In place, never by batch mode's copy of the table: on SQLite that copy drops and recreates
    # ``tickets``, and ON DELETE CASCADE empties every table pointing at it (ticket_calls, evidence).
    for name in ('visited_by_name', 'visited_at', 'visit_satisfaction', 'visit_result'):
        if op.get_bind().dialect.name == 'sqlite':
            op.execute(f'ALTER TABLE tickets DROP COLUMN {name}')  # SQLite >= 3.35
        else:
            op.drop_column('tickets', name)
