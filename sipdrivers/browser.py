"""Chromium as an agent's browser phone, for the tests and bench/: its launch arguments (fake microphone),
what the page's phone plays to the agent (Goertzel in the page), and a network namespace of its own so its
WebRTC phone gets an ICE host candidate on loopback alone.

Chromium gathers no ICE candidate from the loopback interface (nor from a 127.x address on any interface of
the host's namespace): without another network interface a browser phone sends no media. In a namespace
of its own with one veth end addressed 127.<n>.<m>.1/24 and a default route over it, Chromium takes that
address as its host candidate. The other veth end stays in the host's namespace with ``route_localnet``
(127.x allowed on the wire), a /32 route in the host's ``local`` table sending the browser's address back
over the veth, and no forwarding: what the browser sends to 127.0.0.1 (the desk, Asterisk's RTP) reaches
the host's loopback services, and nothing from the namespace goes further than this machine.

    with chromium_in_namespace(tmp_path) as (chromium, namespace):
        browser = await p.chromium.launch(executable_path=str(chromium), args=BROWSER_PHONE_ARGS)

Everything it creates (namespace, veth pair, route, launcher script) is removed on exit. Needs root.
"""


from __future__ import annotations

import os
import random
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
# A fake microphone (add --use-file-for-fake-audio-capture=FILE.wav for a chosen sound), no permission
# prompt, remote audio played without a click, real IP addresses in ICE candidates (no mDNS names).
BROWSER_PHONE_ARGS = [*CHROMIUM_ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                      "--autoplay-policy=no-user-gesture-required", "--disable-features=WebRtcHideLocalIpsWithMdns"]

# In the page: Goertzel power of each frequency over ~0.7 s of what the browser phone plays to the agent.
RECEIVED = """async (freqs) => {
  const ctx = new AudioContext();
  const analyser = ctx.createAnalyser(); analyser.fftSize = 32768;
  ctx.createMediaStreamSource(document.getElementById("wp-remote").srcObject).connect(analyser);
  await new Promise((r) => setTimeout(r, 900));
  const buf = new Float32Array(analyser.fftSize); analyser.getFloatTimeDomainData(buf);
  const power = (f) => { const c = 2 * Math.cos(2 * Math.PI * f / ctx.sampleRate); let s1 = 0, s2 = 0;
    for (const x of buf) { const s = x + c * s1 - s2; s2 = s1; s1 = s; }
    return (s1 * s1 + s2 * s2 - c * s1 * s2) / (buf.length * buf.length); };
  const result = freqs.map(power); await ctx.close(); return result;
}"""


def tone_file(folder: Path, name: str, freq: int, rate: int, encoding: list[str], seconds: int = 300) -> Path:
    """A sine tone file made by sox (e.g. ``["-b", "16"]`` for a WAV microphone, ``["-t", "raw", "-e",
    "u-law"]`` for SIPp's rtp_stream)."""
    target = folder / name
    subprocess.run(["sox", "-n", "-r", str(rate), "-c", "1", *encoding, str(target), "synth", str(seconds), "sine",
                    str(freq), "vol", "0.5"], check=True, capture_output=True)
    return target


async def hears(page: Any, freq: int, *others: int) -> bool:
    """The page's browser phone plays ``freq`` to the agent, far above each of ``others``."""
    wanted, *unwanted = await page.evaluate(RECEIVED, [freq, *others])
    return wanted > 1e-5 and all(wanted > 20 * u for u in unwanted)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _sysctl(namespace: str | None, key: str, value: str) -> None:
    prefix = ["ip", "netns", "exec", namespace] if namespace else []
    subprocess.run([*prefix, "sysctl", "-qw", f"{key}={value}"], check=True, capture_output=True, text=True)


def _free_address() -> str:
    """A 127.x.y.1 that no route of this machine uses yet (another test session may hold one)."""
    taken = subprocess.run(["ip", "route", "show", "table", "all"], check=True, capture_output=True,
                           text=True).stdout
    for _ in range(200):
        address = f"127.{random.randint(100, 250)}.{random.randint(0, 255)}.1"
        if f"{address.rsplit('.', 1)[0]}." not in taken:
            return address
    raise RuntimeError("no free 127.x.y.0/24 for the browser's network namespace")


@contextmanager
def browser_namespace() -> Iterator[tuple[str, str]]:
    """A network namespace with a veth to the host's loopback services; yields (namespace, its address)."""
    tag = f"hlwp{os.getpid() % 100000}{random.randint(0, 99):02d}"  # link names: at most 15 characters
    namespace, outside, inside = tag, f"{tag}h", f"{tag}n"
    address = _free_address()
    _ip("netns", "add", namespace)
    try:
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside, "netns", namespace)
        _sysctl(None, f"net.ipv4.conf.{outside}.route_localnet", "1")
        _sysctl(None, f"net.ipv4.conf.{outside}.forwarding", "0")  # nothing from the namespace goes beyond
        _ip("link", "set", outside, "up")
        _ip("route", "add", f"{address}/32", "dev", outside, "table", "local")
        _sysctl(namespace, f"net.ipv4.conf.{inside}.route_localnet", "1")
        _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", inside)
        _ip("-n", namespace, "link", "set", inside, "up")
        # Chromium finds its own address by routing towards the internet: the default route names it.
        _ip("-n", namespace, "route", "add", "default", "dev", inside, "src", address)
        yield namespace, address
    finally:
        subprocess.run(["ip", "link", "del", outside], capture_output=True)  # both ends, and the route
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


@contextmanager
def chromium_in_namespace(folder: Path) -> Iterator[tuple[Path, str]]:
    """A Chromium launcher (for Playwright's ``executable_path``) that runs it inside its own namespace;
    yields (launcher, namespace)."""
    with browser_namespace() as (namespace, _address):
        launcher = folder / f"chromium-{namespace}"
        launcher.write_text(f'#!/bin/sh\nexec ip netns exec {namespace} {CHROMIUM} "$@"\n')
        launcher.chmod(0o755)
        try:
            yield launcher, namespace
        finally:
            launcher.unlink(missing_ok=True)
