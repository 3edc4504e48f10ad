"""Citizen calls over real SIP/RTP: SIPp as the carrier trunk (source 127.0.0.2), keys as RFC 4733."""

from __future__ import annotations

import csv
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from sipdrivers.phones import SIPP_DIR, free_udp_block

SCENARIO = SIPP_DIR / "citizen_call.xml"


def ulaw_from_wav(wav: Path, target: Path) -> Path:
    """SIPp's rtp_stream sends bytes as they are: headerless 8 kHz u-law."""
    subprocess.run(["sox", str(wav), "-r", "8000", "-c", "1", "-t", "raw", "-e", "u-law", str(target)],
                   check=True, capture_output=True)
    return target


@dataclass
class SippResult:
    returncode: int
    successful: int
    failed: int
    output: str
    response_ms: list[float] = field(default_factory=list)  # with ``rtt``: INVITE to 200 OK, per call


def run_citizen_calls(settings, did: str, keys: str, callers: list[str], speech_ulaw: Path,
                      hold_ms: int = 6000, delay_ms: int = 4000, rate: float = 1.0, limit: int | None = None,
                      timeout: float = 180, local_port: int | None = None, extra: list[str] | None = None,
                      cpus: str | None = None, scenario: Path = SCENARIO,
                      fill: dict[str, str] | None = None, source: str | None = None,
                      target: str | None = None, rtt: bool = False) -> SippResult:
    """Citizens from the carrier address, one call per caller number; ``cpus`` pins SIPp (taskset list);
    ``scenario``: another citizen behaviour in the same template (e.g. sipdrivers/scenarios/citizen_silent.xml),
    ``fill``: its own placeholders (e.g. ``{"survey": "1"}`` for sipdrivers/scenarios/citizen_survey.xml);
    ``source``: call from this address instead of the carrier's (a stranger the platform must refuse);
    ``target``: ``address:port`` to call instead of the platform's SIP address (a cluster node directly);
    ``rtt``: keep each call's set-up time (the scenario's ``rtd`` response: INVITE sent to 200 OK)."""
    carrier = source or settings.sip.carrier_address
    # Free ports on the carrier address by default (SIP, and media at +10 unless ``extra`` names -mp): test
    # sessions running side by side place carrier calls at the same time.
    local_port = local_port or free_udp_block(carrier)
    media = [] if "-mp" in (extra or []) else ["-mp", str(local_port + 10)]
    with tempfile.TemporaryDirectory() as tmp:
        # SIPp reads exec and pause attributes when it loads the scenario, before -key values apply:
        # fill them into a copy.
        text = scenario.read_text()
        scenario = Path(tmp) / scenario.name
        for key, value in {"keys": keys or "", "speech": speech_ulaw.name, "hold_ms": hold_ms,
                           "delay_ms": delay_ms, **(fill or {})}.items():
            text = text.replace(f"[{key}]", str(value))
        scenario.write_text(text)
        injection = Path(tmp) / "callers.csv"
        injection.write_text("SEQUENTIAL\n" + "".join(f"{c};\n" for c in callers))
        stats = Path(tmp) / "stats.csv"
        cmd = [
            *(["taskset", "-c", cpus] if cpus else []), "sipp", target or f"{settings.sip.bind}:{settings.sip.port}", "-sf", str(scenario),
            "-s", did, "-i", carrier, "-p", str(local_port), "-mi", carrier,
            "-inf", str(injection), "-m", str(len(callers)), "-r", str(rate), "-l", str(limit or len(callers)),
            "-ci", "127.0.0.1", "-nostdin", "-nd", "-trace_stat", "-stf", str(stats), "-timeout", f"{int(timeout)}s",
            "-timeout_error", *media, *(["-trace_rtt", "-rtt_freq", "1"] if rtt else []), *(extra or []),
        ]
        proc = subprocess.run(cmd, cwd=speech_ulaw.parent, capture_output=True, text=True, timeout=timeout + 30)
        successful = failed = 0
        if stats.exists():
            lines = stats.read_text().strip().splitlines()
            if len(lines) >= 2:
                header, last = lines[0].split(";"), lines[-1].split(";")
                row = dict(zip(header, last, strict=False))
                successful = int(row.get("SuccessfulCall(C)", 0) or 0)
                failed = int(row.get("FailedCall(C)", 0) or 0)
        return SippResult(proc.returncode, successful, failed, proc.stdout[-3000:] + proc.stderr[-3000:],
                          _response_times(speech_ulaw.parent, scenario.stem) if rtt else [])


def _response_times(folder: Path, stem: str) -> list[float]:
    """SIPp's -trace_rtt file (<scenario>_<pid>_rtt.csv in its working folder): one response time a line, in
    whole ms; read and removed."""
    times: list[float] = []
    for path in folder.glob(f"{stem}_*_rtt.csv"):
        rows = list(csv.reader(path.read_text().splitlines(), delimiter=";"))
        if not rows:
            continue
        column = next((i for i, name in enumerate(rows[0]) if "response_time" in name.lower()), 1)
        times += [float(row[column]) for row in rows[1:] if len(row) > column and row[column].strip()]
        path.unlink()
    return times


def carrier_answering(settings, calls: int = 1, timeout_s: int = 120,
                      scenario: str = "carrier_answer.xml") -> subprocess.Popen:
    """SIPp as the far end of the carrier trunk: answers ``calls`` outbound calls to citizens, each until
    the platform hangs up. Exits 0 when all were answered and ended cleanly. ``scenario``: another far
    end in sipdrivers/scenarios (``carrier_busy.xml``: the citizen's line is busy)."""
    sip = settings.sip
    return subprocess.Popen(
        ["sipp", f"{sip.bind}:{sip.port}", "-sf", str(SIPP_DIR / scenario),
         "-i", sip.carrier_address, "-p", str(sip.carrier_port), "-mp", str(sip.carrier_port + 2),
         "-m", str(calls), "-ci", "127.0.0.1", "-nostdin", "-nd",
         "-timeout", f"{timeout_s}s"],
        cwd=SIPP_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
