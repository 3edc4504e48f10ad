"""closing review levels and proposer, 移交 tracking, intake from other platforms

Issue 15 items 5-7: ``review_level``/``review_levels`` count the 逐级审核 steps of a closing (001 §6.3)
and ``review_proposed_by_id`` keeps the proposer from approving it; ``handover_*`` hold the receiving
authority, its deadline (004 §6.3.5.1) and result; ``external_*`` the other platform (e.g. 12345) a
ticket came from, its reference and its reply deadline (001 §6.2).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 13:00:00
"""

import sqlalchemy as sa
from alembic import op

from core.db import UTCDateTime

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

COLUMNS = (
    ('review_level', lambda: sa.Column('review_level', sa.Integer(), nullable=False, server_default='0')),
    ('review_levels', lambda: sa.Column('review_levels', sa.Integer(), nullable=False, server_default='1')),
    ('review_proposed_by_id', lambda: sa.Column('review_proposed_by_id', sa.Integer(), nullable=True)),
    ('handover_authority', lambda: sa.Column('handover_authority', sa.String(length=100), nullable=True)),
    ('handover_due', lambda: sa.Column('handover_due', sa.Date(), nullable=True)),
    ('handover_result', lambda: sa.Column('handover_result', sa.Text(), nullable=True)),
    ('handover_result_at', lambda: sa.Column('handover_result_at', UTCDateTime(timezone=True), nullable=True)),
    ('external_platform', lambda: sa.Column('external_platform', sa.String(length=32), nullable=True)),
    ('external_ref', lambda: sa.Column('external_ref', sa.String(length=64), nullable=True)),
    ('external_reply_due', lambda: sa.Column('external_reply_due', sa.Date(), nullable=True)),
)


def upgrade() -> None:
    # tickets is referenced by other tables: columns are added in place (no batch rebuild on SQLite).
    for _, column in COLUMNS:
        op.add_column('tickets', column())
    # SQLite can add no constraint to an existing table without rebuilding it (which the tables referencing
    # tickets forbid): there the model's foreign key is not declared, as for other in-place columns.
    if op.get_bind().dialect.name != 'sqlite':
        op.create_foreign_key('fk_tickets_review_proposed_by_id_users', 'tickets', 'users',
                              ['review_proposed_by_id'], ['id'])
    op.create_index('ix_tickets_handover_due', 'tickets', ['handover_due'])
    op.create_index('ix_tickets_external_reply_due', 'tickets', ['external_reply_due'])


def downgrade() -> None:
    op.drop_index('ix_tickets_external_reply_due', table_name='tickets')
    op.drop_index('ix_tickets_handover_due', table_name='tickets')
    sqlite = op.get_bind().dialect.name == 'sqlite'
    if not sqlite:
        op.drop_constraint('fk_tickets_review_proposed_by_id_users', 'tickets', type_='foreignkey')
    for name, _ in reversed(COLUMNS):
        if sqlite:
            op.execute(f'ALTER TABLE tickets DROP COLUMN {name}')  # in place (SQLite >= 3.35)
        else:
            op.drop_column('tickets', name)
