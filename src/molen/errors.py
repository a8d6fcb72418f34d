"""The one exception tree of molen.

Every error a user can see is a :class:`MolenError` carrying the sentence they read: what was
wrong, where, and how to fix it. Interfaces map the tree once: the CLI to an exit code
(:attr:`MolenError.exit_code`), the REST server to an HTTP status (:attr:`MolenError.http_status`).
Third-party errors (SQLAlchemy, botocore, OS errors) are translated at the store boundary.

    MolenError
    ├── UsageError                 bad input from the user (exit 2, HTTP 400)
    │   ├── InvalidNameError        a name or key that molen cannot store
    │   ├── InvalidValueError       a value that is out of range or the wrong type
    │   │   └── InputSchemaError    model input that does not match the signature (HTTP 422)
    │   └── FilterSyntaxError       the run filter language, with the column of the mistake
    ├── NotFoundError              a project, run, experiment or object is missing (exit 3, 404)
    │   └── ProjectNotFoundError
    ├── ConflictError              the request contradicts what is stored (exit 4, 409)
    │   └── AmbiguousIdError        a run id prefix that matches several runs
    ├── StoreError                 a store cannot be used (exit 5, HTTP 503)
    │   ├── StoreUnavailableError   a server that cannot be reached (PostgreSQL, S3)
    │   ├── SchemaVersionError      a database written by a newer molen
    │   └── CorruptObjectError      stored bytes that no longer match their hash
    └── MissingDependencyError     an optional extra that is not installed (exit 6)
"""

from __future__ import annotations

__all__ = [
    "AmbiguousIdError",
    "ConflictError",
    "CorruptObjectError",
    "FilterSyntaxError",
    "InputSchemaError",
    "InvalidNameError",
    "InvalidValueError",
    "MissingDependencyError",
    "MolenError",
    "NotFoundError",
    "ProjectNotFoundError",
    "SchemaVersionError",
    "StoreError",
    "StoreUnavailableError",
    "UsageError",
]


class MolenError(Exception):
    """Root of every error molen raises on purpose; ``str(error)`` is the user's one line."""

    exit_code = 1
    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(MolenError):
    """The user asked for something that cannot be done as asked."""

    exit_code = 2
    http_status = 400


class InvalidNameError(UsageError):
    """A name, key or identifier molen refuses to store."""


class InvalidValueError(UsageError):
    """A value of the wrong type, out of range, or too long."""


class InputSchemaError(InvalidValueError):
    """Model input that does not match the model's signature; ``column`` names the culprit."""

    http_status = 422

    def __init__(self, message: str, *, column: str | None = None) -> None:
        super().__init__(message)
        self.column = column


class FilterSyntaxError(UsageError):
    """A run filter or sort expression that does not parse; ``column`` is 1-based."""

    def __init__(self, message: str, *, text: str, column: int) -> None:
        pointer = " " * (column - 1) + "^"
        super().__init__(f"{message} at column {column}\n  {text}\n  {pointer}")
        self.text = text
        self.column = column


class NotFoundError(MolenError):
    """Something the user named does not exist."""

    exit_code = 3
    http_status = 404


class ProjectNotFoundError(NotFoundError):
    """No ``molen.yaml`` in the current folder or any parent."""


class ConflictError(MolenError):
    """The request contradicts what is already stored."""

    exit_code = 4
    http_status = 409


class AmbiguousIdError(ConflictError):
    """A run id prefix that matches more than one run."""


class StoreError(MolenError):
    """A metadata or object store cannot be used."""

    exit_code = 5
    http_status = 503


class StoreUnavailableError(StoreError):
    """A store server (PostgreSQL, S3) cannot be reached."""


class SchemaVersionError(StoreError):
    """The database was written by a newer molen than the one running."""


class CorruptObjectError(StoreError):
    """An object whose bytes no longer match the hash it is stored under."""


class MissingDependencyError(MolenError):
    """An optional dependency is missing; the message names the extra to install."""

    exit_code = 6
    http_status = 500
