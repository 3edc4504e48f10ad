"""Only Asterisk (and root) may speak FastAGI to the IVR.

FastAGI has no authentication. Before this check any local user could connect to the IVR's port as if
it were Asterisk, give any caller number and read what the IVR sent back: ``SET VARIABLE
__LOOKUP_TICKET <number>`` named the full number of each open ticket of that phone, and typed numbers
told which tickets exist, at machine speed and without a call in Asterisk's books. Found by the
attacker's re-run of issue 12."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import select

from cli.democall import originate_citizen
from cti.models import CallRecord

pytestmark = pytest.mark.stack

# A citizen "calling" 12301 straight to FastAGI: the AGI environment, then the first command the IVR sends.
IMPOSTOR = """
import socket, sys
s = socket.create_connection(("{host}", {port}), timeout=10)
s.sendall(b"agi_network: yes\\nagi_network_script: ivr\\nagi_callerid: 13755550123\\nagi_extension: 12301\\n\\n")
line = b""
try:
    while not line.endswith(b"\\n"):
        chunk = s.recv(1)
        if not chunk:
            break
        line += chunk
except OSError:
    pass
print(repr(line.decode(errors="replace").strip()))
"""


def _first_command(settings, as_nobody: bool) -> str:
    script = IMPOSTOR.format(host=settings.agi.host, port=settings.agi.port)
    # The system Python: a user without rights cannot run the project's virtualenv from root's home.
    python = "/usr/bin/python3" if as_nobody else sys.executable
    prefix = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"] if as_nobody else []
    result = subprocess.run([*prefix, python, "-c", script], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


async def test_another_local_user_cannot_pose_as_asterisk(stack, ami, db, waiter):
    assert _first_command(stack.settings, as_nobody=True) == "''"  # closed before a word was read
    assert "agi_client_refused" in stack.log("ivr") and "65534" in stack.log("ivr")
    assert _first_command(stack.settings, as_nobody=False) == "'GET VARIABLE HOTLINE'"  # root: status, tests

    # Asterisk itself (its own uid inside the runtime) still runs the IVR: a caller presses 4 (progress).
    call = await originate_citizen(ami, "12301", keys="4", caller="13700000404", hold_seconds=6)

    async def routed():
        async with db.session() as session:
            row = await session.scalar(select(CallRecord).where(CallRecord.call_id == call.call_id))
        return row if row is not None and row.business == "progress" else None

    await waiter(routed, timeout=60, what="the IVR to take the real call's key 4 (progress)")
