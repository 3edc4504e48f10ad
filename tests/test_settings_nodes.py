"""The Asterisk node list of config/hotline.toml (issue 14 item 6): one node by default, described by
[sip] and [ami]; further nodes by their own tables; a wrong list is refused at start-up with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import DEFAULT_CONFIG, ConfigError, load_settings

NODE2 = """
[nodes.node2]
address = "127.0.0.3"
sip_port = 5062
ami_port = 5039
rtp_start = 11000
rtp_end = 11999
"""


def _settings(tmp_path: Path, extra: str = "", **env: str):
    config = tmp_path / "hotline.toml"
    config.write_text(DEFAULT_CONFIG.read_text(encoding="utf-8") + extra, encoding="utf-8")
    return load_settings(var_dir=tmp_path / "var", config_file=config, env=env)


def test_one_node_by_default_where_sip_and_ami_say(tmp_path):
    settings = _settings(tmp_path, HOTLINE_SIP_PORT="25000", HOTLINE_AMI_PORT="25001")
    (node,) = settings.nodes
    assert (node.name, node.address, node.sip_port, node.ami_host, node.ami_port, node.first) == \
        ("node1", "127.0.0.1", 25000, "127.0.0.1", 25001, True)
    assert node.program == "asterisk" and settings.node(None) is node


def test_a_second_node_from_its_table(tmp_path):
    settings = _settings(tmp_path, NODE2, HOTLINE_ASTERISK_NODES="node1,node2")
    second = settings.node("node2")
    assert (second.address, second.sip_port, second.ami_host, second.ami_port, second.first) == \
        ("127.0.0.3", 5062, "127.0.0.3", 5039, False)
    assert second.program == "asterisk-node2"


@pytest.mark.parametrize(("extra", "nodes", "reason"), [
    ("", "node1,node2", "nodes.node2: missing address"),
    ("", "node1,Node-2", "is not a node name"),
    (NODE2.replace("ami_port = 5039", 'ami_host = "127.0.0.1"\nami_port = 5038'), "node1,node2", "two nodes share a AMI address and port"),
    (NODE2.replace('"127.0.0.3"', '"127.0.0.1"').replace("5062", "5060"), "node1,node2",
     "two nodes share a SIP address and port"),
    (NODE2 + "colour = 1\n", "node1,node2", "unknown key(s) colour"),
])
def test_a_wrong_node_list_is_refused_at_start_up(tmp_path, extra, nodes, reason):
    with pytest.raises(ConfigError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        _settings(tmp_path, extra, HOTLINE_ASTERISK_NODES=nodes)
