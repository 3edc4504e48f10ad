"""call_records.arrival_wait, answer_wait: the report's two waits, stored at every write (issue 16, report bench)

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01 23:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def _seconds(dialect: str, start: str, end: str) -> str:
    """``end - start`` in seconds, never negative, as core.calls.call_waits computes it (microseconds kept:
    SQLite's own date functions round to milliseconds, so whole seconds come from the text cut at the
    seconds and the fraction from the text)."""
    if dialect == 'postgresql':
        return f'greatest(extract(epoch FROM {end} - {start})::float8, 0.0)'

    def epoch(column: str) -> str:
        return f"(CAST(strftime('%s', substr({column}, 1, 19)) AS INTEGER) + CAST(substr({column}, 20) AS REAL))"
    return f'max(round({epoch(end)} - {epoch(start)}, 6), 0.0)'


# Plain ADD COLUMNs (a SQLite batch copy would recreate call_records, which ticket_calls refers to), then the
# rows already there get their waits from their timestamps; the ORM's flush hook keeps new writes in step.
def upgrade() -> None:
    op.add_column('call_records', sa.Column('arrival_wait', sa.Float(), nullable=True))
    op.add_column('call_records', sa.Column('answer_wait', sa.Float(), nullable=True))
    dialect = op.get_bind().dialect.name
    op.execute(
        'UPDATE call_records SET '
        f"arrival_wait = CASE WHEN answered_at IS NOT NULL THEN {_seconds(dialect, 'started_at', 'answered_at')} END, "
        f"answer_wait = CASE WHEN queued_at IS NOT NULL AND answered_at IS NOT NULL "
        f"THEN {_seconds(dialect, 'queued_at', 'answered_at')} ELSE wait_seconds END")


def downgrade() -> None:
    op.drop_column('call_records', 'answer_wait')
    op.drop_column('call_records', 'arrival_wait')
