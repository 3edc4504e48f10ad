"""admin_changes: the administration audit log (issue 17 item 4)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 19:40:00
"""

import sqlalchemy as sa
from alembic import op

import core.db

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'admin_changes',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('at', core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('actor_id', sa.Integer(), nullable=True),
        sa.Column('actor', sa.String(length=64), nullable=False),
        sa.Column('address', sa.String(length=64), nullable=True),
        sa.Column('entity', sa.String(length=32), nullable=False),
        sa.Column('entity_id', sa.String(length=128), nullable=False),
        sa.Column('action', sa.String(length=32), nullable=False),
        sa.Column('before', sa.Text(), nullable=True),
        sa.Column('after', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['actor_id'], ['users.id'], name=op.f('fk_admin_changes_actor_id_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_admin_changes')),
    )
    for column in ('at', 'actor_id', 'actor', 'entity', 'entity_id'):
        op.create_index(op.f(f'ix_admin_changes_{column}'), 'admin_changes', [column], unique=False)


def downgrade() -> None:
    for column in ('at', 'actor_id', 'actor', 'entity', 'entity_id'):
        op.drop_index(op.f(f'ix_admin_changes_{column}'), table_name='admin_changes')
    op.drop_table('admin_changes')
