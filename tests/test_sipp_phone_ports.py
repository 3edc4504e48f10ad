"""The test suite's SIPp phones choose a free block of UDP ports, and the block can be taken before SIPp binds
it (another session's phone, an ephemeral UDP port): the phone then starts again on another block instead of
failing the test that uses it (seen in the full run: "Unable to bind main socket, errno = 98")."""

from __future__ import annotations

import socket

import pytest

from sipdrivers.phones import SippPhone

pytestmark = pytest.mark.stack


async def test_a_phone_whose_port_is_taken_before_sipp_binds_it_registers_on_another(stack):
    phone = SippPhone(stack.settings, "8005")
    taken = phone.local_port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind((phone.address, taken))  # taken between the choice and SIPp's bind
        phone.start()
        try:
            await phone.wait_registered(stack.runtime)
            assert phone.local_port != taken
            assert f"{phone.address}:{phone.local_port}" in stack.runtime.rx("pjsip show aor 8005")
        finally:
            phone.stop()
