"""A node's data as declared in [data]: CSV with or without a header, Parquet, named
datasets; missing and bad values named by row and column; declared transformations only;
the schema digest nodes compare before any key work."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from phe_fl.errors import ConfigError
from phe_fl.federation import data as fdata
from phe_fl.federation.config import DataSource, load_node_config
from phe_fl.federation.data import (
    Column,
    Schema,
    Transform,
    apply_transforms,
    load_holdout,
    load_local_data,
    load_samples,
    load_shard,
    schema_digest,
)
from phe_fl.ml import datasets as mldata

HEADED = """id,radius,texture,diagnosis
1,10.5,20,B
2,12.0,21.5,M
3,9.75,19,B
"""


def csv(tmp_path: Path, text: str, name: str = "site.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def source(path: Path, **kw: object) -> DataSource:
    return DataSource(path=path, config=path.parent / "node.toml", **kw)  # type: ignore[arg-type]


# -- CSV with a header ------------------------------------------------------------------------
def test_headed_csv_named_label_features_and_classes(tmp_path: Path) -> None:
    path = csv(tmp_path, HEADED)
    shard = load_shard(
        source(path, label="diagnosis", features=("texture", "radius"), classes=("B", "M"))
    )
    assert shard.x.tolist() == [[20, 10.5], [21.5, 12.0], [19, 9.75]]  # declared order
    assert shard.y.tolist() == [0, 1, 0]
    assert shard.schema.feature_names == ("texture", "radius")
    assert shard.schema.label == Column("diagnosis", "class", ("B", "M"))
    assert shard.transforms == ()
    assert "3 rows" in shard.describe() and "B=0, M=1" in shard.describe()


def test_features_default_to_every_other_column(tmp_path: Path) -> None:
    shard = load_shard(source(csv(tmp_path, HEADED), label="diagnosis", classes=("B", "M")))
    assert shard.schema.feature_names == ("id", "radius", "texture")
    assert shard.x.shape == (3, 3)


def test_a_file_with_a_header_must_name_its_label(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"node.toml \[data\]: name the label column"):
        load_shard(source(csv(tmp_path, HEADED)))


def test_unknown_column_names_the_nearest(tmp_path: Path) -> None:
    path = csv(tmp_path, HEADED)
    with pytest.raises(ConfigError, match=r"feature column 'radis' .*did you mean 'radius'"):
        load_shard(source(path, label="diagnosis", features=("radis",), classes=("B", "M")))
    with pytest.raises(ConfigError, match=r"label column 'diagnostic' .*'diagnosis'"):
        load_shard(source(path, label="diagnostic"))


def test_string_labels_need_declared_classes_and_unknown_labels_name_the_row(
    tmp_path: Path,
) -> None:
    path = csv(tmp_path, HEADED)
    with pytest.raises(ConfigError, match=r"row 2, label column 'diagnosis': 'B' is not a number"):
        load_shard(source(path, label="diagnosis"))
    with pytest.raises(ConfigError, match=r"row 3, label column 'diagnosis': 'M' is not one of"):
        load_shard(source(path, label="diagnosis", classes=("B", "X")))


@pytest.mark.parametrize("cell", ["", "NA", "NaN", "n/a", " null "])
def test_a_missing_value_is_refused_with_its_spreadsheet_row_and_column(
    tmp_path: Path, cell: str
) -> None:
    path = csv(tmp_path, HEADED.replace("12.0", cell))
    with pytest.raises(ConfigError, match=r"row 3, column 'radius': missing value") as info:
        load_shard(source(path, label="diagnosis", classes=("B", "M")))
    assert str(path) in str(info.value) and 'impute = "mean"' in str(info.value)


def test_a_missing_label_is_never_imputed(tmp_path: Path) -> None:
    path = csv(tmp_path, "a,y\n1,0\n2,\n")
    with pytest.raises(ConfigError, match=r"row 3, label column 'y': missing label"):
        load_shard(source(path, label="y", impute="mean"))


def test_declared_mean_imputation_is_applied_and_reported(tmp_path: Path) -> None:
    path = csv(tmp_path, HEADED.replace("12.0", "NA"))
    src = source(path, label="diagnosis", classes=("B", "M"), impute="mean")
    shard = load_shard(src)
    assert shard.x[1, 1] == pytest.approx((10.5 + 9.75) / 2)
    assert shard.transforms == (Transform("impute_mean", (("strategy", "mean"),)),)
    assert shard.imputed == (("radius", 1),) and "imputed 1 cell(s) of 'radius'" in (
        shard.describe()
    )
    # declared on a complete file too: the declaration, not the data, is in the schema
    complete = load_shard(replace(src, path=csv(tmp_path, HEADED, "b.csv")))
    assert complete.imputed == () and schema_digest(complete) == schema_digest(shard)
    with pytest.raises(ConfigError, match="no value to impute from"):
        load_shard(
            replace(src, path=csv(tmp_path, "a,y\n,0\n,1\n", "c.csv"), classes=None, label="y")
        )


@pytest.mark.parametrize(
    ("cell", "why"), [("abc", "'abc' is not a number"), ("inf", "'inf' is not a finite number")]
)
def test_a_bad_feature_value_names_row_and_column(tmp_path: Path, cell: str, why: str) -> None:
    path = csv(tmp_path, HEADED.replace("21.5", cell))
    with pytest.raises(ConfigError, match=rf"row 3, column 'texture': {why}"):
        load_shard(source(path, label="diagnosis", classes=("B", "M"), impute="mean"))


def test_ragged_rows_and_bad_headers(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="row 3 has 3 cells, the header has 4"):
        load_shard(source(csv(tmp_path, HEADED.replace("2,12.0,", "12.0,")), label="diagnosis"))
    with pytest.raises(ConfigError, match="the header names 'a' twice"):
        load_shard(source(csv(tmp_path, "a,a,y\n1,2,3\n", "d.csv"), label="y"))
    with pytest.raises(ConfigError, match="holds no rows"):
        load_shard(source(csv(tmp_path, "\n\n", "e.csv")))
    with pytest.raises(ConfigError, match="is empty"):
        load_shard(source(csv(tmp_path, "a,y\n", "f.csv"), label="y"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_shard(source(tmp_path / "nope.csv"))


def test_blank_lines_keep_spreadsheet_row_numbers(tmp_path: Path) -> None:
    path = csv(tmp_path, "a,y\n1,0\n\n2,x\n")
    with pytest.raises(ConfigError, match=r"row 4, label column 'y'"):
        load_shard(source(path, label="y"))


def test_semicolon_delimiter(tmp_path: Path) -> None:
    path = csv(tmp_path, "a;y\n1.5;0\n2.5;1\n")
    assert load_shard(source(path, label="y", delimiter=";")).x.tolist() == [[1.5], [2.5]]


# -- headerless CSV (features then label, as before) ------------------------------------------
def test_headerless_numeric_csv_still_works(tmp_path: Path) -> None:
    path = csv(tmp_path, "1,2,0\n3,4,1\n")
    x, y = load_local_data(source(path))
    assert x.tolist() == [[1, 2], [3, 4]] and y.tolist() == [0, 1]
    shard = load_shard(source(path, header=False))
    assert shard.schema.feature_names == ("col1", "col2") and shard.schema.label == Column("col3")
    assert np.array_equal(shard.x, x)
    # a missing cell in the first row is still data, named by its generated column
    with pytest.raises(ConfigError, match=r"row 1, column 'col2': missing value"):
        load_shard(source(csv(tmp_path, "1,,0\n3,4,1\n", "m.csv")))


def test_a_first_row_of_numbers_and_text_must_be_declared(tmp_path: Path) -> None:
    path = csv(tmp_path, "1,b,0\n3,4,1\n")
    with pytest.raises(ConfigError, match=r"row 1 mixes numbers and text.*header = true"):
        load_shard(source(path))
    shard = load_shard(source(path, header=True, label="0"))
    assert shard.schema.feature_names == ("1", "b") and shard.x.tolist() == [[3, 4]]


# -- Parquet ------------------------------------------------------------------------------
def test_parquet_columns_nulls_and_classes(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "site.parquet"
    table = pa.table({"a": [1.0, 2.0, 3.0], "b": [1, 2, 3], "label": ["B", "M", "B"]})
    pq.write_table(table, path)
    shard = load_shard(source(path, label="label", classes=("B", "M")))
    assert shard.x.tolist() == [[1, 1], [2, 2], [3, 3]] and shard.y.tolist() == [0, 1, 0]
    headed = load_shard(
        source(csv(tmp_path, "a,b,label\n1,1,B\n"), label="label", classes=("B", "M"))
    )
    assert schema_digest(headed) == schema_digest(shard)  # CSV or Parquet: the same schema
    pq.write_table(pa.table({"a": [1.0, None], "label": [0, 1]}), tmp_path / "n.parquet")
    with pytest.raises(ConfigError, match=r"row 3, column 'a': missing value"):
        load_shard(source(tmp_path / "n.parquet", label="label"))
    pq.write_table(pa.table({"a": [1.0, float("nan")], "label": [0, 1]}), tmp_path / "m.pq")
    assert load_shard(source(tmp_path / "m.pq", label="label", impute="mean")).x[1, 0] == 1.0
    pq.write_table(pa.table({"a": ["x", "1"], "label": [0, 1]}), tmp_path / "s.parquet")
    with pytest.raises(ConfigError, match=r"row 2, column 'a': 'x' is not a number"):
        load_shard(source(tmp_path / "s.parquet", label="label"))
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(ConfigError, match="not a readable Parquet file"):
        load_shard(source(tmp_path / "bad.parquet", label="label"))


# -- named datasets: the one registry, no hidden scaling ---------------------------------------
def test_one_registry_of_named_datasets() -> None:
    assert fdata.DATASETS is mldata.DATASETS
    assert set(fdata.DATASETS) == {"breast_cancer", "diabetes", "digits"}


def test_named_dataset_shards_are_raw_and_named() -> None:
    named = mldata.load_named("breast_cancer")
    shards = [load_shard(DataSource("breast_cancer", None, i, 3)) for i in range(3)]
    assert sum(s.rows for s in shards) == 569
    assert shards[0].schema.feature_names == named.feature_names
    assert shards[0].schema.feature_names[0] == "mean radius"
    assert shards[0].schema.label == Column("target")
    # no max-abs scaling behind the querier's back: the rows are the dataset's own
    first = np.array_split(np.arange(569), 3)[0]
    assert np.array_equal(shards[0].x, named.x[first]) and shards[0].transforms == ()
    assert len({schema_digest(s) for s in shards}) == 1


def test_named_dataset_holdout_is_raw_and_disjoint() -> None:
    src = DataSource("diabetes", None, 0, 2, 0.25)
    x_test, y_test = load_holdout(src)
    train = np.vstack([load_local_data(replace(src, shard=i))[0] for i in range(2)])
    assert len(x_test) == 192 and len(train) == 576
    raw = mldata.load_named("diabetes")
    rows = {tuple(r) for r in raw.x}
    assert {tuple(r) for r in x_test} <= rows and {tuple(r) for r in train} <= rows
    assert not {tuple(r) for r in x_test} & {tuple(r) for r in train}
    assert set(y_test.tolist()) == {0.0, 1.0}
    with pytest.raises(ConfigError, match="holdout > 0"):
        load_holdout(DataSource("diabetes"))


def test_named_dataset_feature_subset_and_label_check() -> None:
    src = DataSource("diabetes", features=("glucose", "bmi"), config=Path("n.toml"))
    shard = load_shard(src)
    assert shard.schema.feature_names == ("glucose", "bmi") and shard.x[0].tolist() == [148, 33.6]
    assert load_holdout(replace(src, holdout=0.1))[0].shape[1] == 2
    with pytest.raises(
        ConfigError,
        match=r"n.toml \[data\]: label column 'target' is not in dataset 'diabetes'.*outcome",
    ):
        load_shard(replace(src, label="target"))


def test_digits_is_the_registrys_binary_task() -> None:
    shard = load_shard(DataSource("digits"))
    assert shard.x.shape == (1797, 64) and set(shard.y.tolist()) == {0.0, 1.0}
    assert shard.schema.feature_names[:2] == ("pixel_0_0", "pixel_0_1")


def test_no_data_declared() -> None:
    shard = load_shard(DataSource())
    assert shard.rows == 0 and shard.schema.label is None and "no data" in shard.describe()


# -- declared scaling, applied to queries the same way ------------------------------------------
def test_declared_scale_reaches_the_querier(tmp_path: Path) -> None:
    path = csv(tmp_path, HEADED)
    src = source(path, label="diagnosis", classes=("B", "M"), scale=(("radius", 10.0),))
    shard = load_shard(src)
    assert shard.transforms == (Transform("scale", (("radius", 10.0),)),)
    assert shard.x[:, 1].tolist() == [1.05, 1.2, 0.975]
    raw = np.array([[1.0, 10.5, 20.0]])  # id, radius, texture: raw, as a querier has it
    sent = apply_transforms(raw, shard.transforms, shard.schema.feature_names)
    assert sent.tolist() == [shard.x[0].tolist()] and raw[0, 1] == 10.5
    assert "radius / 10" in shard.describe()
    with pytest.raises(ConfigError, match="scale names 'area'"):
        load_shard(replace(src, scale=(("area", 2.0),)))
    # the transform survives a report as plain data
    back = [Transform.from_dict(t.to_dict()) for t in shard.transforms]
    assert tuple(back) == shard.transforms


def test_query_inputs_cannot_be_imputed() -> None:
    impute = Transform("impute_mean", (("strategy", "mean"),))
    assert apply_transforms(np.ones((1, 2)), [impute], ["a", "b"]).tolist() == [[1, 1]]
    with pytest.raises(ConfigError, match="send complete samples"):
        apply_transforms(np.array([[1.0, np.nan]]), [impute], ["a", "b"])
    with pytest.raises(ConfigError, match="2 columns, the schema 3"):
        apply_transforms(np.ones((1, 2)), [], ["a", "b", "c"])


# -- the schema digest ------------------------------------------------------------------------
def test_schema_digest_hashes_names_order_types_and_transforms() -> None:
    base = Schema((Column("a"), Column("b")), Column("y", "class", ("B", "M")))
    digest = schema_digest(base)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert schema_digest(Schema(base.features, base.label)) == digest
    variants = [
        replace(base, features=(Column("b"), Column("a"))),  # order
        replace(base, features=(Column("a"), Column("c"))),  # name
        replace(base, features=(Column("a"),)),  # count
        replace(base, label=Column("y")),  # numeric label
        replace(base, label=Column("y", "class", ("M", "B"))),  # class order = mapping
        replace(base, transforms=(Transform("scale", (("a", 2.0),)),)),
        replace(base, transforms=(Transform("scale", (("a", 3.0),)),)),
    ]
    digests = {schema_digest(v) for v in variants}
    assert digest not in digests and len(digests) == len(variants)


def test_schema_digest_ignores_the_rows(tmp_path: Path) -> None:
    a = load_shard(source(csv(tmp_path, "a,y\n1,0\n2,1\n", "a.csv"), label="y"))
    b = load_shard(source(csv(tmp_path, "a,y\n5,1\n6,1\n7,0\n", "b.csv"), label="y"))
    c = load_shard(source(csv(tmp_path, "b,y\n5,1\n", "c.csv"), label="y"))
    assert schema_digest(a) == schema_digest(b) != schema_digest(c)


# -- from a node config ---------------------------------------------------------------------
def test_data_table_of_a_node_config(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    csv(tmp_path / "data", HEADED.replace("12.0", ""))
    cfg = tmp_path / "node.toml"
    cfg.write_text(
        """
[node]
id = "n0"
party = 0
n_parties = 2
listen = "127.0.0.1:5000"
params = "n14-depth5-128"
[data]
path = "data/site.csv"
label = "diagnosis"
features = ["radius", "texture"]
classes = ["B", "M"]
impute = "mean"
scale = { texture = 10 }
[tls]
cert = "c.pem"
key = "c.key"
ca = "ca.pem"
"""
    )
    src = load_node_config(cfg).data
    assert src.path == tmp_path / "data" / "site.csv" and src.scale == (("texture", 10.0),)
    shard = load_shard(src)
    assert shard.x.tolist() == [[10.5, 2.0], [10.125, 2.15], [9.75, 1.9]]
    assert [t.name for t in shard.transforms] == ["impute_mean", "scale"]
    cfg.write_text(cfg.read_text().replace('impute = "mean"\n', ""))
    with pytest.raises(ConfigError, match=rf"{cfg} \[data\]"):
        load_shard(load_node_config(cfg).data)


# -- a querier's samples, read by the same rules ------------------------------------------
def test_load_samples_picks_columns_by_name(tmp_path: Path) -> None:
    path = csv(tmp_path, HEADED)
    x, y = load_samples(path, ["texture", "radius"], label="diagnosis", classes=["B", "M"])
    assert x.tolist() == [[20, 10.5], [21.5, 12.0], [19, 9.75]] and y is not None
    assert y.tolist() == [0, 1, 0]
    x, y = load_samples(csv(tmp_path, "1,2\n3,4\n", "h.csv"))
    assert x.tolist() == [[1, 2], [3, 4]] and y is None
    with pytest.raises(ConfigError, match=r"^feature column 'radis' .*'radius'"):
        load_samples(path, ["radis"])
    with pytest.raises(ConfigError, match=r"row 3, column 'radius': missing value"):
        load_samples(csv(tmp_path, HEADED.replace("12.0", ""), "m.csv"), ["radius"])
