"""What molen accepts as names and values, and the one-line errors for what it refuses.

Decisions (documented in the README):
- keys (params, metrics, tags, artifact paths): 1-250 characters of letters, digits and
  ``_ - . / : space``; no leading ``/`` and no ``..`` segment;
- param and tag values: text up to 8,000 characters (longer values are refused, never cut);
- metric values: any real number. NaN and ±infinity are stored faithfully and read back as
  such (a diverged loss is information); strings and other objects are refused.
"""

from __future__ import annotations

import numbers
import re
from typing import Any

from molen.errors import InvalidNameError, InvalidValueError

__all__ = [
    "MAX_KEY",
    "MAX_VALUE",
    "check_key",
    "check_metric_value",
    "check_name",
    "check_step",
    "check_text_value",
]

MAX_KEY = 250
MAX_VALUE = 8000
_KEY = re.compile(r"[A-Za-z0-9_\-./: ]+")
_valid_keys: set[str] = set()
_INT64 = 2**63


def check_key(key: Any, what: str) -> str:
    """Return ``key`` if it is a valid name for a ``what`` (param, metric, tag), else raise."""
    if key in _valid_keys:
        return key  # type: ignore[no-any-return]
    if not isinstance(key, str):
        raise InvalidNameError(f"{what} name {key!r} must be a string")
    if not key or len(key) > MAX_KEY:
        raise InvalidNameError(f"{what} name {key[:40]!r}… must have 1 to {MAX_KEY} characters")
    if not _KEY.fullmatch(key) or key.startswith("/") or ".." in key.split("/"):
        raise InvalidNameError(
            f"invalid {what} name {key!r}: use letters, digits, spaces and _ - . / : "
            "(no leading / and no '..' part)"
        )
    if len(_valid_keys) < 100_000:
        _valid_keys.add(key)
    return key


def check_name(name: Any, what: str) -> str:
    """Validate a display name (experiment, run): 1-250 printable characters."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidNameError(f"{what} name must be a non-empty string, got {name!r}")
    if len(name) > MAX_KEY:
        raise InvalidNameError(f"{what} name is {len(name)} characters long; at most {MAX_KEY}")
    if any(ord(char) < 32 for char in name):
        raise InvalidNameError(f"{what} name {name!r} contains control characters")
    return name


def check_text_value(key: str, value: Any, what: str) -> str:
    """Turn a param or tag value into text, refusing values over :data:`MAX_VALUE` characters."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > MAX_VALUE:
        raise InvalidValueError(
            f"{what} {key!r} is {len(text)} characters long; at most {MAX_VALUE} are stored "
            "(log long text with log_artifact or log_dict instead)"
        )
    return text


def check_metric_value(key: str, value: Any) -> float:
    """A metric value as a float; NaN and infinities pass, non-numbers are refused."""
    if type(value) is float:
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if hasattr(value, "item") and hasattr(value, "dtype"):  # a NumPy or torch scalar
        try:
            return check_metric_value(key, value.item())
        except (TypeError, ValueError):
            pass
    raise InvalidValueError(f"metric {key!r} must be a number, got {type(value).__name__} {value!r:.40}")


def check_step(key: str, step: Any) -> int:
    """A metric step as an int within 64 bits."""
    if type(step) is int and -_INT64 <= step < _INT64:
        return step
    if isinstance(step, numbers.Integral) and not isinstance(step, bool) and -_INT64 <= int(step) < _INT64:
        return int(step)
    raise InvalidValueError(f"step of metric {key!r} must be a whole number, got {step!r}")
