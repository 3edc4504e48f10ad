"""The one way to reach Redis: per-service ACL users, retries and health checks.

Every Redis client of the platform (services, ``./hotline status``/``hours``,
tests, benchmarks) is made by :func:`connect` or :func:`connect_sync`, so that

* each process logs in as its own ACL user (``hotline-<service>``) holding only
  the commands and key patterns it uses; the platform's own redis-server has the
  ``default`` user switched off, so a local process without a password is refused;
* a connection that died with a Redis restart is noticed and replaced instead of
  failing requests for minutes (retry with backoff on connection errors, a PING
  before reusing a connection idle for a while, TCP keepalive).

The users are written by :func:`write_acl_file` into ``var/redis/users.acl``
(mode 600, passwords as SHA-256 only), which ``cli.stack`` hands to redis-server
with ``--aclfile``: no password ever appears on a command line.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import redis as redis_sync
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import EqualJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from core.settings import REDIS_USERS, Settings

# Commands every client needs to open and check a connection (redis-py sends CLIENT SETINFO, health checks PING).
_CONNECTION = "+ping +echo +select +client|setname +client|getname +client|id"

# Who may do what. Key patterns follow the key names in the code: core.service (hotline:health:<svc>[:problem]),
# core.metrics (hotline:metrics:<svc>:*), core.events (hotline:events), cti.control (hotline:agents:*,
# hotline:cti:held|consult:*), cti.protocol (hotline:cti:commands, :reply:*, :cmd:*), core.hours
# (hotline:hours:override), agent_desk.auth and .login_guard (hotline:web:*), agent_desk.webphone
# (hotline:desk:*).
# The CTI is the one writer of agent state: the desk may only read hotline:agents:* and the CTI's heartbeat
# (%R~), and talks to the CTI through the command stream.
ACL_RULES: dict[str, str] = {
    "ivr": "~hotline:health:ivr ~hotline:health:ivr:* ~hotline:metrics:ivr:* ~hotline:hours:override "
           "+get +set +del +hget +lpush +ltrim",
    "cti": "~hotline:health:cti ~hotline:health:cti:* ~hotline:metrics:cti:* ~hotline:cti:* ~hotline:agents:* "
           "~hotline:events +get +set +del +expire +hget +hset +hdel +hkeys +hgetall +xadd +lpush +ltrim "
           "+xreadgroup +xack +xgroup|create +hincrby",
    "agent_desk": "~hotline:web:* ~hotline:desk:* %R~hotline:agents:* ~hotline:events ~hotline:hours:override "
                  "~hotline:cti:commands ~hotline:cti:reply:* ~hotline:cti:cmd:* "
                  "%R~hotline:health:cti %R~hotline:health:cti:problem "
                  "+get +set +del +expire +ttl +exists +incr +incrby +multi +exec +discard +scan "
                  "+hget +hgetall +xadd +xread +xrange +xrevrange +blpop",
    "recordings": "~hotline:health:recordings ~hotline:health:recordings:* ~hotline:metrics:recordings:* "
                  "~hotline:events +get +set +del +lpush +ltrim +xadd",
    "scheduler": "~hotline:health:scheduler ~hotline:health:scheduler:* ~hotline:events +get +set +del +xadd",
    # The operator's command line, the tests and the benchmarks: any hotline key, no server administration
    # (FLUSHALL, CONFIG, DEBUG, SHUTDOWN... are @dangerous); ACL LOG shows which service was refused what.
    "tools": "~hotline:* +@all -@dangerous +keys +info +acl|log",
}
SERVICES = tuple(ACL_RULES)
assert set(SERVICES) == set(REDIS_USERS), "core.settings.REDIS_USERS names the secrets of these users"
CONNECTION_ERRORS = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)

HEALTH_CHECK_SECONDS = 5  # a connection idle longer than this is PINGed before it is used again
_RETRIES = 8              # 1.6-3.2 s of backoff in all: covers a supervised restart of redis-server
_BACKOFF = {"base": 0.05, "cap": 0.5}


def username(service: str) -> str:
    return f"hotline-{service}"


def password_name(service: str) -> str:
    """The secret's name in var/secrets.toml."""
    return f"redis_{service}"


def acl_file_text(settings: Settings) -> str:
    lines = ["user default off resetkeys resetchannels -@all"]
    for service, rules in ACL_RULES.items():
        digest = hashlib.sha256(settings.secrets[password_name(service)].encode()).hexdigest()
        lines.append(f"user {username(service)} on #{digest} resetchannels -@all {_CONNECTION} {rules}")
    return "\n".join(lines) + "\n"


def write_acl_file(settings: Settings, path: Path) -> Path:
    """Write the ACL users for a platform-run redis-server (mode 600 from the start, never readable by others)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(acl_file_text(settings))
    tmp.replace(path)
    return path


def server_command(settings: Settings, data_dir: Path, persistent: bool = True) -> list[str]:
    """The platform's own redis-server: loopback only, protected mode, the ACL users above (default user off).

    The ACL file is (re)written here; passwords never appear in the arguments (``ps`` shows those)."""
    acl = write_acl_file(settings, data_dir / "users.acl")
    return ["redis-server", "--bind", "127.0.0.1", "--port", str(settings.redis.port),
            "--protected-mode", "yes", "--aclfile", str(acl), "--dir", str(data_dir),
            "--appendonly", "yes" if persistent else "no", "--save", "", "--daemonize", "no"]


def _options(settings: Settings, service: str) -> dict:
    if service not in ACL_RULES:
        raise ValueError(f"unknown Redis client {service!r}; one of {', '.join(SERVICES)}")
    options: dict = {
        "socket_connect_timeout": 2,
        # Longer than the desk's blocking XREAD (agent_desk.live.BLOCK_MS), so a quiet stream is not an error.
        "socket_timeout": 15,
        "socket_keepalive": True,
        "health_check_interval": HEALTH_CHECK_SECONDS,
        "client_name": username(service),
    }
    if settings.runs_own_redis:
        options["username"] = username(service)
        options["password"] = settings.secrets[password_name(service)]
    return options


def connect(settings: Settings, service: str, decode_responses: bool = True) -> aioredis.Redis:
    """An asyncio client for ``service`` (one of :data:`SERVICES`)."""
    retry = AsyncRetry(EqualJitterBackoff(**_BACKOFF), _RETRIES)
    return aioredis.Redis.from_url(
        settings.redis_url, decode_responses=decode_responses, retry=retry,
        retry_on_error=[RedisConnectionError, RedisTimeoutError], **_options(settings, service))


def connect_sync(settings: Settings, service: str = "tools", decode_responses: bool = True) -> redis_sync.Redis:
    """A blocking client (command line, ``./hotline status``)."""
    retry = Retry(EqualJitterBackoff(**_BACKOFF), _RETRIES)
    return redis_sync.Redis.from_url(
        settings.redis_url, decode_responses=decode_responses, retry=retry,
        retry_on_error=[RedisConnectionError, RedisTimeoutError], **_options(settings, service))
