"""units.disabled: a handling unit is disabled (停用), never deleted (issue 17 item 1)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01 20:05:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


# A plain ADD COLUMN, not a batch copy: SQLite would recreate ``units``, which users and tickets refer to.
def upgrade() -> None:
    op.add_column('units', sa.Column('disabled', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    op.drop_column('units', 'disabled')
