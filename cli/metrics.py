"""The metrics endpoints of one platform instance and the figures `./hotline status` prints from them.

`status` scrapes the same endpoints Prometheus does, so what the person on call reads in the terminal
is what the dashboard shows."""

from __future__ import annotations

import base64
import urllib.request
from dataclasses import dataclass

from core.asterisk_config import ASTERISK_METRICS_USER
from core.metrics import SERVICE_METRICS, metrics_address, parse_metrics
from core.settings import Settings

# res_prometheus's figures the dashboard uses (ops/grafana/hotline.json); the stack test finds each one.
ASTERISK_METRICS = ("asterisk_core_uptime_seconds", "asterisk_calls_count", "asterisk_calls_sum",
                    "asterisk_channels_count", "asterisk_bridges_count", "asterisk_endpoints_count")
Samples = dict[str, list[tuple[dict[str, str], float]]]


@dataclass(frozen=True)
class Endpoint:
    name: str  # the Prometheus job
    url: str
    username: str | None = None
    password: str | None = None

    def scrape(self, timeout: float = 5) -> str:
        request = urllib.request.Request(self.url)
        if self.username:
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read().decode()


def endpoints(settings: Settings) -> list[Endpoint]:
    """Every metrics endpoint: one per Python service, and Asterisk's (first node: its HTTP server)."""
    found = []
    for service in SERVICE_METRICS:
        host, port = metrics_address(settings, service)
        found.append(Endpoint(service, f"http://{host}:{port}/metrics"))
    node = settings.nodes[0]
    found.append(Endpoint("asterisk", f"http://{node.address}:{settings.webphone.http_port}/metrics",
                          ASTERISK_METRICS_USER, settings.secrets["asterisk_metrics"]))
    return found


def endpoint(settings: Settings, name: str) -> Endpoint:
    return next(e for e in endpoints(settings) if e.name == name)


def total(samples: Samples, name: str, **match: str) -> float:
    return sum(value for labels, value in samples.get(name, [])
               if all(labels.get(k) == v for k, v in match.items()))


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, value in samples.get(name, []):
        out[labels.get(label, "")] = out.get(labels.get(label, ""), 0.0) + value
    return out


def _listing(values: dict[str, float]) -> str:
    shown = [f"{k or '-'} {v:.0f}" for k, v in sorted(values.items()) if v]
    return ", ".join(shown) or "none"


def figure_lines(scraped: dict[str, Samples]) -> list[str]:
    """The operator's figures, from what each endpoint answered (an endpoint that did not is left out)."""
    lines = []
    cti = scraped.get("cti")
    if cti is not None:
        waiting = by_label(cti, "hotline_queue_callers", "queue")
        longest = max((v for _, v in cti.get("hotline_queue_longest_wait_seconds", [])), default=0.0)
        lines += [
            f"calls in progress: {total(cti, 'hotline_calls_in_progress'):.0f} "
            f"(by hotline: {_listing(by_label(cti, 'hotline_calls_in_progress', 'hotline'))}); "
            f"calls since the CTI started: {total(cti, 'hotline_calls_total'):.0f}",
            f"waiting in queues: {sum(waiting.values()):.0f} ({_listing(waiting)}), longest wait {longest:.0f} s",
            f"agents: {_listing(by_label(cti, 'hotline_agents', 'state'))}",
            f"screen pops: {total(cti, 'hotline_screen_pops_total'):.0f}, ring-to-pop "
            f"{_mean_ms(cti, 'hotline_ring_to_pop_seconds')}; events or pops dropped: "
            f"{total(cti, 'hotline_cti_failed_steps_total', step='event_lost') + total(cti, 'hotline_cti_failed_steps_total', step='pop_lost'):.0f}",
            f"AMI: reconnects {total(cti, 'hotline_ami_reconnects_total'):.0f}, half-open connections dropped "
            f"{total(cti, 'hotline_ami_half_open_total'):.0f}",
        ]
    rec = scraped.get("recordings")
    if rec is not None:
        lines.append(
            f"recordings in the spool: {total(rec, 'hotline_recordings_spool_files'):.0f} "
            f"(stale {total(rec, 'hotline_recordings_spool_files', age='stale'):.0f}), missing "
            f"{total(rec, 'hotline_recordings_missing'):.0f}; transcription backlog "
            f"{total(rec, 'hotline_transcriptions', status='pending'):.0f}, failed "
            f"{total(rec, 'hotline_transcriptions', status='failed'):.0f}")
    sched = scraped.get("scheduler")
    if sched is not None:
        lines.append(
            f"notices: waiting {total(sched, 'hotline_notices', state='pending'):.0f}, failed "
            f"{total(sched, 'hotline_notices', state='failed'):.0f}, uncertain "
            f"{total(sched, 'hotline_notices', state='uncertain'):.0f}; ticket steps since the scheduler "
            f"started: {_listing(by_label(sched, 'hotline_ticket_actions_total', 'action'))}")
    desk = scraped.get("agent_desk")
    if desk is not None:
        errors = sum(v for labels, v in desk.get("hotline_http_requests_total", [])
                     if labels.get("status", "").startswith("5"))
        lines.append(f"desk requests: {total(desk, 'hotline_http_requests_total'):.0f}, of them 5xx {errors:.0f}")
    return lines


def _mean_ms(samples: Samples, histogram: str) -> str:
    count = total(samples, f"{histogram}_count")
    return f"mean {1000 * total(samples, f'{histogram}_sum') / count:.1f} ms" if count else "no samples"


def scrape_all(settings: Settings) -> tuple[list[tuple[Endpoint, str | None]], dict[str, Samples]]:
    """Each endpoint with the error it gave (None: answered), and the samples of those that answered."""
    results: list[tuple[Endpoint, str | None]] = []
    scraped: dict[str, Samples] = {}
    for endpoint in endpoints(settings):
        try:
            scraped[endpoint.name] = parse_metrics(endpoint.scrape())
            results.append((endpoint, None))
        except Exception as exc:  # noqa: BLE001 - reported in words, status goes on
            results.append((endpoint, str(exc)))
    return results, scraped
