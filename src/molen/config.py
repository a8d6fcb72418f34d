"""Settings, resolved in one place: flag > environment variable > ``molen.yaml`` > default.

Every setting has a dotted key (``tracking.uri``) and an environment variable derived from it
(``MOLEN_TRACKING_URI``). :func:`load_settings` resolves all of them and remembers where each
value came from, which ``molen config show`` prints.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from molen.errors import InvalidValueError, ProjectNotFoundError, UsageError
from molen.project import CONFIG_NAME, Project, find_project

__all__ = ["SETTINGS", "Setting", "Settings", "env_name", "load_settings"]


def env_name(key: str) -> str:
    """The environment variable of a setting: ``tracking.uri`` -> ``MOLEN_TRACKING_URI``."""
    return "MOLEN_" + key.replace(".", "_").upper()


def mask_password(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages and ``molen config show``."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _parse_positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(f"expected a positive number, got {text!r}")
    return value


def _parse_memory(text: str) -> str:
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(MB|GB|MiB|GiB)\s*", str(text))
    if not found or float(found.group(1)) <= 0:
        raise ValueError(
            f"{text!r} is not an amount of memory; use a number and MB or GB, as in 512MB or 2GB"
        )
    return f"{found.group(1)}{found.group(2)}"


def _parse_choice(text: str, choices: tuple[str, ...]) -> str:
    value = text.strip().lower()
    if value not in choices:
        raise ValueError(f"expected one of {', '.join(choices)}")
    return value


class Setting(NamedTuple):
    """One configurable value: its key, default, parser and help text."""

    key: str
    help: str
    default: Callable[[Project | None], Any]
    parse: Callable[[str], Any] = str

    @property
    def env(self) -> str:
        return env_name(self.key)


def _default_tracking_uri(project: Project | None) -> str | None:
    if project is None:
        return None
    return f"sqlite:///{project.state_dir / 'molen.db'}"


def _default_objects_url(project: Project | None) -> str | None:
    if project is None:
        return None
    return str(project.state_dir / "cache")


def _default_prediction_log(project: Project | None) -> str | None:
    if project is None:
        return None
    return str(project.state_dir / "log")


def _default_experiment(project: Project | None) -> str:
    return "Default"


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "tracking.uri",
        "metadata store URL: sqlite:///path or postgresql+psycopg://user@host/db",
        _default_tracking_uri,
    ),
    Setting("tracking.experiment", "experiment for runs that name none", _default_experiment),
    Setting(
        "tracking.flush_interval",
        "seconds between background flushes of buffered metrics",
        lambda _: 2.0,
        _parse_positive_float,
    ),
    Setting(
        "tracking.heartbeat_interval",
        "seconds between heartbeats of a running run (a run silent for 4x this is KILLED)",
        lambda _: 30.0,
        _parse_positive_float,
    ),
    Setting(
        "tracking.capture_packages",
        "store a snapshot of installed packages with every run",
        lambda _: True,
        _parse_bool,
    ),
    Setting(
        "objects.url",
        "object store: a folder or an fsspec URL such as s3://bucket/prefix",
        _default_objects_url,
    ),
    Setting(
        "objects.s3_endpoint_url",
        "endpoint of an S3-compatible server (MinIO, Ceph); empty for AWS",
        lambda _: None,
    ),
    Setting(
        "data.link",
        "how checkout puts data in the workspace: reflink, hardlink, symlink, copy (first that works)",
        lambda _: "reflink,copy",
    ),
    Setting("data.remote", "the remote push/pull/fetch use when none is named", lambda _: None),
    Setting(
        "data.jobs",
        "parallel transfers and hashing workers",
        lambda _: 16,
        lambda text: int(_parse_positive_float(text)),
    ),
    Setting(
        "data.lock_timeout",
        "seconds to wait for another molen process working on the same project's data",
        lambda _: 30.0,
        _parse_positive_float,
    ),
    Setting(
        "models.sklearn_format",
        "how scikit-learn models are saved: pickle (fast to load; trusted stores only) "
        "or skops (runs no code on load)",
        lambda _: "pickle",
        lambda text: _parse_choice(text, ("pickle", "skops")),
    ),
    Setting(
        "models.importance",
        "compute global feature importance (mean |SHAP| on the reference sample) when a model is logged",
        lambda _: True,
        _parse_bool,
    ),
    Setting(
        "models.extra_columns",
        "model input columns the signature lacks: ignore (drop them) or refuse",
        lambda _: "ignore",
        lambda text: _parse_choice(text, ("ignore", "refuse")),
    ),
    Setting(
        "monitor.memory_limit",
        "memory DuckDB may use for one monitoring report (it spills to disk beyond): 512MB, 2GB, …",
        lambda _: "512MB",
        _parse_memory,
    ),
    Setting(
        "serving.prediction_log",
        "where molen serve logs predictions and feedback: a folder or an fsspec URL (s3://…)",
        _default_prediction_log,
    ),
    Setting(
        "objects.verify",
        "check each object's hash when it is read",
        lambda _: True,
        _parse_bool,
    ),
)

_BY_KEY = {setting.key: setting for setting in SETTINGS}


class Resolved(NamedTuple):
    """A setting's effective value and the source it came from."""

    value: Any
    source: str


class Settings(Mapping[str, Any]):
    """The effective settings of one invocation; a read-only mapping of key to value."""

    def __init__(self, project: Project | None, resolved: dict[str, Resolved]) -> None:
        self.project = project
        self._resolved = resolved

    def __getitem__(self, key: str) -> Any:
        return self._resolved[key].value

    def __iter__(self) -> Iterator[str]:
        return iter(self._resolved)

    def __len__(self) -> int:
        return len(self._resolved)

    def source(self, key: str) -> str:
        """Where ``key``'s value came from: flag, env MOLEN_…, molen.yaml or default."""
        return self._resolved[key].source

    def rows(self) -> list[tuple[str, Any, str]]:
        """(key, value, source) for every setting, in declaration order."""
        return [(key, item.value, item.source) for key, item in self._resolved.items()]


_file_cache: dict[Path, tuple[str, dict[str, Any]]] = {}


def project_config(project: Project) -> dict[str, Any]:
    """The project's ``molen.yaml`` as plain data (cached; do not modify it)."""
    return _read_config_file(project)


def _read_config_file(project: Project) -> dict[str, Any]:
    """``molen.yaml`` parsed; parsed again only when its content changes.

    The parsed form is also kept as JSON in ``.molen/settings.json``, keyed by the hash of the
    file's bytes, so most commands answer without importing a YAML parser (a tenth of the
    start-up of a quick command). Keyed by content, not by mtime: an edit within the file
    system's time resolution cannot be missed.
    """
    path = project.config_path
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return {}
    from molen.hashing import hash_bytes

    signature = hash_bytes(text)
    cached = _file_cache.get(path)
    if cached is not None and cached[0] == signature:
        return cached[1]
    persisted = project.state_dir / "settings.json"
    data = _read_persisted(persisted, signature)
    if data is None:
        data = _parse_config_text(text.decode("utf-8", "replace"), path)
        _persist(persisted, signature, data)
    _file_cache[path] = (signature, data)
    return data


def _read_persisted(path: Path, signature: str) -> dict[str, Any] | None:
    import json

    try:
        document = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or document.get("content") != signature:
        return None
    data = document.get("data")
    return data if isinstance(data, dict) else None


def _persist(path: Path, signature: str, data: dict[str, Any]) -> None:
    import json

    from molen.atomic import write_atomic

    try:
        text = json.dumps({"content": signature, "data": data})
    except (TypeError, ValueError):  # YAML values JSON cannot hold (dates…): parse each time
        return
    if json.loads(text)["data"] != data:  # e.g. numeric keys would come back as strings
        return
    with contextlib.suppress(OSError):  # a read-only project: parse each time
        if path.parent.is_dir():
            write_atomic(path, text.encode())


def _parse_config_text(text: str, path: Path) -> dict[str, Any]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(text, Loader=loader) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise UsageError(f"{where}: {CONFIG_NAME} is not valid YAML; fix the file") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: {CONFIG_NAME} must be a mapping of sections to settings")
    return data


def _lookup(data: Mapping[str, Any], key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _parse(setting: Setting, raw: Any, where: str) -> Any:
    if raw is None:
        return None
    if setting.parse is not str and not isinstance(raw, str):
        raw = str(raw).lower() if isinstance(raw, bool) else str(raw)
    try:
        return setting.parse(raw if isinstance(raw, str) else str(raw))
    except ValueError as exc:
        raise InvalidValueError(f"setting {setting.key} from {where}: {exc}") from None


def _absolutise(key: str, value: Any, project: Project | None) -> Any:
    """Relative paths in molen.yaml are relative to the project root, not the current folder."""
    if project is None or not isinstance(value, str):
        return value
    if key == "tracking.uri" and value.startswith("sqlite:///") and not value.startswith("sqlite:////"):
        relative = value[len("sqlite:///") :]
        if relative and relative != ":memory:":
            return f"sqlite:///{project.root / relative}"
    if key in {"objects.url", "serving.prediction_log"} and "://" not in value:
        value = os.path.expanduser(value)
        return value if os.path.isabs(value) else str(project.root / value)
    return value


def load_settings(
    start: Path | str | None = None,
    *,
    flags: Mapping[str, Any] | None = None,
    require_project: bool = True,
) -> Settings:
    """Resolve every setting for the project at or above ``start``.

    ``flags`` holds values given on the command line (highest precedence); ``None`` values are
    ignored. Without a project, settings come from flags, the environment and defaults; if
    ``require_project`` is true and no project is found, :class:`ProjectNotFoundError` is raised
    unless ``MOLEN_TRACKING_URI`` or the ``--tracking-uri`` flag names a store explicitly.
    """
    try:
        project: Project | None = find_project(start)
    except ProjectNotFoundError:
        named = os.environ.get(env_name("tracking.uri")) or (flags or {}).get("tracking.uri")
        if require_project and not named:
            raise
        project = None
    file_data = _read_config_file(project) if project is not None else {}
    flags = {key: value for key, value in (flags or {}).items() if value is not None}
    unknown = set(flags) - set(_BY_KEY)
    if unknown:
        raise UsageError(f"unknown setting {sorted(unknown)[0]!r}; see `molen config show`")

    resolved: dict[str, Resolved] = {}
    for setting in SETTINGS:
        if setting.key in flags:
            value = _parse(setting, flags[setting.key], "a flag")
            resolved[setting.key] = Resolved(value, "flag")
        elif os.environ.get(setting.env):  # empty counts as unset: CI passes unset secrets so
            value = _parse(setting, os.environ[setting.env], setting.env)
            resolved[setting.key] = Resolved(value, f"env {setting.env}")
        elif (raw := _lookup(file_data, setting.key)) is not None:
            value = _parse(setting, raw, CONFIG_NAME)
            resolved[setting.key] = Resolved(_absolutise(setting.key, value, project), CONFIG_NAME)
        else:
            resolved[setting.key] = Resolved(setting.default(project), "default")
    return Settings(project, resolved)
