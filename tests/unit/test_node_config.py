"""Node TOML configs: the shipped example validates; every mistake names file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from phe_fl.errors import ConfigError
from phe_fl.federation.config import load_node_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "nodes" / "example"

GOOD = """
[node]
id = "n1"
party = 1
n_parties = 3
listen = "127.0.0.1:5000"
params = "n14-depth5-128"
[tree]
parent = "n0"
children = [{ id = "n2", address = "127.0.0.1:5001" }]
[data]
dataset = "breast_cancer"
shard = 1
shards = 3
[tls]
cert = "c.pem"
key = "c.key"
ca = "ca.pem"
[policy]
queriers = ["q"]
"""


def test_example_federation_forms_a_tree_of_depth_two() -> None:
    configs = {c.id: c for c in map(load_node_config, sorted(EXAMPLE.glob("node-*.toml")))}
    assert len(configs) == 5
    assert configs["node-0"].is_root and configs["node-0"].parent is None
    assert {c.id for c in configs["node-1"].children} == {"node-3", "node-4"}
    assert configs["node-3"].parent == "node-1"
    assert sorted(c.party for c in configs.values()) == list(range(5))
    assert configs["node-2"].tls.ca == EXAMPLE / "certs" / "ca.pem"


def test_good_config_loads(tmp_path: Path) -> None:
    path = tmp_path / "n1.toml"
    path.write_text(GOOD)
    cfg = load_node_config(path)
    assert cfg.party == 1 and cfg.children[0].address == "127.0.0.1:5001"
    assert cfg.policy.queriers == ("q",) and not cfg.policy.allow_decryption


@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        ("party = 1", "party = 3", r"\[node\]: party 3 must be in 0..n_parties-1"),
        ("party = 1", 'party = "1"', r"field 'party' must be int"),
        ('params = "n14-depth5-128"', 'params = "n99"', r"unknown parameter set 'n99'"),
        ('listen = "127.0.0.1:5000"', 'listen = "nowhere"', r"listen 'nowhere' must be host:port"),
        ('parent = "n0"', 'parent = ""', r"party 0 is the root"),
        ("shard = 1", "shard = 7", r"\[data\]: shard 7"),
        ('cert = "c.pem"\n', "", r"\[tls\]: missing required field 'cert'"),
        ('id = "n1"', 'id = "bad id!"', r"id 'bad id!' must be"),
    ],
)
def test_bad_configs_name_the_field(tmp_path: Path, old: str, new: str, match: str) -> None:
    path = tmp_path / "n1.toml"
    path.write_text(GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError, match=match) as info:
        load_node_config(path)
    assert str(path) in str(info.value)


def test_missing_file_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_node_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[node\nid=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_node_config(bad)
