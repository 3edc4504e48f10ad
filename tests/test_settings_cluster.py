"""Cluster mode as configuration (issue 19 item 2): no [cluster] nodes is exactly the single-node platform
(no Kamailio program, no Kamailio file); [cluster] nodes = N puts Kamailio where [sip] says and N Asterisk
nodes on their own loopback addresses; it needs PostgreSQL and refuses SQLite with a plain message; the
rendered kamailio.cfg passes Kamailio's own configuration check."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cli.stack import supervisord_conf
from core import kamailio
from core.asterisk_config import template_values
from core.asterisk_runtime import AsteriskRuntime
from core.settings import DEFAULT_CONFIG, ConfigError, load_settings

POSTGRES = "postgresql+asyncpg://hotline@127.0.0.1/hotline"


def _settings(tmp_path: Path, extra: str = "", **env: str):
    config = tmp_path / "hotline.toml"
    config.write_text(DEFAULT_CONFIG.read_text(encoding="utf-8") + extra, encoding="utf-8")
    return load_settings(var_dir=tmp_path / "var", config_file=config, env=env)


def _runtime(tmp_path: Path) -> AsteriskRuntime:
    return AsteriskRuntime(tmp_path / "root", "t")


def test_no_cluster_setting_is_the_single_node_platform(tmp_path):
    settings = _settings(tmp_path)
    assert not settings.clustered
    (node,) = settings.nodes
    assert (node.address, node.sip_port) == (settings.sip.bind, settings.sip.port)
    conf = supervisord_conf(settings, _runtime(tmp_path))
    assert "[program:kamailio]" not in conf and kamailio.KAMAILIO not in conf
    # The carrier is identified by its own address, as before.
    assert template_values(settings, _runtime(tmp_path))["carrier_match"] == settings.sip.carrier_address


def test_cluster_nodes_put_kamailio_in_front_of_nodes_on_their_own_addresses(tmp_path):
    settings = _settings(tmp_path, HOTLINE_CLUSTER_NODES="2", HOTLINE_DATABASE_URL=POSTGRES)
    assert settings.clustered
    assert [(n.name, n.address, n.sip_port, n.ami_host, n.ami_port) for n in settings.nodes] == [
        ("node1", "127.0.0.11", 5060, "127.0.0.11", 5038), ("node2", "127.0.0.12", 5060, "127.0.0.12", 5038)]
    conf = supervisord_conf(settings, _runtime(tmp_path))
    assert "[program:kamailio]" in conf and "[program:asterisk-node2]" in conf
    # Each node takes the carrier's calls from Kamailio's side towards the nodes, not from the carrier.
    values = template_values(settings, _runtime(tmp_path), settings.node("node2"))
    assert (values["sip_bind"], values["carrier_match"]) == ("127.0.0.12", "127.0.0.10")
    assert kamailio.dispatcher_list(settings).splitlines() == [
        "1 sip:127.0.0.11:5060 0 0 duid=node1;socket=udp:127.0.0.10:5060",
        "1 sip:127.0.0.12:5060 0 0 duid=node2;socket=udp:127.0.0.10:5060"]


def test_cluster_mode_refuses_sqlite_with_a_plain_message(tmp_path):
    with pytest.raises(ConfigError, match="集群模式.*需要 PostgreSQL.*SQLite 只能用于单节点"):
        _settings(tmp_path, HOTLINE_CLUSTER_NODES="2")


def test_a_node_on_kamailios_address_is_refused(tmp_path):
    table = '\n[nodes.node2]\naddress = "127.0.0.1"\n'
    with pytest.raises(ConfigError, match="是 Kamailio 的监听地址"):
        _settings(tmp_path, table, HOTLINE_CLUSTER_NODES="2", HOTLINE_DATABASE_URL=POSTGRES)


def test_the_rendered_kamailio_cfg_passes_kamailios_own_check(tmp_path):
    settings = _settings(tmp_path, HOTLINE_CLUSTER_NODES="2", HOTLINE_DATABASE_URL=POSTGRES,
                         HOTLINE_SIP_PORT="25060")
    try:
        _check_rendered(kamailio.render_kamailio_config(settings))
    finally:
        kamailio.remove_run_dir(settings)  # /run/kamailio/hotline-<instance>, outside tmp_path


def _check_rendered(cfg) -> None:
    text = cfg.read_text()
    assert "listen=udp:127.0.0.1:25060" in text and "listen=udp:127.0.0.10:25060" in text
    assert '$si != "127.0.0.2"' in text
    # The registrar reads the phones' HA1 from the platform's PostgreSQL, in db_postgres's own URL form.
    assert 'modparam("auth_db", "db_url", "postgres://hotline@127.0.0.1/hotline")' in text
    # kamailio -c parses the file and loads every module with its parameters, then exits.
    check = subprocess.run([kamailio.KAMAILIO, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


def test_kamailio_runs_as_its_own_user_from_a_run_folder_of_its_own(tmp_path):
    """Not as root: `-u/-g kamailio`, and a run folder the kamailio user owns (its control socket and pid
    file are written after it dropped root) outside the instance's root-only var/; the rendered files,
    with the database password, for root and the kamailio group only."""
    settings = _settings(tmp_path, HOTLINE_CLUSTER_NODES="2", HOTLINE_DATABASE_URL=POSTGRES)
    try:
        cfg = kamailio.render_kamailio_config(settings)
        folder = kamailio.run_dir(settings)
        uid, gid = kamailio.account()
        assert uid != 0 and cfg.parent == folder and not folder.is_relative_to(settings.var_dir)
        assert (folder.stat().st_uid, folder.stat().st_gid, folder.stat().st_mode & 0o777) == (uid, gid, 0o750)
        for name in ("kamailio.cfg", "dispatcher.list"):
            st = (folder / name).stat()
            assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, gid, 0o640), name
        command = kamailio.command(settings)
        assert command[command.index("-u") + 1] == command[command.index("-g") + 1] == "kamailio"
        assert kamailio.ctl_socket(settings).parent == folder
    finally:
        kamailio.remove_run_dir(settings)
    assert not kamailio.run_dir(settings).exists()


def test_a_service_reporting_a_problem_is_shown_with_it_not_as_redis_broken(tmp_path):
    """check_health read the problem as bytes; the Redis client gives str, so one service's problem made
    Redis itself look broken and hid every heartbeat (seen while the cluster stack started under load)."""
    from cli.stack import check_health
    from core.redis import connect_sync
    from core.service import problem_key
    from tests.redis_server import free_port, private_redis

    settings = load_settings(var_dir=tmp_path, env={"HOTLINE_REDIS_PORT": str(free_port())})
    with private_redis(settings):
        connect_sync(settings).set(problem_key("cti"), "事件处理停滞")
        health = {h.name: h for h in check_health(settings, _runtime(tmp_path))}
    assert health["redis"].ok, health["redis"].detail
    assert (health["cti"].ok, health["cti"].detail) == (False, "事件处理停滞")


def test_up_with_nodes_on_sqlite_stops_before_touching_anything(tmp_path, monkeypatch, capsys):
    """`./hotline up --nodes 2` is cluster mode for that run; on SQLite it stops at once with the reason."""
    from cli.__main__ import main

    monkeypatch.setenv("HOTLINE_VAR", str(tmp_path / "var"))
    monkeypatch.setenv("HOTLINE_CLUSTER_NODES", "0")  # restored afterwards: --nodes sets it for the run
    monkeypatch.delenv("HOTLINE_DATABASE_URL", raising=False)
    assert main(["up", "--nodes", "2"]) == 1
    assert "集群模式（[cluster] nodes）需要 PostgreSQL" in capsys.readouterr().err
    assert not (tmp_path / "var" / "run").exists()  # nothing rendered, migrated or started
