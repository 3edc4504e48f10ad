"""call_records.started_at index: the day's calls (wallboard, the alert watcher) read as a range

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01 22:40:00
"""

from alembic import op

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_call_records_started', 'call_records', ['started_at'])


def downgrade() -> None:
    op.drop_index('ix_call_records_started', table_name='call_records')
