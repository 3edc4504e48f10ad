"""A half-open AMI link (Asterisk alive on the socket but not answering) is noticed in seconds, not minutes.

Asterisk is frozen with SIGSTOP: the TCP connection stays up and nothing closes it, exactly the case
panoramisk's own keep-alive misses. The client must drop it by itself, refuse actions in plain words
meanwhile, and be back once Asterisk answers again.
"""

from __future__ import annotations

import os
import signal

import pytest

from cli.stack import supervisorctl
from core.ami import AmiClient, AmiError

pytestmark = pytest.mark.stack


async def test_a_frozen_asterisk_is_noticed_and_the_link_comes_back(stack, waiter):
    client = AmiClient(stack.settings, "tools", watchdog_interval=1, watchdog_timeout=2)
    await client.connect()
    pid = int(supervisorctl(stack.settings, "pid", "asterisk").stdout.strip())
    os.kill(pid, signal.SIGSTOP)
    try:
        async def dropped():
            return not client.logged_in.is_set()

        await waiter(dropped, timeout=15, what="the half-open AMI link to be noticed")
        with pytest.raises(AmiError, match="连接已中断"):
            await client.action({"Action": "Ping"}, timeout=1)
    finally:
        os.kill(pid, signal.SIGCONT)
    try:
        async def back():
            return client.logged_in.is_set()

        await waiter(back, timeout=30, what="the AMI link to come back")
        reply = await client.action({"Action": "Ping"})
        assert reply.get("Response") == "Success"
        assert client.connections >= 2
    finally:
        await client.close()
