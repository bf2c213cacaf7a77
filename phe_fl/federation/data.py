"""A node's local data: a shard of a named dataset, or the node's own CSV or Parquet file,
read as ``[data]`` declares it and transformed only as declared.

Files. A CSV file's first row is its header when ``header = true``; with ``header =
false`` the file is numbers only (features then label, as before) and its columns are
named ``col1``, ``col2``, ...; without ``header`` the first row decides: text only (no
cell reads as a number) is a header, numbers only (missing cells allowed) is data, a
mix is refused (say which). A Parquet file (``pyarrow`` needed: the ``data`` extra)
carries its own column names. ``label`` names the label column (a headerless CSV's last
column by default; a file with column names must name it); ``features`` names the
feature columns in the order the model takes them (default: every other column, in file
order).

Values. Rows are numbered as a spreadsheet shows them: the header is row 1, so the first
data row of a CSV with a header is row 2 (the same for Parquet, whose names stand in for
the header). A missing feature value (an empty cell, ``NA``, ``N/A``, ``NaN``, ``null``,
``None``; a Parquet null or NaN) is refused naming its row and column unless ``impute =
"mean"`` is declared (the column's mean over this node's shard; declared, so reported as a
transformation). A feature value that is not a finite number is refused naming row and
column. A label is numeric, or one of the declared ``classes`` (mapped to 0, 1, ... in the
declared order); a missing or unknown label is refused naming its row, never imputed.

Transformations. Nothing is applied behind anyone's back: the shard reports every
transformation (:class:`Transform`, with its public parameters) so that a querier's own
inputs go through the same ones (:func:`apply_transforms`), and :func:`schema_digest`
hashes the column names, order and types with the declared transformations, so that a
root can refuse a node whose data does not fit the federation's before any key work.
The pooled standardization of a training job is not one of these: the job declares it
and the querier receives its statistics with the model.

Named datasets come from the one registry, :mod:`phe_fl.ml.datasets`; nothing is
downloaded.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import importlib
import json
import math
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from phe_fl.errors import ConfigError, ParameterError
from phe_fl.federation.config import DataSource
from phe_fl.mhe.context import FloatArray
from phe_fl.ml.datasets import DATASETS, load_named

__all__ = [
    "DATASETS",
    "MISSING",
    "Column",
    "Transform",
    "Schema",
    "DataShard",
    "load_shard",
    "load_local_data",
    "load_holdout",
    "load_samples",
    "apply_transforms",
    "schema_digest",
    "has_column_names",
]

MISSING = frozenset({"", "na", "n/a", "nan", "null", "none"})
"""Cell texts (case-insensitive, stripped) that mean a missing value."""

FEATURE_TYPE = "float64"
"""Every feature column's type once read: the model takes float64 features."""


# -- what a shard reports -----------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    """One column of the schema: name and type (``float64``; a label with declared
    classes is ``class`` and lists them in the order they map to 0, 1, ...)."""

    name: str
    type: str = FEATURE_TYPE
    classes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "classes": list(self.classes)}


@dataclass(frozen=True)
class Transform:
    """One declared transformation a node applied to its features, in order, with its
    public parameters (the same on every node that declared it): ``impute_mean``
    (``strategy``) or ``scale`` (``column -> divisor``)."""

    name: str
    params: tuple[tuple[str, str | float], ...] = ()

    def describe(self) -> str:
        if self.name == "impute_mean":
            return "impute_mean: a missing feature value is its column's mean on the shard"
        if self.name == "scale":
            return "scale: " + ", ".join(f"{c} / {v:g}" for c, v in self.params)
        return self.name

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": [list(p) for p in self.params]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Transform:
        """The inverse of :meth:`to_dict` (a node's report read by a querier)."""
        return cls(str(d["name"]), tuple((str(k), v) for k, v in d["params"]))


@dataclass(frozen=True)
class Schema:
    """What nodes must agree on before any key work: feature columns (names, order,
    types), the label column, the declared transformations."""

    features: tuple[Column, ...]
    label: Column | None
    transforms: tuple[Transform, ...] = ()

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.features)

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": [c.to_dict() for c in self.features],
            "label": None if self.label is None else self.label.to_dict(),
            "transforms": [t.to_dict() for t in self.transforms],
        }


@dataclass(frozen=True)
class DataShard:
    """This node's data as it trains on it, with the schema it reports and where it came
    from. ``imputed`` (column, cells) says what ``impute`` filled; local, never sent."""

    x: FloatArray
    y: FloatArray
    schema: Schema
    origin: str
    imputed: tuple[tuple[str, int], ...] = ()

    @property
    def transforms(self) -> tuple[Transform, ...]:
        return self.schema.transforms

    @property
    def rows(self) -> int:
        return int(self.x.shape[0])

    def describe(self) -> str:
        """One line for the node's log at start: rows, columns and transformations."""
        label = self.schema.label
        if label is None:
            return f"no data ({self.origin})"
        classes = (
            f" (classes {', '.join(f'{c}={i}' for i, c in enumerate(label.classes))})"
            if label.classes
            else ""
        )
        done = "; ".join(t.describe() for t in self.transforms) or "none"
        filled = ", ".join(f"{n} cell(s) of {c!r}" for c, n in self.imputed)
        return (
            f"{self.rows} rows from {self.origin}: {len(self.schema.features)} features, "
            f"label {label.name!r}{classes}; transformations: {done}"
            + (f" (imputed {filled})" if filled else "")
        )


def schema_digest(shard: DataShard | Schema) -> str:
    """SHA-256 (hex) of the column names, order and types and the declared
    transformations: equal on two nodes exactly when their data fit the same model.
    Local values (row counts, imputed means) are not part of it."""
    schema = shard.schema if isinstance(shard, DataShard) else shard
    canon = json.dumps(
        {"schema": "phe-fl/v1", **schema.to_dict()}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canon.encode()).hexdigest()


def apply_transforms(
    x: FloatArray, transforms: Sequence[Transform], features: Sequence[str]
) -> FloatArray:
    """A querier's raw samples (columns in ``features`` order) through the transformations
    the nodes declared. ``impute_mean`` cannot apply here (the means are each node's
    own), so samples must be complete."""
    out = np.array(x, dtype=np.float64, copy=True, ndmin=2)
    if out.shape[1] != len(features):
        raise ConfigError(f"samples have {out.shape[1]} columns, the schema {len(features)}")
    index = {name: j for j, name in enumerate(features)}
    for t in transforms:
        if t.name == "impute_mean":
            if not np.all(np.isfinite(out)):
                raise ConfigError(
                    "samples with missing values: the nodes' mean imputation used each node's "
                    "own means, which a querier does not have; send complete samples"
                )
        elif t.name == "scale":
            for column, divisor in t.params:
                if column not in index:
                    raise ConfigError(f"transform scale names column {column!r}, not in schema")
                out[:, index[column]] /= float(divisor)
        else:
            raise ConfigError(f"unknown transformation {t.name!r}")
    return out


# -- reading tables -----------------------------------------------------------------------
@dataclass
class _Table:
    """Columns by name, each a list of cells (text from CSV, Python values from
    Parquet), and the spreadsheet row number of each data row."""

    origin: str
    names: list[str]
    cells: Mapping[str, Sequence[Any] | NDArray[Any]]
    rows: list[int]
    default_label: str | None = None  # the label column when [data] names none

    def row(self, i: int) -> int:
        return self.rows[i]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_header(cells: Sequence[str], what: str, where: str) -> bool:
    """The header rule: a first row of text only is a header, of numbers only (missing
    cells allowed) is data; a mix is refused (``where`` says how to declare it)."""
    kinds = {
        "number" if _is_number(c) else "text" for c in cells if c.strip().lower() not in MISSING
    }
    if "number" in kinds and "text" in kinds:
        raise ConfigError(
            f"{what} mixes numbers and text, so it is neither clearly a header nor clearly "
            f"data; {where}"
        )
    return "text" in kinds


def has_column_names(path: Path | str, delimiter: str = ",") -> bool:
    """Whether a data file names its columns: Parquet always; a CSV when its first row is
    a header by the nodes' rule (:func:`_is_header`)."""
    path = Path(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        return True
    for row, cells in _csv_records(path, delimiter):
        return _is_header(cells, f"{path}: row {row}", "give a file whose first row is a header")
    raise ConfigError(f"data file {path} holds no rows")


def _csv_records(path: Path, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """``(row number, cells)`` of every non-empty record; records are counted as a
    spreadsheet counts rows (an empty line still takes a row number)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            for number, record in enumerate(csv.reader(f, delimiter=delimiter), start=1):
                if record:
                    yield number, record
    except FileNotFoundError:
        raise ConfigError(f"data file {path} does not exist") from None
    except UnicodeDecodeError:
        raise ConfigError(f"data file {path} is not UTF-8 text") from None
    except csv.Error as exc:
        raise ConfigError(f"data file {path}: not a readable CSV ({exc})") from None
    except OSError as exc:
        raise ConfigError(f"data file {path} cannot be read: {exc.strerror or exc}") from None


def _read_csv(source: DataSource, path: Path) -> _Table:
    records = list(_csv_records(path, source.delimiter))
    if not records:
        raise ConfigError(f"data file {path} holds no rows")
    first_row, first = records[0]
    header = source.header
    if header is None:
        header = _is_header(
            first,
            f"data file {path}: row {first_row}",
            f"declare header = true or header = false in {source.where}",
        )
    if header:
        names = [c.strip() for c in first]
        for j, name in enumerate(names):
            if not name:
                raise ConfigError(f"data file {path}: the header's column {j + 1} has no name")
        dup = _twice(names)
        if dup:
            raise ConfigError(f"data file {path}: the header names {dup} twice")
        records = records[1:]
    else:
        names = [f"col{j + 1}" for j in range(len(first))]
    for number, record in records:
        if len(record) != len(names):
            raise ConfigError(
                f"data file {path}: row {number} has {len(record)} cells, "
                f"{'the header has' if header else f'row {first_row} has'} {len(names)}"
            )
    cells = {name: [r[j] for _, r in records] for j, name in enumerate(names)}
    rows = [number for number, _ in records]
    return _Table(str(path), names, cells, rows, None if header else names[-1])


def _read_parquet(path: Path) -> _Table:
    try:
        pq: Any = importlib.import_module("pyarrow.parquet")
    except ImportError:
        raise ConfigError(
            f"data file {path} is Parquet: install pyarrow (pip install 'phe-fl[data]')"
        ) from None
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise ConfigError(f"data file {path} does not exist") from None
    except Exception as exc:  # pyarrow raises its own ArrowInvalid, OSError, ...
        raise ConfigError(f"data file {path}: not a readable Parquet file ({exc})") from None
    names = [str(n) for n in table.column_names]
    dup = _twice(names)
    if dup:
        raise ConfigError(f"data file {path}: columns {dup} appear twice")
    return _Table(str(path), names, _ArrowColumns(table, names), list(range(2, table.num_rows + 2)))


class _ArrowColumns(Mapping[str, Sequence[Any]]):
    """A Parquet table's columns as Python values (None for null), converted only when a
    column is selected."""

    def __init__(self, table: Any, names: list[str]) -> None:
        self._table, self._index = table, {n: j for j, n in enumerate(names)}

    def __getitem__(self, name: str) -> Sequence[Any]:
        values: list[Any] = self._table.column(self._index[name]).to_pylist()
        return values

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


def _twice(names: Sequence[str]) -> str:
    """The names that appear more than once, quoted, or ``""``."""
    return ", ".join(repr(n) for n, k in sorted(Counter(names).items()) if k > 1)


def _named_table(source: DataSource, name: str) -> tuple[_Table, NDArray[np.intp]]:
    """The named dataset as a table, and the row indices of this node's shard."""
    try:
        data = load_named(name)
    except ParameterError as exc:
        raise ConfigError(f"{source.where}: {exc}") from None
    names = [*data.feature_names, data.label_name]
    columns = [*data.x.T, data.y]
    table = _Table(
        f"dataset {name!r}",
        names,
        {n: c for n, c in zip(names, columns, strict=True)},
        list(range(2, len(data.y) + 2)),
        data.label_name,
    )
    train, _ = _holdout_split(len(data.y), source.holdout)
    return table, np.array_split(train, source.shards)[source.shard]


# -- columns to arrays --------------------------------------------------------------------
def _number(value: Any) -> float | None:
    """A cell as a float, None when missing; ValueError when it is something else."""
    if value is None:
        return None
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float | np.floating | np.integer):
        f = float(value)
        return None if math.isnan(f) else f
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in MISSING:
            return None
        return float(text)
    raise ValueError(f"{type(value).__name__} value")


def _feature(table: _Table, name: str, source: DataSource) -> tuple[FloatArray, int]:
    """One feature column as float64 (missing values imputed if declared) and how many
    cells were imputed."""
    cells = table.cells[name]
    try:  # numbers, "nan" and None (missing) convert at once; anything else cell by cell
        out = np.array(cells, dtype=np.float64)
    except (ValueError, TypeError):
        out = np.empty(len(cells), dtype=np.float64)
        for i, cell in enumerate(cells):
            try:
                value = _number(cell)
            except ValueError:
                raise ConfigError(
                    f"data file {table.origin}: row {table.row(i)}, column {name!r}: "
                    f"{cell!r} is not a number"
                ) from None
            out[i] = math.nan if value is None else value
    missing = np.isnan(out)
    bad = np.flatnonzero(~missing & ~np.isfinite(out))
    if bad.size:
        raise ConfigError(
            f"data file {table.origin}: row {table.row(int(bad[0]))}, column {name!r}: "
            f"{cells[int(bad[0])]!r} is not a finite number"
        )
    if not missing.any():
        return out, 0
    if source.impute is None:
        first = int(np.flatnonzero(missing)[0])
        raise ConfigError(
            f"data file {table.origin}: row {table.row(first)}, column {name!r}: missing "
            f"value ({int(missing.sum())} in this column); fill it, or declare "
            f'impute = "mean" in {source.where}'
        )
    if missing.all():
        raise ConfigError(f"data file {table.origin}: column {name!r} has no value to impute from")
    out[missing] = out[~missing].mean()
    return out, int(missing.sum())


def _label(table: _Table, name: str, source: DataSource) -> tuple[FloatArray, Column]:
    """The label column: numbers, or declared classes mapped to 0, 1, ... in order."""
    cells = table.cells[name]
    out = np.empty(len(cells), dtype=np.float64)
    classes = source.classes
    index = {c: float(i) for i, c in enumerate(classes or ())}
    for i, cell in enumerate(cells):
        where = f"data file {table.origin}: row {table.row(i)}, label column {name!r}"
        if classes is not None:
            text = cell.strip() if isinstance(cell, str) else str(cell)
            if cell is None or text.lower() in MISSING:
                raise ConfigError(f"{where}: missing label")
            if isinstance(cell, float) and text not in index and cell.is_integer():
                text = str(int(cell))  # a Parquet/numpy 1.0 for the class "1"
            if text not in index:
                raise ConfigError(
                    f"{where}: {text!r} is not one of the declared classes "
                    f"{', '.join(map(repr, classes))}"
                )
            out[i] = index[text]
            continue
        try:
            value = _number(cell)
        except ValueError:
            value = math.inf
        if value is None:
            raise ConfigError(f"{where}: missing label")
        if not math.isfinite(value):
            raise ConfigError(
                f"{where}: {cell!r} is not a number; declare the classes in order, e.g. "
                f'classes = ["B", "M"], in {source.where}'
            )
        out[i] = value
    column = Column(name, "class", classes) if classes is not None else Column(name)
    return out, column


def _known(table: _Table, source: DataSource, name: str, key: str) -> str:
    """``name`` if ``table`` has that column; else an error naming the nearest one."""
    if name not in table.cells:
        close = difflib.get_close_matches(name, table.names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        where = f"{source.where}: " if source.config is not None else ""
        raise ConfigError(
            f"{where}{key} column {name!r} is not in {table.origin}{hint}; its "
            f"columns: {', '.join(table.names)}"
        )
    return name


def _select(table: _Table, source: DataSource) -> tuple[str, list[str]]:
    """The label column and the feature columns, named or by default."""

    def known(name: str, key: str) -> str:
        return _known(table, source, name, key)

    label = source.label or table.default_label
    if label is None:
        raise ConfigError(
            f'{source.where}: name the label column, label = "..." (columns of '
            f"{table.origin}: {', '.join(table.names)})"
        )
    known(label, "label")
    if source.features is not None:
        features = [known(f, "feature") for f in source.features]
    else:
        features = [n for n in table.names if n != label]
    if not features:
        raise ConfigError(f"{source.where}: {table.origin} has no feature column besides {label!r}")
    for column, _ in source.scale:
        if column not in features:
            raise ConfigError(
                f"{source.where}: scale names {column!r}, which is not a feature column"
            )
    return label, features


def _holdout_split(n: int, fraction: float) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """A fixed shuffle (seed 0) so every node and the querier agree on the split."""
    order = np.random.default_rng(0).permutation(n) if fraction > 0 else np.arange(n)
    cut = n - int(round(n * fraction))
    return order[:cut], order[cut:]


def _declared(source: DataSource) -> tuple[Transform, ...]:
    """The transformations ``[data]`` declares, in the order they apply."""
    out = []
    if source.impute == "mean":
        out.append(Transform("impute_mean", (("strategy", "mean"),)))
    if source.scale:
        out.append(Transform("scale", source.scale))
    return tuple(out)


def _table(source: DataSource) -> _Table:
    """The source's table, this node's rows only."""
    if source.dataset is not None:
        full, rows = _named_table(source, source.dataset)
        cells = {n: np.asarray(c)[rows] for n, c in full.cells.items()}
        picked = [full.rows[i] for i in rows]
        return _Table(full.origin, full.names, cells, picked, full.default_label)
    assert source.path is not None
    if source.file_format == "parquet":
        return _read_parquet(source.path)
    return _read_csv(source, source.path)


def load_shard(source: DataSource) -> DataShard:
    """This node's shard as ``[data]`` declares it: the selected columns, checked
    value by value, with the declared transformations applied and reported."""
    if source.dataset is None and source.path is None:
        return DataShard(np.zeros((0, 0)), np.zeros(0), Schema((), None), "no [data] declared")
    table = _table(source)
    label_name, feature_names = _select(table, source)
    if not table.rows:
        raise ConfigError(f"{source.where}: this node's data shard ({table.origin}) is empty")
    y, label = _label(table, label_name, source)
    columns, imputed = [], []
    for name in feature_names:
        col, filled = _feature(table, name, source)
        columns.append(col)
        if filled:
            imputed.append((name, filled))
    transforms = _declared(source)
    features = tuple(Column(n) for n in feature_names)
    x = apply_transforms(
        np.column_stack(columns), [t for t in transforms if t.name == "scale"], feature_names
    )
    origin = table.origin
    if source.dataset is not None:
        origin += f", shard {source.shard} of {source.shards}"
    return DataShard(x, y, Schema(features, label, transforms), origin, tuple(imputed))


def load_local_data(source: DataSource) -> tuple[FloatArray, FloatArray]:
    """Features and labels of this node's shard (:func:`load_shard` without the schema)."""
    shard = load_shard(source)
    return shard.x, shard.y


def load_holdout(source: DataSource) -> tuple[FloatArray, FloatArray]:
    """The rows of a named dataset that no shard holds, raw (the selected feature columns,
    untransformed): a querier's test set, to send through :func:`apply_transforms`."""
    if source.dataset is None or source.holdout <= 0:
        raise ConfigError(f"{source.where}: a holdout set needs a named dataset and holdout > 0")
    full, _ = _named_table(source, source.dataset)
    label, features = _select(full, source)
    _, test = _holdout_split(len(full.rows), source.holdout)
    x = np.column_stack([np.asarray(full.cells[f], dtype=np.float64)[test] for f in features])
    return x, np.asarray(full.cells[label], dtype=np.float64)[test]


def load_samples(
    path: Path | str,
    features: Sequence[str] | None = None,
    *,
    label: str | None = None,
    classes: Sequence[str] | None = None,
    header: bool | None = None,
    delimiter: str = ",",
) -> tuple[FloatArray, FloatArray | None]:
    """A querier's samples from a CSV or Parquet file, read by the nodes' rules (header
    detection, row and column named in every error) but never imputed: ``features`` picks
    the columns by name in the model's order (default: every column but ``label``), and
    ``label``, when named, gives the true labels too (``classes`` maps string labels).
    The result is raw: send it through :func:`apply_transforms`."""
    source = DataSource(
        path=Path(path),
        label=label,
        features=tuple(features) if features is not None else None,
        classes=tuple(classes) if classes is not None else None,
        header=header,
        delimiter=delimiter,
    )
    table = _table(source)
    if label is not None:
        _known(table, source, label, "label")
    names = (
        [_known(table, source, f, "feature") for f in features]
        if features is not None
        else [n for n in table.names if n != label]
    )
    if not table.rows:
        raise ConfigError(f"data file {table.origin} holds no samples")
    x = np.column_stack([_feature(table, n, source)[0] for n in names])
    y = _label(table, label, source)[0] if label is not None else None
    return x, y
