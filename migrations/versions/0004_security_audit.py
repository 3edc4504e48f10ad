"""security_audit: every log-in lock and unlock (issue 12, item 6)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 09:45:00
"""

import sqlalchemy as sa
from alembic import op

import core.db

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'security_audit',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('at', core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('action', sa.String(length=16), nullable=False),
        sa.Column('subject_kind', sa.String(length=16), nullable=False),
        sa.Column('subject', sa.String(length=128), nullable=False),
        sa.Column('actor', sa.String(length=64), nullable=True),
        sa.Column('address', sa.String(length=64), nullable=True),
        sa.Column('detail', sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_security_audit')),
    )
    op.create_index(op.f('ix_security_audit_at'), 'security_audit', ['at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_security_audit_at'), table_name='security_audit')
    op.drop_table('security_audit')
