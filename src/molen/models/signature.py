"""What a model takes and answers: input columns with their types and allowed categories.

A :class:`Signature` is inferred from the training data when a model is logged and checks every
input before it reaches the model (:meth:`Signature.prepare`): a missing column, a value that
cannot be cast safely to the column's type, a missing value where training had none, a category
never seen in training, or (when refused) an extra column raises :class:`InputSchemaError` naming
the column, the row and the problem. Accepted inputs: pandas, polars, Arrow tables, a list of
row dicts, a dict of columns, a NumPy array (columns in signature order).

The checks run on NumPy arrays, column by column: a one-row call costs tens of microseconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from molen.errors import InputSchemaError, InvalidValueError, MissingDependencyError

__all__ = ["COLUMN_TYPES", "ColumnSpec", "OutputSpec", "Signature", "infer_signature", "to_pandas"]

#: The column types a signature knows.
COLUMN_TYPES = ("integer", "float", "boolean", "string", "category", "datetime")
#: A text column with at most this many distinct values (and no more than half as many as
#: values) is categorical: unseen values are refused. Wider text columns accept any value.
MAX_CATEGORIES = 1000


class ColumnSpec(NamedTuple):
    """One input column: its name, type, whether it may be missing, and allowed values."""

    name: str
    type: str
    nullable: bool = False
    categories: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"name": self.name, "type": self.type, "nullable": self.nullable}
        if self.categories is not None:
            found["categories"] = list(self.categories)
        return found


class OutputSpec(NamedTuple):
    """What the model answers: ``label`` (with ``classes``) or ``number``."""

    type: str
    classes: tuple[Any, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"type": self.type}
        if self.classes is not None:
            found["classes"] = list(self.classes)
        return found


class Signature:
    """The input columns (in order) and the output of a model."""

    def __init__(self, inputs: Sequence[ColumnSpec], output: OutputSpec | None = None) -> None:
        if not inputs:
            raise InvalidValueError("a signature needs at least one input column")
        self.inputs = tuple(inputs)
        self.output = output
        self.names = [spec.name for spec in self.inputs]
        self._index = {spec.name: spec for spec in self.inputs}
        self._allowed = {
            spec.name: frozenset(spec.categories) for spec in self.inputs if spec.categories is not None
        }
        #: Every input is a number: rows can be checked as one float matrix (see numeric_matrix).
        self.numeric = all(spec.type in {"integer", "float"} for spec in self.inputs)
        self._integers = [index for index, spec in enumerate(self.inputs) if spec.type == "integer"]
        self._non_nullable = [index for index, spec in enumerate(self.inputs) if not spec.nullable]

    def __repr__(self) -> str:
        columns = ", ".join(f"{spec.name}: {spec.type}" for spec in self.inputs)
        return f"Signature({columns})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Signature) and self.to_dict() == other.to_dict()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``signature.json`` holds)."""
        return {
            "inputs": [spec.to_dict() for spec in self.inputs],
            "output": None if self.output is None else self.output.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signature:
        """The signature a dict (from :meth:`to_dict` or a user's file) describes."""
        try:
            inputs = []
            for item in data["inputs"]:
                kind = item["type"]
                if kind not in COLUMN_TYPES:
                    raise InvalidValueError(
                        f"column {item['name']!r} has type {kind!r}; use one of {', '.join(COLUMN_TYPES)}"
                    )
                categories = item.get("categories")
                inputs.append(
                    ColumnSpec(
                        str(item["name"]),
                        kind,
                        bool(item.get("nullable", False)),
                        None if categories is None else tuple(str(value) for value in categories),
                    )
                )
            output = data.get("output")
            out = None
            if output:
                classes = output.get("classes")
                out = OutputSpec(str(output["type"]), None if classes is None else tuple(classes))
        except (KeyError, TypeError) as exc:
            raise InvalidValueError(f"not a signature: missing or wrong field {exc}") from None
        return cls(inputs, out)

    def describe(self) -> list[tuple[str, str, str]]:
        """(column, type, notes) rows for tables and model cards."""
        rows = []
        for spec in self.inputs:
            notes = []
            if spec.nullable:
                notes.append("may be missing")
            if spec.categories is not None:
                shown = ", ".join(spec.categories[:8])
                more = len(spec.categories) - 8
                notes.append(f"one of {shown}" + (f" (+{more} more)" if more > 0 else ""))
            rows.append((spec.name, spec.type, "; ".join(notes)))
        return rows

    # -- checking input --------------------------------------------------------------------------

    def prepare(self, data: Any, *, extra: str = "ignore", unseen: str = "refuse") -> Any:
        """``data`` as a pandas DataFrame with the signature's columns in order, checked.

        ``extra`` is ``ignore`` (drop columns the model does not take) or ``refuse``;
        ``unseen`` is ``refuse`` (a category never seen in training is an error) or ``allow``.
        Raises :class:`InputSchemaError` naming the column at fault.
        """
        frame = to_pandas(data, self.names)
        if frame.columns.tolist() != self.names:
            frame = self._select(frame, extra)
        replaced: dict[str, Any] = {}
        for index, values in enumerate(_column_arrays(frame)):
            spec = self.inputs[index]
            checked = self._check_column(spec, values, unseen)
            if checked is not None:
                replaced[spec.name] = checked
        if replaced:
            frame = frame.assign(**replaced)
        return frame

    def numeric_matrix(self, data: Any, *, extra: str = "ignore") -> Any:
        """The rows of ``data`` (row dicts or a dict of columns) as a checked float64 matrix in
        signature order, when every input is a number and every value fits; else None, and
        :meth:`prepare` gives the precise error (or handles what this fast path does not)."""
        if not self.numeric:
            return None
        import numpy as np

        try:
            if isinstance(data, list):
                if extra == "refuse" and any(len(row) != len(self.names) for row in data):
                    return None
                if len(self.names) == 1:
                    name = self.names[0]
                    matrix = np.array([[row[name]] for row in data], dtype=np.float64)
                else:
                    from operator import itemgetter

                    matrix = np.array(list(map(itemgetter(*self.names), data)), dtype=np.float64)
            elif isinstance(data, dict):
                if extra == "refuse" and len(data) != len(self.names):
                    return None
                matrix = np.column_stack([np.asarray(data[name], dtype=np.float64) for name in self.names])
            else:
                return None
        except (KeyError, TypeError, ValueError):
            return None
        if matrix.ndim != 2 or matrix.shape[1] != len(self.names) or not matrix.shape[0]:
            return None
        if self._non_nullable and np.isnan(matrix[:, self._non_nullable]).any():
            return None
        if self._integers:
            whole = matrix[:, self._integers]
            finite = whole[~np.isnan(whole)]
            if not np.array_equal(finite, np.floor(finite)):
                return None
        return matrix

    def _select(self, frame: Any, extra: str) -> Any:
        present = set(frame.columns)
        missing = [name for name in self.names if name not in present]
        if missing:
            listed = ", ".join(repr(name) for name in missing)
            raise InputSchemaError(
                f"missing column{'s' if len(missing) > 1 else ''} {listed}; the model takes "
                f"{', '.join(self.names)}",
                column=missing[0],
            )
        extras = [str(name) for name in frame.columns if name not in self._index]
        if extras and extra == "refuse":
            raise InputSchemaError(
                f"unexpected column {extras[0]!r}: the model takes only {', '.join(self.names)} "
                "(send only those, or allow extra columns)",
                column=extras[0],
            )
        return frame[self.names]

    def _check_column(self, spec: ColumnSpec, values: Any, unseen: str) -> Any:
        """None when the column ``values`` (an array) fits ``spec`` as it is, else the safely
        cast column."""
        import numpy as np

        kind = values.dtype.kind
        plain = isinstance(values, np.ndarray)
        if spec.type == "float":
            if kind not in "fiub":
                return _numeric(spec, values)
            if not spec.nullable and not (plain and kind in "iub"):  # plain integers hold no NaN
                _no_nan(spec, values if plain else _floats(values))
            return None
        if spec.type == "integer":
            if kind in "iu" and plain:
                return None
            if kind == "b" and plain:
                return values.astype("int64")
            numbers = _floats(values) if kind in "fiub" else _numeric(spec, values)
            finite = numbers[~np.isnan(numbers)]
            if finite.size and not np.array_equal(finite, np.floor(finite)):
                row = int(np.argmax(numbers != np.floor(numbers)))
                raise InputSchemaError(
                    f"column {spec.name!r}: expected whole numbers, got {numbers[row].item()!r} at row {row}",
                    column=spec.name,
                )
            if not spec.nullable:
                _no_nan(spec, numbers)
            return numbers.astype("int64") if finite.size == numbers.size else numbers
        if spec.type == "boolean":
            return None if kind == "b" and plain else _booleans(spec, values)
        if spec.type == "datetime":
            return None if kind == "M" else _datetimes(spec, values)
        if kind in "fiubM":  # string or category expected, numbers given
            raise InputSchemaError(
                f"column {spec.name!r}: expected text ({spec.type}), got {values.dtype} values",
                column=spec.name,
            )
        self._check_text(spec, values, unseen)
        if spec.type == "category" and spec.categories is not None:
            return _categorical(spec, values)
        return None

    def _check_text(self, spec: ColumnSpec, values: Any, unseen: str) -> None:
        import numpy as np
        import pandas as pd

        allowed = self._allowed.get(spec.name)
        if len(values) <= 16:
            listed = list(values)  # (not .tolist(): twice as slow on an Arrow string array)
            missing_at = [row for row, value in enumerate(listed) if _missing(value)]
            present = [value for value in listed if not _missing(value)] if missing_at else listed
        else:
            mask = np.asarray(pd.isna(values))
            missing_at = mask.nonzero()[0].tolist()[:1]
            present = pd.unique(values[~mask] if missing_at else values).tolist()
        if missing_at and not spec.nullable:
            raise InputSchemaError(
                f"column {spec.name!r}: missing value at row {missing_at[0]}, but the model was "
                "trained without missing values",
                column=spec.name,
            )
        for value in present:
            if not isinstance(value, str):
                raise InputSchemaError(
                    f"column {spec.name!r}: expected text, got {value!r} ({type(value).__name__})",
                    column=spec.name,
                )
            if allowed is not None and unseen == "refuse" and value not in allowed:
                shown = ", ".join(sorted(allowed)[:10])
                raise InputSchemaError(
                    f"column {spec.name!r}: unseen category {value!r}; known: {shown}"
                    + (" …" if len(allowed) > 10 else ""),
                    column=spec.name,
                )


def _column_arrays(frame: Any) -> list[Any]:
    """Each column of ``frame`` as its array (NumPy or pandas extension array), in order,
    without building a Series per column (that cost most of a one-row check)."""
    get = getattr(frame, "_get_column_array", None)
    if get is not None:
        try:
            return [get(index) for index in range(frame.shape[1])]
        except (TypeError, IndexError, AttributeError):  # a pandas whose internals differ
            pass
    return [frame.iloc[:, index].array for index in range(frame.shape[1])]


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if type(value) is str:
        return False
    import pandas as pd

    return bool(pd.isna(value)) if not isinstance(value, (list, tuple, dict)) else False


def _floats(values: Any) -> Any:
    """The column as float64 NumPy values, missing values as NaN."""
    import numpy as np

    if isinstance(values, np.ndarray):
        return values.astype("float64", copy=False)
    return values.to_numpy(dtype="float64", na_value=np.nan)


def _first_missing(values: Any) -> int:
    import numpy as np

    return int(np.argmax(np.isnan(values)))


def _no_nan(spec: ColumnSpec, values: Any) -> None:
    import numpy as np

    if len(values) <= 8:  # a few values: plain Python beats a NumPy call's overhead
        missing = any(value != value for value in values.tolist())
    else:
        missing = bool(np.isnan(values).any())
    if missing:
        raise InputSchemaError(
            f"column {spec.name!r}: missing value at row {_first_missing(values)}, but the model "
            "was trained without missing values",
            column=spec.name,
        )


def _numeric(spec: ColumnSpec, values: Any) -> Any:
    """A float array of the column (text holding numbers is read as numbers), or an error."""
    import numpy as np
    import pandas as pd

    series = pd.Series(values, copy=False)
    try:
        numbers = pd.to_numeric(series, errors="raise").to_numpy(dtype="float64", na_value=np.nan)
    except (ValueError, TypeError):
        coerced = pd.to_numeric(series, errors="coerce")
        bad = (coerced.isna() & series.notna()).to_numpy().nonzero()[0]
        row = int(bad[0]) if bad.size else 0
        raise InputSchemaError(
            f"column {spec.name!r}: expected a number, got {series.iloc[row]!r} at row {row}",
            column=spec.name,
        ) from None
    if not spec.nullable:
        _no_nan(spec, numbers)
    return numbers


def _booleans(spec: ColumnSpec, values: Any) -> Any:
    import numpy as np

    if values.dtype.kind in "iuf":
        numbers = _floats(values)
        if np.isin(numbers, (0, 1)).all():
            return numbers.astype(bool)
    words = {"true": True, "false": False, "1": True, "0": False}
    out = []
    for row, value in enumerate(values.tolist()):
        if isinstance(value, bool):
            out.append(value)
        elif isinstance(value, str) and value.lower() in words:
            out.append(words[value.lower()])
        else:
            raise InputSchemaError(
                f"column {spec.name!r}: expected true or false, got {value!r} at row {row}",
                column=spec.name,
            )
    return np.array(out, dtype=bool)


def _categorical(spec: ColumnSpec, values: Any) -> Any:
    """The column as a pandas categorical with the training categories, in training order
    (models such as LightGBM map categories to codes by position)."""
    import pandas as pd

    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype) and tuple(str(c) for c in dtype.categories) == spec.categories:
        return None
    return pd.Categorical(list(values.tolist()), categories=list(spec.categories or ()))


def _datetimes(spec: ColumnSpec, values: Any) -> Any:
    import pandas as pd

    try:
        return pd.to_datetime(pd.Series(values, copy=False), errors="raise")
    except (ValueError, TypeError):
        raise InputSchemaError(
            f"column {spec.name!r}: expected a date and time (ISO 8601), got values that are not",
            column=spec.name,
        ) from None


# -- inferring ------------------------------------------------------------------------------------


def _column_type(dtype: Any) -> str:
    kind = dtype.kind
    if kind == "b" or str(dtype) == "boolean":
        return "boolean"
    if kind in "iu" or str(dtype) in {
        "Int8",
        "Int16",
        "Int32",
        "Int64",
        "UInt8",
        "UInt16",
        "UInt32",
        "UInt64",
    }:
        return "integer"
    if kind == "f" or str(dtype) in {"Float32", "Float64"}:
        return "float"
    if kind == "M":
        return "datetime"
    if str(dtype) == "category":
        return "category"
    return "string"


def infer_signature(reference: Any, output: OutputSpec | None = None) -> Signature:
    """The signature of the data frame (or array, table, records) ``reference``."""
    frame = to_pandas(reference, None)
    specs = []
    for name in frame.columns:
        series = frame[name]
        kind = _column_type(series.dtype)
        nullable = bool(series.isna().any())
        categories = None
        if kind == "category":
            categories = tuple(str(value) for value in series.cat.categories)
        elif kind == "string":
            present = series.dropna()
            distinct = present.unique()
            if len(distinct) <= MAX_CATEGORIES and len(distinct) <= max(1, len(present)) * 0.5 + 10:
                categories = tuple(sorted(str(value) for value in distinct))
        specs.append(ColumnSpec(str(name), kind, nullable, categories))
    return Signature(specs, output)


# -- input conversion -------------------------------------------------------------------------------


def to_pandas(data: Any, names: Sequence[str] | None) -> Any:
    """``data`` as a pandas DataFrame; NumPy arrays take the column ``names`` in order."""
    try:
        import pandas as pd
    except ImportError:
        raise MissingDependencyError("models need pandas: pip install 'molen[models]'") from None
    if isinstance(data, pd.DataFrame):
        return data
    module = type(data).__module__
    if module.startswith("polars"):
        return data.to_pandas()
    if module.startswith("pyarrow"):
        return data.to_pandas()
    if isinstance(data, pd.Series):
        return data.to_frame().T.infer_objects()
    if module == "numpy":
        array = data if data.ndim == 2 else data.reshape(1, -1)
        if names is None:
            names = [f"x{i}" for i in range(array.shape[1])]
        if array.shape[1] != len(names):
            raise InputSchemaError(
                f"an array with {array.shape[1]} columns was given; the model takes {len(names)} "
                f"({', '.join(names)})"
            )
        if array.dtype.kind == "O":
            return pd.DataFrame(array, columns=list(names)).infer_objects()
        return pd.DataFrame(array, columns=list(names))
    if isinstance(data, Mapping):
        if all(
            isinstance(value, (list, tuple)) or type(value).__module__ == "numpy" for value in data.values()
        ):
            return pd.DataFrame(dict(data))
        return pd.DataFrame([data])
    if isinstance(data, (list, tuple)):
        if not data:
            raise InputSchemaError("no rows given")
        if all(isinstance(row, Mapping) for row in data):
            return pd.DataFrame.from_records(list(data))
        if names is not None and all(isinstance(row, (list, tuple)) for row in data):
            widths = {len(row) for row in data}
            if widths != {len(names)}:
                raise InputSchemaError(
                    f"rows of {sorted(widths)} values were given; the model takes {len(names)} "
                    f"({', '.join(names)})"
                )
            return pd.DataFrame(list(data), columns=list(names))
    raise InputSchemaError(
        f"cannot read model input of type {type(data).__name__}: give a pandas or polars "
        "DataFrame, an Arrow table, a list of row dicts, a dict of columns or a NumPy array"
    )
