"""Node TOML configs: the shipped example validates; every mistake names file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from phe_fl.errors import ConfigError
from phe_fl.federation.config import SCHEMA, ParentLink, Policy, load_node_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "nodes" / "example"

# a node in the middle of a tree: it has a parent and children, so it listens
GOOD = """
[node]
id = "n1"
party = 1
n_parties = 4
listen = "127.0.0.1:5000"
params = "n14-depth5-128"
[tree]
parent = { id = "n0", address = "127.0.0.1:4999" }
children = ["n2", "n3"]
[data]
dataset = "breast_cancer"
shard = 1
shards = 4
[tls]
cert = "c.pem"
key = "c.key"
ca = "ca.pem"
[policy]
queriers = ["q"]
"""
PARENT = 'parent = { id = "n0", address = "127.0.0.1:4999" }'
CHILDREN = 'children = ["n2", "n3"]'
LISTEN = 'listen = "127.0.0.1:5000"'


def write(tmp_path: Path, text: str, name: str = "n1.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def edit(*changes: tuple[str, str]) -> str:
    text = GOOD
    for old, new in changes:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def test_example_federation_forms_a_tree_of_depth_two() -> None:
    configs = {c.id: c for c in map(load_node_config, sorted(EXAMPLE.glob("node-*.toml")))}
    assert sorted(configs) == [f"node-{i}" for i in range(5)]
    assert sorted(c.party for c in configs.values()) == list(range(5))
    root = configs["node-0"]
    assert root.is_root and root.parent is None and root.listen is not None
    assert root.children == ("node-1", "node-2")
    assert configs["node-1"].children == ("node-3", "node-4")
    assert configs["node-1"].parent == ParentLink("node-0", root.listen)
    assert configs["node-3"].parent == ParentLink("node-1", configs["node-1"].listen)
    for c in configs.values():
        assert isinstance(c.children, tuple) and all(isinstance(k, str) for k in c.children)
        if c.parent is not None:
            parent = configs[c.parent.id]
            assert c.id in parent.children  # the parent expects the child that dials it
            assert c.parent.address == parent.listen  # and listens where the child dials
        for child in c.children:
            assert configs[child].parent is not None and configs[child].parent.id == c.id
        if c.children or c.is_root:
            assert c.listen is not None
        else:  # leaves dial out and do not listen
            assert c.listen is None
    leaves = {c.id for c in configs.values() if not c.children}
    assert leaves == {"node-2", "node-3", "node-4"}
    depth = {"node-0": 0}
    for node_id in ("node-1", "node-2", "node-3", "node-4"):
        parent = configs[node_id].parent
        assert parent is not None
        depth[node_id] = depth[parent.id] + 1
    assert max(depth.values()) == 2
    assert configs["node-2"].tls.ca == EXAMPLE / "certs" / "ca.pem"
    assert len({c.params for c in configs.values()}) == 1
    assert {c.n_parties for c in configs.values()} == {5}


def test_good_config_loads(tmp_path: Path) -> None:
    cfg = load_node_config(write(tmp_path, GOOD))
    assert (cfg.id, cfg.party, cfg.n_parties, cfg.listen) == ("n1", 1, 4, "127.0.0.1:5000")
    assert cfg.parent == ParentLink("n0", "127.0.0.1:4999")
    assert cfg.children == ("n2", "n3") and not cfg.is_root
    assert cfg.tls.cert == tmp_path / "c.pem" and cfg.tls.ca == tmp_path / "ca.pem"
    assert cfg.data.dataset == "breast_cancer" and (cfg.data.shard, cfg.data.shards) == (1, 4)
    assert cfg.policy == Policy(("q",), allow_decryption=False, release_statistics=True)
    assert cfg.source == tmp_path / "n1.toml"


def test_leaf_loads_without_listen(tmp_path: Path) -> None:
    cfg = load_node_config(write(tmp_path, edit((LISTEN + "\n", ""), (CHILDREN, "children = []"))))
    assert cfg.listen is None and cfg.children == () and cfg.parent is not None
    no_children_key = load_node_config(write(tmp_path, edit((LISTEN + "\n", ""), (CHILDREN, ""))))
    assert no_children_key.children == ()


def test_root_loads_without_parent(tmp_path: Path) -> None:
    cfg = load_node_config(write(tmp_path, edit(("party = 1", "party = 0"), (PARENT, ""))))
    assert cfg.is_root and cfg.parent is None and cfg.children == ("n2", "n3")
    leafless = load_node_config(
        write(tmp_path, edit(("party = 1", "party = 0"), (PARENT, ""), (CHILDREN, "")))
    )
    assert leafless.is_root and leafless.children == () and leafless.listen is not None


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        # [node]
        pytest.param(
            [("party = 1", "party = 4")],
            r"\[node\]: party 4 must be in 0..n_parties-1",
            id="party-out-of-range",
        ),
        pytest.param(
            [("party = 1", 'party = "1"')],
            r"\[node\]: field 'party' must be int",
            id="party-string",
        ),
        pytest.param(
            [("party = 1", "party = true")],
            r"field 'party' must be int, got True",
            id="party-bool",
        ),
        pytest.param(
            [('params = "n14-depth5-128"', 'params = "n99"')],
            r"unknown parameter set 'n99'",
            id="unknown-params",
        ),
        pytest.param(
            [(LISTEN, 'listen = "nowhere"')],
            r"listen 'nowhere' must be host:port",
            id="bad-listen",
        ),
        pytest.param(
            [('id = "n1"', 'id = "bad id!"')], r"\[node\]: id 'bad id!' must be", id="bad-id"
        ),
        pytest.param(
            [('id = "n1"\n', "")], r"\[node\]: missing required field 'id'", id="missing-id"
        ),
        # [tree]: parent
        pytest.param(
            [("party = 1", "party = 0")],
            r"\[tree\]: party 0 is the root and has no parent",
            id="root-with-parent",
        ),
        pytest.param(
            [(PARENT, "")],
            r"\[tree\]: party 0 is the root and has no parent; others need one",
            id="no-parent",
        ),
        pytest.param(
            [(PARENT, 'parent = "n0"')],
            r"\[tree\]: parent must be a table \{ id = ",
            id="parent-as-string",
        ),
        pytest.param(
            [(PARENT, 'parent = { address = "127.0.0.1:4999" }')],
            r"\[tree\] parent: missing required field 'id'",
            id="parent-without-id",
        ),
        pytest.param(
            [(PARENT, 'parent = { id = "n0" }')],
            r"\[tree\] parent: missing required field 'address'",
            id="parent-without-address",
        ),
        pytest.param(
            [(PARENT, 'parent = { id = "n 0", address = "127.0.0.1:4999" }')],
            r"\[tree\] parent: id 'n 0' must be 1-64 of",
            id="bad-parent-id",
        ),
        pytest.param(
            [(PARENT, 'parent = { id = "n0", address = "127.0.0.1" }')],
            r"\[tree\] parent: address '127.0.0.1' must be host:port",
            id="parent-address-without-port",
        ),
        pytest.param(
            [(PARENT, 'parent = { id = "n0", address = 4999 }')],
            r"\[tree\] parent: field 'address' must be str",
            id="parent-address-not-string",
        ),
        # [tree]: children
        pytest.param(
            [(CHILDREN, 'children = ["n2", { id = "n3", address = "127.0.0.1:5001" }]')],
            r"\[tree\]: children\[1\] must be a node id \(children dial in",
            id="child-as-table-second",
        ),
        pytest.param(
            [(CHILDREN, 'children = [{ id = "n2", address = "127.0.0.1:5001" }]')],
            r"\[tree\]: children\[0\] must be a node id",
            id="child-as-table-old-format",
        ),
        pytest.param(
            [(CHILDREN, 'children = ["n2", "bad id"]')],
            r"children\[1\] must be a node id",
            id="bad-child-id",
        ),
        pytest.param(
            [(CHILDREN, 'children = "n2"')],
            r"\[tree\]: field 'children' must be list",
            id="children-not-a-list",
        ),
        pytest.param(
            [(CHILDREN, 'children = ["n2", "n3", "n2"]')],
            r"\[tree\]: duplicate child ids",
            id="duplicate-children",
        ),
        pytest.param(
            [(CHILDREN, 'children = ["n2", "n1"]')], r"cannot be its own child", id="own-child"
        ),
        pytest.param(
            [(CHILDREN, 'children = ["n0"]')],
            r"cannot be its own child or its parent's parent",
            id="parent-as-child",
        ),
        # listen: the root and nodes with children; never a leaf
        pytest.param(
            [(LISTEN + "\n", "")],
            r"\[node\]: listen is required on the root and on nodes with",
            id="inner-node-without-listen",
        ),
        pytest.param(
            [(LISTEN + "\n", ""), ("party = 1", "party = 0"), (PARENT, ""), (CHILDREN, "")],
            r"\[node\]: listen is required on the root",
            id="root-without-listen",
        ),
        pytest.param(
            [(CHILDREN, "children = []")],
            r"\[node\]: a leaf does not listen .*remove listen = '127.0.0.1:5000'",
            id="leaf-with-listen",
        ),
        pytest.param(
            [(CHILDREN, "")],
            r"a leaf does not listen \(it dials out to its parent\); remove",
            id="leaf-without-children-key-with-listen",
        ),
        # [data], [tls], [policy]
        pytest.param([("shard = 1", "shard = 7")], r"\[data\]: shard 7", id="shard-out-of-range"),
        pytest.param(
            [('dataset = "breast_cancer"', 'dataset = "x"\npath = "d.csv"')],
            r"either dataset or",
            id="dataset-and-path",
        ),
        pytest.param(
            [("shards = 4", "shards = 4\nholdout = 1.0")],
            r"\[data\]: holdout must be in \[0, 1\)",
            id="holdout-one",
        ),
        pytest.param(
            [('cert = "c.pem"\n', "")],
            r"\[tls\]: missing required field 'cert'",
            id="missing-cert",
        ),
        pytest.param(
            [('queriers = ["q"]', "queriers = [1]")],
            r"\[policy\]: queriers must be a list",
            id="querier-not-string",
        ),
        pytest.param(
            [('queriers = ["q"]', 'queriers = ["q"]\nallow_decryption = "yes"')],
            r"\[policy\]: field 'allow_decryption' must be bool",
            id="allow-decryption-string",
        ),
    ],
)
def test_bad_configs_name_the_file_and_field(
    tmp_path: Path, changes: list[tuple[str, str]], match: str
) -> None:
    path = write(tmp_path, edit(*changes))
    with pytest.raises(ConfigError, match=match) as info:
        load_node_config(path)
    assert str(path) in str(info.value)


def test_missing_file_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_node_config(tmp_path / "nope.toml")
    bad = write(tmp_path, "[node\nid=", "bad.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_node_config(bad)


def test_a_node_is_not_its_own_parent(tmp_path: Path) -> None:
    path = write(tmp_path, edit((PARENT, 'parent = { id = "n1", address = "127.0.0.1:4999" }')))
    with pytest.raises(ConfigError, match=r"\[tree\].*own"):
        load_node_config(path)


@pytest.mark.parametrize("port", ["0", "65536", "99999"])
def test_a_port_out_of_range_is_refused(tmp_path: Path, port: str) -> None:
    path = write(
        tmp_path, edit((PARENT, f'parent = {{ id = "n0", address = "127.0.0.1:{port}" }}'))
    )
    with pytest.raises(ConfigError, match="address .* must be host:port"):
        load_node_config(path)


# -- every table and key is declared; anything else is refused, with the nearest name -------
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param(
            [('queriers = ["q"]', 'queriers = ["q"]\nallow_decrypt = true')],
            "[policy]: unknown key 'allow_decrypt' (did you mean 'allow_decryption'?)",
            id="policy-typo",
        ),
        pytest.param(
            [("[policy]", "[polcy]")],
            ": unknown table [polcy] (did you mean [policy]?)",
            id="table-typo",
        ),
        pytest.param(
            [("shards = 4", "shards = 4\nhold_out = 0.2")],
            "[data]: unknown key 'hold_out' (did you mean 'holdout'?)",
            id="data-typo",
        ),
        pytest.param(
            [("[node]", 'colour = "red"\n[node]')],
            ": unknown top-level key 'colour' (valid: [node], [tree], [data], [tls], [state], "
            "[policy], [fedavg])",
            id="top-level-key",
        ),
        pytest.param(
            [(PARENT, 'parent = { id = "n0", adress = "127.0.0.1:4999" }')],
            "[tree] parent: unknown key 'adress' (did you mean 'address'?)",
            id="parent-typo",
        ),
        pytest.param(
            [('cert = "c.pem"', 'cert = "c.pem"\nzzz = 1')],
            "[tls]: unknown key 'zzz' (valid: 'cert', 'key', 'ca')",
            id="no-close-key",
        ),
        pytest.param(
            [("[policy]", "[[policy]]")],
            "[policy]: must be a table",
            id="array-of-tables",
        ),
    ],
)
def test_unknown_tables_and_keys_are_refused(
    tmp_path: Path, changes: list[tuple[str, str]], message: str
) -> None:
    path = write(tmp_path, edit(*changes))
    with pytest.raises(ConfigError) as info:
        load_node_config(path)
    assert str(info.value).startswith(str(path)) and message in str(info.value)


def test_every_key_of_the_example_and_the_docstring_is_declared() -> None:
    from phe_fl.federation import config

    doc = config.__doc__ or ""
    for table, keys in SCHEMA.items():
        assert f"[{table}]" in doc
        for key in keys:
            assert f"{key} =" in doc, (table, key)


def test_insecure_parameter_set_warns_at_every_start(tmp_path: Path) -> None:
    secure = load_node_config(write(tmp_path, GOOD))
    assert secure.warnings() == []
    path = write(tmp_path, edit(('params = "n14-depth5-128"', 'params = "insecure-test-n12"')))
    (warning,) = load_node_config(path).warnings()
    assert str(path) in warning and "'insecure-test-n12' is NOT SECURE" in warning
    assert "n14-depth5-128" in warning  # names the sets to use instead


def test_data_file_keys_load(tmp_path: Path) -> None:
    data = (
        '[data]\npath = "site.csv"\nlabel = "y"\nfeatures = ["a", "b"]\nclasses = ["B", "M"]\n'
        'header = true\ndelimiter = ";"\nimpute = "mean"\nscale = { a = 2, b = 0.5 }\n'
    )
    cfg = load_node_config(
        write(
            tmp_path,
            edit(("[data]", data + "[unused]")).replace(
                '[unused]\ndataset = "breast_cancer"\nshard = 1\nshards = 4\n', ""
            ),
        )
    )
    d = cfg.data
    assert d.path == tmp_path / "site.csv" and d.dataset is None
    assert (d.label, d.features, d.classes) == ("y", ("a", "b"), ("B", "M"))
    assert (d.header, d.delimiter, d.impute, d.file_format) == (True, ";", "mean", "csv")
    assert d.scale == (("a", 2.0), ("b", 0.5)) and d.config == cfg.source
    parquet = load_node_config(write(tmp_path, edit(DATASET_LINES_TO('path = "x.PQ"'))))
    assert parquet.data.file_format == "parquet" and parquet.data.header is None


def DATASET_LINES_TO(new: str) -> tuple[str, str]:  # noqa: N802 - reads as a constant
    return ('dataset = "breast_cancer"\nshard = 1\nshards = 4', new)


def test_float_keys_take_integers(tmp_path: Path) -> None:
    cfg = load_node_config(write(tmp_path, edit(("shards = 4", "shards = 4\nholdout = 0"))))
    assert cfg.data.holdout == 0.0 and isinstance(cfg.data.holdout, float)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (
            'dataset = "breast_cancr"',
            r"unknown dataset 'breast_cancr' \(did you mean 'breast_cancer'",
        ),
        ('path = "a.csv"\nshards = 2', r"shards split a named dataset; a data file is this node"),
        ('dataset = "digits"\nheader = true', r"header describe a data file"),
        ('path = "a.parquet"\nheader = true', r"header apply to CSV files, not Parquet"),
        ('path = "a.csv"\nformat = "xlsx"', r"format must be 'csv' or 'parquet'"),
        ('path = "a.csv"\nimpute = "median"', r"impute must be 'mean'"),
        ('path = "a.csv"\nscale = { a = 0 }', r"scale.a must be a positive number"),
        ('path = "a.csv"\nscale = { a = "x" }', r"scale.a must be a positive number"),
        ('path = "a.csv"\nlabel = "y"\nfeatures = ["a", "y"]', r"'y' is also listed in features"),
        ('path = "a.csv"\nfeatures = ["a", "a"]', r"features names 'a' twice"),
        ('path = "a.csv"\nfeatures = []', r"features must be a non-empty list of names"),
        ('path = "a.csv"\nclasses = [0, 1]', r"classes must be a non-empty list of names"),
        ('path = "a.csv"\ndelimiter = ";;"', r"delimiter must be one character"),
        ('label = "y"', r"label need a dataset or a path"),
        ('dataset = "digits"\nshards = 0', r"shards must be at least 1"),
    ],
)
def test_bad_data_tables(tmp_path: Path, data: str, match: str) -> None:
    path = write(tmp_path, edit(DATASET_LINES_TO(data)))
    with pytest.raises(ConfigError, match=match) as info:
        load_node_config(path)
    assert f"{path} [data]" in str(info.value)


def test_the_privacy_budget_keys(tmp_path: Path) -> None:
    policy = load_node_config(write(tmp_path, GOOD)).policy
    assert policy.dp_epsilon is None and policy.dp_delta == 1e-5  # no budget by default
    text = edit(('queriers = ["q"]', 'queriers = ["q"]\ndp_epsilon = 8\ndp_delta = 1e-6'))
    policy = load_node_config(write(tmp_path, text)).policy
    assert (policy.dp_epsilon, policy.dp_delta) == (8.0, 1e-6)
    for bad, why in (("dp_epsilon = 0", "dp_epsilon must be"), ("dp_delta = 1.5", "dp_delta")):
        text = edit(('queriers = ["q"]', f'queriers = ["q"]\n{bad}'))
        with pytest.raises(ConfigError, match=why):
            load_node_config(write(tmp_path, text))
