"""Request and response bodies of the three protocols molen serves, with no web framework.

* molen's ``POST /predict``: a list of row objects, ``{"records": [...]}``, or columnar
  ``{"columns": {"tenure": [...], ...}}``; optional ``"ids"`` (one per row) to name the rows.
* MLflow's ``POST /invocations``: ``dataframe_split``, ``dataframe_records``, ``instances``,
  ``inputs`` (exactly one), or a CSV body; answers ``{"predictions": [...]}``.
* The Open Inference Protocol (KServe V2) ``POST /v2/models/{name}/infer``: one tensor per
  input column (named as the column), or one 2-D tensor in signature order.

Malformed bodies raise :class:`PayloadError` (HTTP 400); input that parses but does not fit
the model's signature raises :class:`~molen.errors.InputSchemaError` later (422).
"""

from __future__ import annotations

from typing import Any

from molen.errors import UsageError

__all__ = [
    "PayloadError",
    "mlflow_input",
    "parse_json",
    "predict_input",
    "v2_input",
    "v2_outputs",
]

MLFLOW_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
V2_TYPES = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BYTES": "object",
}


class PayloadError(UsageError):
    """A request body that is not what the route takes (HTTP 400)."""


def parse_json(body: bytes) -> Any:
    """The JSON document in ``body``."""
    import orjson

    if not body:
        raise PayloadError("the request body is empty; send JSON")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"the request body is not valid JSON: {exc}") from None


def _rows(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise PayloadError(f"{where} must be a non-empty list of row objects")
    for number, row in enumerate(value):
        if not isinstance(row, dict):
            raise PayloadError(f"{where}[{number}] is not an object of column: value")
    return value


def _columns(value: Any, where: str) -> dict[str, list[Any]]:
    if not isinstance(value, dict) or not value:
        raise PayloadError(f"{where} must be an object of column: [values]")
    lengths = set()
    for name, column in value.items():
        if not isinstance(column, list):
            raise PayloadError(f"{where}.{name} must be a list of values")
        lengths.add(len(column))
    if len(lengths) != 1 or 0 in lengths:
        raise PayloadError(f"the columns of {where} must be non-empty and of one length")
    return value


def predict_input(doc: Any) -> tuple[Any, list[str] | None]:
    """(the rows, the caller's row ids or None) of a ``/predict`` body."""
    if isinstance(doc, list):
        return _rows(doc, "the body"), None
    if not isinstance(doc, dict):
        raise PayloadError('send a list of rows, {"records": [...]} or {"columns": {...}}')
    ids = doc.get("ids")
    if "records" in doc:
        data: Any = _rows(doc["records"], "records")
        count = len(data)
    elif "columns" in doc:
        data = _columns(doc["columns"], "columns")
        count = len(next(iter(data.values())))
    else:
        raise PayloadError('send a list of rows, {"records": [...]} or {"columns": {...}}')
    if ids is not None:
        if not isinstance(ids, list) or len(ids) != count or not all(isinstance(i, (str, int)) for i in ids):
            raise PayloadError(f"ids must be a list of {count} strings, one per row")
        ids = [str(i) for i in ids]
    return data, ids


def mlflow_input(doc: Any, names: list[str]) -> Any:
    """The rows of an MLflow ``/invocations`` JSON body (in any of its four formats)."""
    if not isinstance(doc, dict):
        raise PayloadError(
            "the input must be a JSON object with exactly one of the fields "
            "dataframe_split, dataframe_records, instances, inputs"
        )
    present = [key for key in MLFLOW_KEYS if key in doc]
    if len(present) != 1:
        raise PayloadError(
            "the input must be a JSON object with exactly one of the fields "
            f"dataframe_split, dataframe_records, instances, inputs (found {', '.join(present) or 'none'})"
        )
    key = present[0]
    value = doc[key]
    if key == "dataframe_records":
        return _rows(value, key)
    if key == "dataframe_split":
        if not isinstance(value, dict) or not isinstance(value.get("data"), list):
            raise PayloadError('dataframe_split needs {"columns": [...], "data": [[...], ...]}')
        columns = value.get("columns") or names
        data = value["data"]
        for number, row in enumerate(data):
            if not isinstance(row, list) or len(row) != len(columns):
                raise PayloadError(f"dataframe_split.data[{number}] must be a list of {len(columns)} values")
        return {str(name): [row[index] for row in data] for index, name in enumerate(columns)}
    if isinstance(value, dict):  # named tensors: columns
        return _columns(value, key)
    if isinstance(value, list) and value and all(isinstance(row, dict) for row in value):
        return value
    if isinstance(value, list) and value and all(isinstance(row, list) for row in value):
        return _matrix(value, names, key)
    raise PayloadError(f"{key} must be a list of rows or an object of named columns")


def _matrix(rows: list[list[Any]], names: list[str], where: str) -> dict[str, list[Any]]:
    for number, row in enumerate(rows):
        if len(row) != len(names):
            raise PayloadError(
                f"{where}[{number}] has {len(row)} values; the model takes {len(names)} ({', '.join(names)})"
            )
    return {name: [row[index] for row in rows] for index, name in enumerate(names)}


def mlflow_csv(body: bytes) -> Any:
    """The frame of a ``text/csv`` body."""
    import io

    import pandas as pd

    try:
        return pd.read_csv(io.BytesIO(body))
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(f"the CSV body cannot be read: {str(exc).splitlines()[0]}") from None


def _flat(data: Any) -> list[Any]:
    if isinstance(data, list) and data and isinstance(data[0], list):
        flat: list[Any] = []
        for item in data:
            flat.extend(_flat(item) if isinstance(item, list) else [item])
        return flat
    if not isinstance(data, list):
        raise PayloadError("a tensor's data must be a list")
    return data


def v2_input(doc: Any, names: list[str]) -> tuple[dict[str, list[Any]], str | None, list[str] | None]:
    """(the columns, the request id, the outputs asked for) of a V2 inference request."""
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise PayloadError('an inference request needs "inputs": a list of tensors')
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise PayloadError('"id" must be a string')
    outputs = None
    if doc.get("outputs") is not None:
        if not isinstance(doc["outputs"], list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in doc["outputs"]
        ):
            raise PayloadError('"outputs" must be a list of {"name": ...}')
        outputs = [o["name"] for o in doc["outputs"]]
    tensors = doc["inputs"]
    for number, tensor in enumerate(tensors):
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise PayloadError(f"inputs[{number}] needs a name")
        shape = tensor.get("shape")
        if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise PayloadError(f"inputs[{number}] ({tensor['name']}) needs a shape: a list of sizes")
        if tensor.get("datatype") not in V2_TYPES:
            raise PayloadError(
                f"inputs[{number}] ({tensor['name']}) has datatype {tensor.get('datatype')!r}; "
                f"use one of {', '.join(V2_TYPES)}"
            )
        if "data" not in tensor:
            raise PayloadError(f"inputs[{number}] ({tensor['name']}) has no data")
    by_name = {tensor["name"]: tensor for tensor in tensors}
    if len(tensors) == 1 and len(tensors[0]["shape"]) == 2 and tensors[0]["name"] not in names:
        tensor = tensors[0]
        rows, width = tensor["shape"]
        values = _flat(tensor["data"])
        if width != len(names):
            raise PayloadError(
                f"the tensor {tensor['name']} has {width} columns; "
                f"the model takes {len(names)} ({', '.join(names)})"
            )
        if len(values) != rows * width:
            raise PayloadError(f"the tensor {tensor['name']} holds {len(values)} values, not {rows}×{width}")
        return {name: values[index::width] for index, name in enumerate(names)}, request_id, outputs
    columns: dict[str, list[Any]] = {}
    length = None
    for name, tensor in by_name.items():
        values = _flat(tensor["data"])
        expected = 1
        for size in tensor["shape"]:
            expected *= size
        if len(values) != expected:
            raise PayloadError(
                f"the tensor {name} holds {len(values)} values, not the {expected} its shape says"
            )
        if length is not None and len(values) != length:
            raise PayloadError("every input tensor must have one value per row")
        length = len(values)
        columns[name] = values
    return columns, request_id, outputs


def _datatype(values: Any) -> str:
    kind = getattr(getattr(values, "dtype", None), "kind", "O")
    return {"b": "BOOL", "i": "INT64", "u": "UINT64", "f": "FP64"}.get(kind, "BYTES")


def v2_outputs(predictions: Any, probabilities: Any | None, wanted: list[str] | None) -> list[dict[str, Any]]:
    """The ``outputs`` of a V2 inference response (``predict``, ``predict_proba``)."""
    outputs = []
    names = wanted or (["predict", "predict_proba"] if probabilities is not None else ["predict"])
    for name in names:
        if name == "predict":
            outputs.append(
                {
                    "name": "predict",
                    "shape": [len(predictions), 1],
                    "datatype": _datatype(predictions),
                    "data": predictions.tolist(),
                }
            )
        elif name == "predict_proba" and probabilities is not None:
            outputs.append(
                {
                    "name": "predict_proba",
                    "shape": list(probabilities.shape),
                    "datatype": "FP64",
                    "data": probabilities.ravel().tolist(),
                }
            )
        else:
            available = "predict, predict_proba" if probabilities is not None else "predict"
            raise PayloadError(f"unknown output {name!r}; this model answers {available}")
    return outputs
