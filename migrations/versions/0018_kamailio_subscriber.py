"""kamailio_subscriber: the phones' digest credentials as Kamailio's auth_db reads them (issue 19 item 1)

A view, not a copy: an admin's new, disabled or re-keyed phone (core/provisioning.py) is what Kamailio
checks at the phone's next REGISTER, with nothing to synchronise. Enabled phones only.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-01 23:30:00
"""

from alembic import op

revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # md5_cred is HA1 = MD5(extension:hotline:password), what auth_db compares when calculate_ha1 is off.
    op.execute("CREATE VIEW kamailio_subscriber AS SELECT extension AS username, 'hotline' AS domain, "
               "md5_cred AS ha1 FROM phones WHERE enabled")


def downgrade() -> None:
    op.execute("DROP VIEW kamailio_subscriber")
