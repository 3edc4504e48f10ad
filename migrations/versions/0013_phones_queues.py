"""Phones (PJSIP endpoints) and queues in the database (issue 17 items 1 and 2)

Asterisk's pjsip.conf and queues.conf are rendered from these tables (core/provisioning.py) and
reloaded in place. The rows of a new installation (the extensions of config/hotline.toml and the eight
queues) are seeded by `./hotline up` (core.provisioning.seed), which knows the generated passwords.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 19:50:00
"""

import sqlalchemy as sa
from alembic import op

import core.db

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'phones',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('extension', sa.String(length=8), nullable=False),
        sa.Column('label', sa.String(length=64), nullable=False),
        sa.Column('kind', sa.Enum('AGENT', 'LEAD', name='phonekind', native_enum=False, length=8), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('md5_cred', sa.String(length=32), nullable=False),
        sa.Column('created_at', core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('updated_at', core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_phones')),
        sa.UniqueConstraint('extension', name=op.f('uq_phones_extension')),
    )
    op.create_table(
        'hotline_queues',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=40), nullable=False),
        sa.Column('hotline', sa.String(length=8), nullable=False),
        sa.Column('business', sa.String(length=16), nullable=False),
        sa.Column('strategy', sa.String(length=16), nullable=False),
        sa.Column('ring_seconds', sa.Integer(), nullable=False),
        sa.Column('max_wait_seconds', sa.Integer(), nullable=False),
        sa.Column('announce_every_seconds', sa.Integer(), nullable=False),
        sa.Column('wrapup_seconds', sa.Integer(), nullable=False),
        sa.Column('music_class', sa.String(length=32), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('created_at', core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('updated_at', core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_hotline_queues')),
        sa.UniqueConstraint('name', name=op.f('uq_hotline_queues_name')),
    )


def downgrade() -> None:
    op.drop_table('hotline_queues')
    op.drop_table('phones')
