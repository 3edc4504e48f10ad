"""calls and recordings carry the Asterisk node they are on

Issue 14 item 6: the platform describes Asterisk as a list of nodes. Every call record and recording
names its node; the rows from before nodes existed were all on the single node, "node1" (the first
node of config/hotline.toml). Added in place with a server default, so SQLite needs no table rebuild
(call_records is referenced by ticket_calls).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 13:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

TABLES = ('call_records', 'recordings')


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column('node', sa.String(length=16), nullable=False, server_default='node1'))


def downgrade() -> None:
    for table in TABLES:
        if op.get_bind().dialect.name == 'sqlite':
            op.execute(f'ALTER TABLE {table} DROP COLUMN node')  # in place, as upgrade added it (SQLite >= 3.35)
        else:
            op.drop_column(table, 'node')
