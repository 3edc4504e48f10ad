"""Platform settings: one TOML file (config/hotline.toml), environment overrides, generated secrets.

Every service reads its configuration through :func:`load_settings`, so the
network contract, paths and policies are decided in exactly one place.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
# The policy files and hotline.toml; HOTLINE_CONFIG_DIR points a centre (or a test) at its own copy.
CONFIG_DIR = Path(os.environ.get("HOTLINE_CONFIG_DIR") or REPO_ROOT / "config").resolve()
DEFAULT_CONFIG = CONFIG_DIR / "hotline.toml"

# Each process logs in to Redis (core.redis) and to AMI (core.ami) as its own user with its own secret.
REDIS_USERS = ("ivr", "cti", "agent_desk", "recordings", "scheduler", "tools")
AMI_ACCOUNTS = ("cti", "tools")  # the desk has none: the CTI carries out its commands (cti.protocol)
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


def _nodes(raw: dict[str, Any]) -> list[AsteriskNode]:
    names = list(raw["asterisk"].get("nodes") or [DEFAULT_NODE])
    tables = raw.get("nodes", {})
    sip, ami = raw["sip"], raw["ami"]
    nodes = []
    for index, name in enumerate(names):
        if not NODE_NAME.match(str(name)):
            raise ConfigError(f"asterisk.nodes: {name!r} is not a node name (a-z then a-z/0-9, at most 16)")
        table = dict(tables.get(name, {}))
        unknown = set(table) - set(NODE_KEYS)
        if unknown:
            raise ConfigError(f"nodes.{name}: unknown key(s) {', '.join(sorted(unknown))}")
        if index == 0:  # the single-node set-up: [sip] and [ami] describe it
            table = {"address": sip["bind"], "sip_port": sip["port"], "ami_host": ami["host"], "ami_port": ami["port"],
                     "rtp_start": sip["rtp_start"], "rtp_end": sip["rtp_end"], **table}
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


@dataclass
class Settings:
    """Typed view over config/hotline.toml plus the instance's paths and secrets."""

    raw: dict[str, dict[str, Any]]
    var_dir: Path
    secrets: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.raw[section]

    # --- paths -----------------------------------------------------------
    @property
    def log_dir(self) -> Path:
        return self.var_dir / "log"

    @property
    def run_dir(self) -> Path:
        return self.var_dir / "run"

    @property
    def recordings_dir(self) -> Path:
        configured = self.raw["recordings"]["storage"]
        return Path(configured) if configured else self.var_dir / "recordings"

    @cached_property
    def instance_id(self) -> str:
        """Short stable id of this instance, so several can share one Asterisk runtime."""
        return hashlib.sha256(str(self.var_dir.resolve()).encode()).hexdigest()[:10]

    # --- URLs ------------------------------------------------------------
    @property
    def redis_url(self) -> str:
        return self.raw["redis"]["url"] or f"redis://127.0.0.1:{self.raw['redis']['port']}/0"

    @property
    def runs_own_redis(self) -> bool:
        return not self.raw["redis"]["url"]

    @property
    def database_url(self) -> str:
        return self.raw["database"]["url"] or f"sqlite+aiosqlite:///{self.var_dir / 'hotline.db'}"

    @property
    def web_url(self) -> str:
        return f"http://{self.raw['web']['host']}:{self.raw['web']['port']}"

    @property
    def timezone(self) -> str:
        return self.raw["centre"]["timezone"]

    @cached_property
    def nodes(self) -> list[AsteriskNode]:
        """The Asterisk nodes, the first one first (config: [asterisk] nodes, [nodes.<name>])."""
        return _nodes(self.raw)

    def node(self, name: str | None) -> AsteriskNode:
        """The node called ``name``; the first node for None (rows from before nodes existed)."""
        found = next((node for node in self.nodes if node.name == name), None) if name else self.nodes[0]
        if found is None:
            raise ConfigError(f"no Asterisk node {name!r} in asterisk.nodes")
        return found

    def sip_password(self, extension: str) -> str:
        return self.secrets[f"sip_{extension}"]

    @property
    def phone_extensions(self) -> list[str]:
        return list(self.raw["sip"]["agent_extensions"]) + list(self.raw["sip"]["lead_extensions"])


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
    settings.nodes  # noqa: B018 - a wrong node list is refused at start-up, not at the first call
    settings.secrets = _load_or_create_secrets(var / "secrets.toml", settings.phone_extensions)
    return settings
