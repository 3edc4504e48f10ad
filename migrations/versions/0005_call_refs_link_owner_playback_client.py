"""calls get a random public reference; ticket links record who made them; playbacks record the client

Issue 12 item 1: Asterisk's uniqueids are sequential, so call ids shown to people and typed by them
(关联来电, registration, the ticket page) become ``call_records.ref``, random and unique; existing rows are
backfilled here. ``ticket_calls.linked_by_id`` lets playback re-check the right of whoever linked a call.
Item 3: ``recording_playbacks`` records where a playback came from.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 10:00:00
"""

import secrets

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # call_records is referenced by ticket_calls: on SQLite it must not be rebuilt (batch mode would drop
    # it under live foreign keys), so the column is added in place and made unique by an index; NOT NULL
    # is declared where ALTER can (PostgreSQL), elsewhere the model's default fills every new row.
    op.add_column('call_records', sa.Column('ref', sa.String(length=24), nullable=True))
    bind = op.get_bind()
    calls = sa.table('call_records', sa.column('id', sa.Integer()), sa.column('ref', sa.String()))
    ids = bind.execute(sa.select(calls.c.id).where(calls.c.ref.is_(None))).scalars().all()
    for start in range(0, len(ids), 1000):
        bind.execute(calls.update().where(calls.c.id == sa.bindparam('row_id')).values(ref=sa.bindparam('new_ref')),
                     [{'row_id': i, 'new_ref': secrets.token_urlsafe(12)} for i in ids[start:start + 1000]])
    op.create_index('uq_call_records_ref', 'call_records', ['ref'], unique=True)
    if bind.dialect.name != 'sqlite':
        op.alter_column('call_records', 'ref', existing_type=sa.String(length=24), nullable=False)

    with op.batch_alter_table('ticket_calls', schema=None) as batch_op:
        batch_op.add_column(sa.Column('linked_by_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_ticket_calls_linked_by_id_users'), 'users',
                                    ['linked_by_id'], ['id'])
    _backfill_linkers(bind)

    with op.batch_alter_table('recording_playbacks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('client_address', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('forwarded_for', sa.String(length=255), nullable=True))


def _backfill_linkers(bind) -> None:
    """Who made each existing link, from the tracking log: a 关联来电 step names its operator and the
    call; any other link of an agent's ticket was made at registration by the registering agent; the
    links of voice-message tickets are the system's (left empty)."""
    links = sa.table('ticket_calls', sa.column('id', sa.Integer()), sa.column('ticket_id', sa.Integer()),
                     sa.column('call_id', sa.String()), sa.column('linked_by_id', sa.Integer()))
    tickets = sa.table('tickets', sa.column('id', sa.Integer()), sa.column('created_by_id', sa.Integer()))
    actions = sa.table('ticket_actions', sa.column('ticket_id', sa.Integer()), sa.column('action', sa.String()),
                       sa.column('operator_id', sa.Integer()), sa.column('inputs', sa.JSON()))
    attached = {}
    for ticket_id, operator_id, inputs in bind.execute(
            sa.select(actions.c.ticket_id, actions.c.operator_id, actions.c.inputs)
            .where(actions.c.action == '关联来电')):
        if isinstance(inputs, dict) and inputs.get('call_id'):
            attached.setdefault((ticket_id, str(inputs['call_id'])), operator_id)
    rows = bind.execute(sa.select(links.c.id, links.c.ticket_id, links.c.call_id, tickets.c.created_by_id)
                        .join(tickets, tickets.c.id == links.c.ticket_id)).all()
    updates = [{'row_id': row_id, 'linker': attached.get((ticket_id, call_id), created_by)}
               for row_id, ticket_id, call_id, created_by in rows
               if attached.get((ticket_id, call_id), created_by) is not None]
    if updates:
        bind.execute(links.update().where(links.c.id == sa.bindparam('row_id'))
                     .values(linked_by_id=sa.bindparam('linker')), updates)


def downgrade() -> None:
    with op.batch_alter_table('recording_playbacks', schema=None) as batch_op:
        batch_op.drop_column('forwarded_for')
        batch_op.drop_column('client_address')
    with op.batch_alter_table('ticket_calls', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_ticket_calls_linked_by_id_users'), type_='foreignkey')
        batch_op.drop_column('linked_by_id')
    op.drop_index('uq_call_records_ref', table_name='call_records')
    if op.get_bind().dialect.name == 'sqlite':
        op.execute('ALTER TABLE call_records DROP COLUMN ref')  # in place, as upgrade added it (SQLite >= 3.35)
    else:
        op.drop_column('call_records', 'ref')
