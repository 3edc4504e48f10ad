"""Users: skills with a penalty each, default extension, forced password change (issue 17 items 1 and 4)

``users.skills`` was a comma string of queue names; it becomes a JSON object queue -> penalty (Asterisk's
QueueAdd Penalty), each existing skill with penalty 0, so every agent keeps the queues they had.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01 19:50:00
"""

import json

import sqlalchemy as sa
from alembic import op

import core.db

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

USERS = sa.table('users', sa.column('id', sa.Integer()), sa.column('skills', sa.Text()))


def _convert(change) -> None:
    bind = op.get_bind()
    for user_id, skills in bind.execute(sa.select(USERS.c.id, USERS.c.skills)).all():
        bind.execute(USERS.update().where(USERS.c.id == user_id).values(skills=change(skills)))


def _to_json(skills: str | None) -> str:
    names = [name.strip() for name in (skills or '').split(',') if name.strip()]
    return json.dumps(dict.fromkeys(names, 0), ensure_ascii=False, sort_keys=True)


def _to_commas(skills: str | None) -> str:
    penalties = json.loads(skills or '{}')
    return ','.join(sorted(penalties, key=lambda queue: (penalties[queue], queue)))[:255]


def upgrade() -> None:
    # In place, never by batch mode's copy of the table: on SQLite that copy drops and recreates ``users``,
    # which every ticket, call and audit row refers to. SQLite does not enforce VARCHAR lengths.
    if op.get_bind().dialect.name != 'sqlite':
        op.alter_column('users', 'skills', type_=sa.Text(), existing_type=sa.String(length=255))
    _convert(_to_json)
    op.add_column('users', sa.Column('default_extension', sa.String(length=16), nullable=True))
    op.add_column('users', sa.Column('must_change_password', sa.Boolean(), nullable=False,
                                     server_default=sa.false()))
    op.add_column('users', sa.Column('password_changed_at', core.db.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    for name in ('password_changed_at', 'must_change_password', 'default_extension'):
        if op.get_bind().dialect.name == 'sqlite':
            op.execute(f'ALTER TABLE users DROP COLUMN {name}')  # SQLite >= 3.35
        else:
            op.drop_column('users', name)
    _convert(_to_commas)
    if op.get_bind().dialect.name != 'sqlite':
        op.alter_column('users', 'skills', type_=sa.String(length=255), existing_type=sa.Text())
