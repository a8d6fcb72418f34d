"""molen's records as JSON and back, driven by the type hints of the store's methods.

The tracking server and its client (:mod:`molen.stores.metadata.http`) speak the metadata
store's own interface: each call's keyword arguments and its result travel as JSON, and this
module turns them into the exact Python types the store takes and returns (dataclasses,
named tuples, lists, tuples, dicts, optional values), so both ends see the same records.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Sequence
from typing import Any

__all__ = ["decode", "encode", "method_hints"]


def encode(value: Any) -> Any:
    """A JSON-ready form of ``value``."""
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": repr(value)}  # JSON has no NaN or infinity
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        found = {field.name: encode(getattr(value, field.name)) for field in dataclasses.fields(value)}
        return {"__type__": type(value).__name__, **found}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return {
            "__type__": type(value).__name__,
            **{name: encode(getattr(value, name)) for name in value._fields},
        }
    if isinstance(value, dict):
        return {str(key): encode(item) for key, item in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted(encode(item) for item in value)
    if isinstance(value, (list, tuple)):
        return [encode(item) for item in value]
    raise TypeError(f"cannot encode {type(value).__name__}")


@functools.lru_cache(maxsize=256)
def _hints(kind: type) -> dict[str, Any]:
    import sys

    return typing.get_type_hints(kind, vars(sys.modules[kind.__module__]) | vars(typing))


def decode(hint: Any, data: Any) -> Any:
    """``data`` (parsed JSON) as a value of the type ``hint``."""
    if isinstance(data, dict) and "__float__" in data:
        return float(data["__float__"])
    if hint is Any or hint is None:
        return data
    origin = typing.get_origin(hint)
    arguments = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if data is None:
            return None
        chosen = [argument for argument in arguments if argument is not type(None)]
        if len(chosen) == 1:
            return decode(chosen[0], data)
        if isinstance(data, dict) and "__type__" in data:  # a record: the one of that name
            named = [
                argument for argument in chosen if getattr(argument, "__name__", None) == data["__type__"]
            ]
            return decode(named[0], data) if named else data
        if isinstance(data, list):  # a sequence: the tuple or list member of the union
            sequences = [a for a in chosen if typing.get_origin(a) in (tuple, list, Sequence)]
            return decode(sequences[0], data) if sequences else data
        return data
    if data is None:
        return None
    if origin in (list, Sequence) or hint in (list, Sequence):
        inner = arguments[0] if arguments else Any
        return [decode(inner, item) for item in data]
    if origin is tuple:
        if len(arguments) == 2 and arguments[1] is Ellipsis:
            return tuple(decode(arguments[0], item) for item in data)
        return tuple(decode(argument, item) for argument, item in zip(arguments, data, strict=True))
    if origin in (set, frozenset):
        return {decode(arguments[0], item) for item in data}
    if origin is dict:
        return {key: decode(arguments[1], item) for key, item in data.items()}
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        hints = _hints(hint)
        return hint(**{name: decode(hints[name], item) for name, item in data.items() if name in hints})
    if isinstance(hint, type) and issubclass(hint, tuple) and hasattr(hint, "_fields"):
        hints = _hints(hint)
        return hint(**{name: decode(hints[name], item) for name, item in data.items() if name in hints})
    if hint is float and isinstance(data, (int, float)):
        return float(data)
    return data


def method_hints(method: Any) -> dict[str, Any]:
    """The resolved type hints of a store method (its parameters and ``return``)."""
    import molen.entities

    module = __import__(method.__module__, fromlist=["_"])
    return typing.get_type_hints(method, vars(molen.entities) | vars(module) | vars(typing))
