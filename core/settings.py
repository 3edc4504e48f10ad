"""Platform settings: one TOML file (config/hotline.toml), environment overrides, generated secrets.

Every service reads its configuration through :func:`load_settings`, so the
network contract, paths and policies are decided in exactly one place.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import re
import secrets
import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar, get_args, get_origin, get_type_hints

REPO_ROOT = Path(__file__).resolve().parent.parent
# The policy files and hotline.toml; HOTLINE_CONFIG_DIR points a centre (or a test) at its own copy.
CONFIG_DIR = Path(os.environ.get("HOTLINE_CONFIG_DIR") or REPO_ROOT / "config").resolve()
DEFAULT_CONFIG = CONFIG_DIR / "hotline.toml"

# Each process logs in to Redis (core.redis) and to AMI (core.ami) as its own user with its own secret.
REDIS_USERS = ("ivr", "cti", "agent_desk", "recordings", "scheduler", "tools")
# The desk has none: the CTI carries out its commands (cti.protocol). "provision" is the CTI's second
# account, only for reloading the rendered phones and queues (cti/provisioning.py).
AMI_ACCOUNTS = ("cti", "provision", "tools")
SECRET_NAMES = ("web_cookie_key", "admin_password", "demo_password", "kannel_password",
                *(f"redis_{user}" for user in REDIS_USERS), *(f"ami_{account}" for account in AMI_ACCOUNTS), "ari_desk",
                "asterisk_metrics")


class ConfigError(ValueError):
    """A configuration file or value is wrong; the message says where and why."""


# The single node's name, and the node of rows from before nodes existed (migration 0006).
DEFAULT_NODE = "node1"
NODE_NAME = re.compile(r"^[a-z][a-z0-9]{0,15}$")  # a prefix of Asterisk's uniqueids (systemname) and file names
NODE_KEYS = ("address", "sip_port", "ami_host", "ami_port", "rtp_start", "rtp_end")


@dataclass(frozen=True)
class AsteriskNode:
    """One Asterisk of the platform: its name prefixes every uniqueid it makes (asterisk.conf systemname),
    so call ids are unique across nodes; SIP and AMI listen on its own address and ports."""

    name: str
    address: str
    sip_port: int
    ami_host: str
    ami_port: int
    rtp_start: int
    rtp_end: int
    first: bool  # the first node keeps the single-node names (its instance folder, "asterisk" program)

    @property
    def program(self) -> str:
        """Its supervisord program (and health-check name)."""
        return "asterisk" if self.first else f"asterisk-{self.name}"


def _node_names(settings: Settings) -> list[str]:
    names = list(settings.asterisk.nodes or [DEFAULT_NODE])
    wanted = settings.cluster.nodes
    if wanted and len(names) == 1:  # cluster mode on one machine: node1 … nodeN
        return [f"node{index + 1}" for index in range(wanted)]
    if wanted and len(names) != wanted:
        raise ConfigError(f"[cluster] nodes = {wanted}，但 [asterisk] nodes 列出了 {len(names)} 个节点：两者应一致")
    return names


def _nodes(settings: Settings) -> list[AsteriskNode]:
    names = _node_names(settings)
    tables = settings.raw.get("nodes", {})
    sip, ami, cluster = settings.sip, settings.ami, settings.cluster
    nodes = []
    for index, name in enumerate(names):
        if not NODE_NAME.match(str(name)):
            raise ConfigError(f"asterisk.nodes: {name!r} is not a node name (a-z then a-z/0-9, at most 16)")
        table = dict(tables.get(name, {}))
        unknown = set(table) - set(NODE_KEYS)
        if unknown:
            raise ConfigError(f"nodes.{name}: unknown key(s) {', '.join(sorted(unknown))}")
        if cluster.nodes:  # behind Kamailio: each node on its own address, the same ports ([nodes.x] for others)
            table = {"address": str(ipaddress.ip_address(cluster.first_node_address) + index), "sip_port": sip.port,
                     "ami_port": ami.port, "rtp_start": sip.rtp_start, "rtp_end": sip.rtp_end, **table}
        elif index == 0:  # the single-node set-up: [sip] and [ami] describe it
            table = {"address": sip.bind, "sip_port": sip.port, "ami_host": ami.host, "ami_port": ami.port,
                     "rtp_start": sip.rtp_start, "rtp_end": sip.rtp_end, **table}
        table.setdefault("ami_host", table.get("address"))
        missing = [key for key in NODE_KEYS if key not in table]
        if missing:
            raise ConfigError(f"nodes.{name}: missing {', '.join(missing)}")
        nodes.append(AsteriskNode(name=name, address=str(table["address"]), sip_port=int(table["sip_port"]),
                                  ami_host=str(table["ami_host"]), ami_port=int(table["ami_port"]), rtp_start=int(table["rtp_start"]),
                                  rtp_end=int(table["rtp_end"]), first=index == 0))
    for what, key in (("name", lambda n: n.name), ("SIP address and port", lambda n: (n.address, n.sip_port)),
                      ("AMI address and port", lambda n: (n.ami_host, n.ami_port))):
        if len({key(node) for node in nodes}) != len(nodes):
            raise ConfigError(f"asterisk.nodes: two nodes share a {what}")
    kamailio = ({(sip.bind, sip.port), (cluster.proxy_address, sip.port), (cluster.phone_proxy_address, sip.port)}
                if cluster.nodes else set())
    for node in nodes:
        if (node.address, node.sip_port) in kamailio:
            raise ConfigError(f"nodes.{node.name}: {node.address}:{node.sip_port} 是 Kamailio 的监听地址（[sip] bind、"
                              "[cluster] proxy_address、phone_proxy_address），集群模式下 Asterisk 节点应使用自己的地址")
    return nodes


def _coerce(raw: str, like: Any) -> Any:
    if isinstance(like, bool):
        return raw.lower() in ("1", "true", "yes", "on")
    if isinstance(like, int):
        return int(raw)
    if isinstance(like, float):
        return float(raw)
    if isinstance(like, list):
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw


def _apply_env_overrides(data: dict[str, dict[str, Any]], env: dict[str, str]) -> None:
    for section, values in data.items():
        for key, value in values.items():
            name = f"HOTLINE_{section}_{key}".upper()
            if name in env:
                try:
                    values[key] = _coerce(env[name], value)
                except ValueError as exc:
                    raise ConfigError(f"{name}={env[name]!r}: {exc}") from exc


# --- typed sections of hotline.toml ------------------------------------------------------------
# One frozen dataclass per [section]: built and checked when the settings are loaded (wrong type,
# unknown or missing key -> ConfigError naming section, key and reason), read as ``settings.web.port``.

@dataclass(frozen=True)
class CentreSettings:
    name: str
    region: str
    timezone: str


@dataclass(frozen=True)
class SipSettings:
    bind: str
    port: int
    carrier_address: str
    carrier_port: int
    rtp_start: int
    rtp_end: int
    agent_extensions: tuple[str, ...]
    lead_extensions: tuple[str, ...]
    carrier_rtp_timeout_seconds: int
    carrier_rtp_timeout_hold_seconds: int
    session_timers: Literal["always", "yes", "no"]
    session_expires_seconds: int
    session_min_se_seconds: int
    agent_rtp_timeout_seconds: int


@dataclass(frozen=True)
class WebphoneSettings:
    http_port: int
    ice_gathering_timeout_ms: int


@dataclass(frozen=True)
class AmiSettings:
    host: str
    port: int
    username: str
    cti_events: str


@dataclass(frozen=True)
class AgiSettings:
    host: str
    port: int


@dataclass(frozen=True)
class WebSettings:
    host: str
    port: int
    session_minutes: int
    login_account_failures: int
    login_address_failures: int
    login_window_minutes: int
    login_lock_minutes: int
    trust_forwarded_for: bool
    max_body_kb: int
    evidence_max_mb: int
    max_event_streams_per_user: int


@dataclass(frozen=True)
class PasswordsSettings:
    """Password rules (core.accounts): checked on every password a person sets; generated ones meet them."""

    min_length: int
    min_classes: int  # of lower-case letters, upper-case letters, digits, other characters
    forbid_username: bool
    generated_length: int

    def __post_init__(self) -> None:
        if not 8 <= self.min_length <= 128:
            raise ConfigError(f"[passwords] min_length = {self.min_length}：应在 8 到 128 之间")
        if not 1 <= self.min_classes <= 4:
            raise ConfigError(f"[passwords] min_classes = {self.min_classes}：应在 1 到 4 之间")
        if not max(self.min_length, 12) <= self.generated_length <= 128:
            raise ConfigError(f"[passwords] generated_length = {self.generated_length}："
                              f"应在 {max(self.min_length, 12)} 到 128 之间（不短于 min_length）")


@dataclass(frozen=True)
class MetricsSettings:
    """Loopback Prometheus endpoints of the Python services (core.metrics)."""

    host: str
    ivr_port: int
    cti_port: int
    agent_desk_port: int
    recordings_port: int
    scheduler_port: int


@dataclass(frozen=True)
class RedisSettings:
    url: str
    port: int


@dataclass(frozen=True)
class DatabaseSettings:
    url: str


@dataclass(frozen=True)
class AsteriskSettings:
    mode: Literal["auto", "host", "chroot"]
    chroot_cache: str
    nodes: tuple[str, ...]
    bench_echo: bool


@dataclass(frozen=True)
class ClusterSettings:
    """Cluster mode (issue 19): Kamailio listens where [sip] says and sends the carrier's calls to ``nodes``
    Asterisk nodes through its dispatcher (kamailio/kamailio.cfg). 0 is the single-node platform: no Kamailio."""

    nodes: int
    first_node_address: str   # nodes without a [nodes.<name>] table: this address, the next one, …
    proxy_address: str        # Kamailio's side towards the nodes: they take the carrier's calls from it
    phone_proxy_address: str  # Kamailio's side for phone traffic: the nodes reach every phone here
    ping_seconds: int         # dispatcher: OPTIONS to every node this often; one unanswered marks it down
    failover_ms: int          # an INVITE a node has not answered at all in this time goes to the next node
    carrier_calls_per_second: int  # ratelimit: new calls from the carrier above this get 503
    pike_requests: int        # pike: requests per 2 s from one other address before it is blocked

    def __post_init__(self) -> None:
        if self.nodes < 0:
            raise ConfigError(f"[cluster] nodes = {self.nodes}：应为 0（单节点）或节点数")
        for key in ("first_node_address", "proxy_address", "phone_proxy_address"):
            try:
                ipaddress.ip_address(getattr(self, key))
            except ValueError:
                raise ConfigError(f"[cluster] {key} = {getattr(self, key)!r}：应为 IP 地址") from None
        for key in ("ping_seconds", "failover_ms", "carrier_calls_per_second", "pike_requests"):
            if getattr(self, key) < 1:
                raise ConfigError(f"[cluster] {key} = {getattr(self, key)}：应为正整数")


HOURS_MODES = ("calendar", "always", "never")


def _clock_time(key: str, value: str) -> dt.time:
    try:
        return dt.datetime.strptime(value, "%H:%M").time()
    except ValueError:
        raise ConfigError(f"[hours] {key} = {value!r}：应为 HH:MM 格式，例如 08:30") from None


@dataclass(frozen=True)
class HoursSettings:
    open: str
    close: str
    mode: str

    def __post_init__(self) -> None:
        if self.mode not in HOURS_MODES:
            raise ConfigError(f"[hours] mode = {self.mode!r}：只能是 {' / '.join(HOURS_MODES)}")
        if self.closing <= self.opening:
            raise ConfigError(f"[hours] close ({self.closing:%H:%M}) 必须晚于 open ({self.opening:%H:%M})")

    @property
    def opening(self) -> dt.time:
        return _clock_time("open", self.open)

    @property
    def closing(self) -> dt.time:
        return _clock_time("close", self.close)


@dataclass(frozen=True)
class QueuesSettings:
    ring_seconds: int
    max_wait_seconds: int
    announce_every_seconds: int
    wrapup_seconds: int


@dataclass(frozen=True)
class CallbacksSettings:
    missed_min_seconds: float
    missed_max_attempts: int


@dataclass(frozen=True)
class KpiSettingsSection:
    short_abandon_seconds: float
    service_level_seconds: float
    service_level_target: float
    agent_complaint_objects: tuple[str, ...]

    def __post_init__(self) -> None:
        for key in ("short_abandon_seconds", "service_level_seconds", "service_level_target"):
            value = getattr(self, key)
            if value < 0 or (key == "service_level_target" and value > 1) or value != value:
                raise ConfigError(f"[kpi] {key} = {value!r}：超出范围" + ("（0 到 1）" if key.endswith("target") else ""))


@dataclass(frozen=True)
class ReturnVisitsSettings:
    """回访 (tickets.return_visits checks the values: known kinds and closing outcomes, sensible numbers)."""

    kinds: tuple[str, ...]
    outcomes: tuple[str, ...]
    max_attempts: int
    retry_working_days: int


@dataclass(frozen=True)
class AlertsSettings:
    """Live service-level alerts (agent_desk.alerts checks the ranges)."""

    service_level_below: float
    service_level_seconds: float
    longest_wait_seconds: float
    abandon_rate_above: float
    window_minutes: float
    min_calls: int
    check_seconds: float
    clear_after_seconds: float


@dataclass(frozen=True)
class RecordingsSettings:
    storage: str
    retention_days: int
    format: Literal["opus"]
    spool_grace_seconds: int


@dataclass(frozen=True)
class LogsSettings:
    max_mb: int
    backups: int
    asterisk_max_mb: int  # Asterisk's messages, queue_log and Master.csv (core/logrotate.py)
    asterisk_backups: int
    rotate_check_seconds: int


@dataclass(frozen=True)
class DiskSettings:
    min_free_mb: int
    min_free_percent: int


@dataclass(frozen=True)
class PrioritySettings:
    """CPU priority (nice) of each Python service, by its service name; the services in ``realtime`` run
    under the kernel's round-robin real-time policy (SCHED_RR) at ``realtime_priority`` instead."""

    cti: int
    ivr: int
    agent_desk: int
    recordings: int
    scheduler: int
    logrotate: int
    realtime: tuple[str, ...]
    realtime_priority: int

    def __post_init__(self) -> None:
        services = [name for name in vars(self) if not name.startswith("realtime")]
        for service in services:
            nice = getattr(self, service)
            if not -20 <= nice <= 19:
                raise ConfigError(f"[priority] {service} = {nice}：nice 值应在 -20 到 19 之间")
        unknown = [name for name in self.realtime if name not in (*services, "redis")]
        if unknown:
            raise ConfigError(f"[priority] realtime 中有未知的服务 {', '.join(unknown)}（可用：{', '.join(services)}, redis）")
        # 1 … 99 is the kernel's range; a low value keeps these services below the kernel's own RT threads.
        if not 1 <= self.realtime_priority <= 99:
            raise ConfigError(f"[priority] realtime_priority = {self.realtime_priority}：实时优先级应在 1 到 99 之间")

    def of(self, service: str) -> int:
        """The nice value of ``service``; 0 for one this section does not name (a test's own service)."""
        return getattr(self, service, 0)


@dataclass(frozen=True)
class BackupSettings:
    keep: int


@dataclass(frozen=True)
class VoicemailSettings:
    max_seconds: int
    min_seconds: int


@dataclass(frozen=True)
class TranscriptionSettings:
    model_path: str
    calls: bool


@dataclass(frozen=True)
class TicketsSettings:
    deadline_policy: str
    rules_file: str


@dataclass(frozen=True)
class NotifySettings:
    tick_seconds: float
    clock: Literal["system", "offset_file"]
    max_attempts: int
    max_backoff_seconds: float
    kannel_run: bool
    fake_handset: bool
    kannel_sendsms_url: str
    kannel_username: str
    kannel_password: str
    kannel_admin_port: int
    kannel_smsbox_port: int
    kannel_smsc_port: int
    kannel_sendsms_port: int
    smtp_host: str
    smtp_port: int
    smtp_starttls: bool
    smtp_username: str
    smtp_password: str
    smtp_sender: str


_KINDS = {int: "整数", float: "数字", bool: "true 或 false", str: "文字"}


def _typed(where: str, hint: Any, value: Any) -> Any:
    """``value`` as ``hint`` (int, float, bool, str, tuple[str, ...], Literal[...]); ConfigError otherwise."""
    origin = get_origin(hint)
    if origin is Literal:
        if value not in get_args(hint):
            raise ConfigError(f"{where} = {value!r}：只能是 {' / '.join(map(str, get_args(hint)))}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
            raise ConfigError(f"{where} = {value!r}：应为文字的列表")
        return tuple(value)
    ok = isinstance(value, hint) and not (hint in (int, float) and isinstance(value, bool))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        raise ConfigError(f"{where} = {value!r}：应为{_KINDS[hint]}")
    return value


T = TypeVar("T")


def section(cls: type[T], name: str, values: Any) -> T:
    """The ``[name]`` table as ``cls``; refuses a missing or unknown key and a value of the wrong type."""
    if not isinstance(values, dict):
        raise ConfigError(f"缺少配置节 [{name}]" if values is None else f"[{name}] 应为配置节（表）")
    hints = get_type_hints(cls)
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise ConfigError(f"[{name}] 中有未知的配置项 {', '.join(unknown)}（可用：{', '.join(hints)}）")
    missing = [key for key in hints if key not in values]
    if missing:
        raise ConfigError(f"[{name}] 缺少配置项 {', '.join(missing)}")
    return cls(**{key: _typed(f"[{name}] {key}", hint, values[key]) for key, hint in hints.items()})


class _Section(Generic[T]):
    """``settings.<name>``: the typed [name] section, built on first use (load_settings builds them all)."""

    def __init__(self, cls: type[T]) -> None:
        self.cls = cls

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> T:
        if obj is None:
            return self  # type: ignore[return-value]
        value = section(self.cls, self.name, obj.raw.get(self.name))
        obj.__dict__[self.name] = value  # cached like functools.cached_property (tests may replace it)
        return value


@dataclass
class Settings:
    """Typed view over config/hotline.toml plus the instance's paths and secrets."""

    raw: dict[str, dict[str, Any]]
    var_dir: Path
    secrets: dict[str, str] = field(default_factory=dict)

    centre = _Section(CentreSettings)
    sip = _Section(SipSettings)
    webphone = _Section(WebphoneSettings)
    ami = _Section(AmiSettings)
    agi = _Section(AgiSettings)
    web = _Section(WebSettings)
    passwords = _Section(PasswordsSettings)
    metrics = _Section(MetricsSettings)
    redis = _Section(RedisSettings)
    database = _Section(DatabaseSettings)
    asterisk = _Section(AsteriskSettings)
    cluster = _Section(ClusterSettings)
    hours = _Section(HoursSettings)
    queues = _Section(QueuesSettings)
    callbacks = _Section(CallbacksSettings)
    kpi = _Section(KpiSettingsSection)
    return_visits = _Section(ReturnVisitsSettings)
    alerts = _Section(AlertsSettings)
    recordings = _Section(RecordingsSettings)
    logs = _Section(LogsSettings)
    disk = _Section(DiskSettings)
    priority = _Section(PrioritySettings)
    backup = _Section(BackupSettings)
    voicemail = _Section(VoicemailSettings)
    transcription = _Section(TranscriptionSettings)
    tickets = _Section(TicketsSettings)
    notify = _Section(NotifySettings)

    def __getitem__(self, section: str) -> Any:
        # Say what replaced the dict lookups to code written before the typed sections.
        raise TypeError(f"settings[{section!r}] is gone: read settings.{section}.<key> (typed sections, core/settings.py)")

    def check(self) -> None:
        """Build every section: a wrong, unknown or missing setting is refused now, not at its first use."""
        names = [name for name, value in vars(type(self)).items() if isinstance(value, _Section)]
        unknown = sorted(set(self.raw) - set(names) - {"nodes"})
        if unknown:
            raise ConfigError(f"未知的配置节 [{unknown[0]}]（可用：{', '.join(names)}、nodes.<节点名>）")
        for name in names:
            getattr(self, name)
        self.nodes  # noqa: B018 - a wrong node list is refused at start-up, not at the first call
        if self.cluster.nodes and not self.database_url.startswith("postgresql"):
            # Every node's CTI work, the desk and (next) the shared queue meet in one database: SQLite is a file
            # on one machine with one writer at a time.
            raise ConfigError("集群模式（[cluster] nodes）需要 PostgreSQL 数据库：请在 [database] url 中填写 "
                              "postgresql+asyncpg://用户:密码@主机/库名；SQLite 只能用于单节点平台")

    # --- paths -----------------------------------------------------------
    @property
    def log_dir(self) -> Path:
        return self.var_dir / "log"

    @property
    def run_dir(self) -> Path:
        return self.var_dir / "run"

    @property
    def recordings_dir(self) -> Path:
        configured = self.recordings.storage
        return Path(configured) if configured else self.var_dir / "recordings"

    @cached_property
    def instance_id(self) -> str:
        """Short stable id of this instance, so several can share one Asterisk runtime."""
        return hashlib.sha256(str(self.var_dir.resolve()).encode()).hexdigest()[:10]

    # --- URLs ------------------------------------------------------------
    @property
    def redis_url(self) -> str:
        return self.redis.url or f"redis://127.0.0.1:{self.redis.port}/0"

    @property
    def runs_own_redis(self) -> bool:
        return not self.redis.url

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite+aiosqlite:///{self.var_dir / 'hotline.db'}"

    @property
    def web_url(self) -> str:
        return f"http://{self.web.host}:{self.web.port}"

    @property
    def timezone(self) -> str:
        return self.centre.timezone

    @cached_property
    def nodes(self) -> list[AsteriskNode]:
        """The Asterisk nodes, the first one first (config: [asterisk] nodes, [nodes.<name>])."""
        return _nodes(self)

    def node(self, name: str | None) -> AsteriskNode:
        """The node called ``name``; the first node for None (rows from before nodes existed)."""
        found = next((node for node in self.nodes if node.name == name), None) if name else self.nodes[0]
        if found is None:
            raise ConfigError(f"no Asterisk node {name!r} in asterisk.nodes")
        return found

    def sip_password(self, extension: str) -> str:
        return self.secrets[f"sip_{extension}"]

    @property
    def clustered(self) -> bool:
        """Kamailio in front of the Asterisk nodes ([cluster] nodes > 0)."""
        return self.cluster.nodes > 0

    @property
    def phone_extensions(self) -> list[str]:
        return [*self.sip.agent_extensions, *self.sip.lead_extensions]


def _load_or_create_secrets(path: Path, extensions: list[str]) -> dict[str, str]:
    data: dict[str, str] = {}
    if path.exists():
        data = {k: str(v) for k, v in tomllib.loads(path.read_text()).items()}
    wanted = list(SECRET_NAMES) + [f"sip_{ext}" for ext in extensions]
    missing = [name for name in wanted if name not in data]
    if missing:
        for name in missing:
            # Phone passwords must be typeable on a handset keypad; others are long.
            data[name] = (
                "".join(secrets.choice("23456789abcdefghjkmnpqrstuvwxyz") for _ in range(10))
                if name.startswith("sip_") or name.endswith("_password")
                else secrets.token_urlsafe(32)
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        # Created 0600: never readable by other users, not even for a moment before a chmod.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("".join(f'{k} = "{v}"\n' for k, v in sorted(data.items())))
        tmp.replace(path)
    return data


def load_settings(
    var_dir: Path | str | None = None,
    config_file: Path | str | None = None,
    env: dict[str, str] | None = None,
) -> Settings:
    """Read the configuration, apply HOTLINE_* overrides and make sure secrets exist."""
    env = dict(os.environ if env is None else env)
    path = Path(config_file or env.get("HOTLINE_CONFIG") or DEFAULT_CONFIG)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: configuration file not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    _apply_env_overrides(raw, env)
    var = Path(var_dir or env.get("HOTLINE_VAR") or REPO_ROOT / "var").resolve()
    settings = Settings(raw=raw, var_dir=var)
    try:
        settings.check()
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    settings.secrets = _load_or_create_secrets(var / "secrets.toml", settings.phone_extensions)
    return settings
